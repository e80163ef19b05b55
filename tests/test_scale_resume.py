"""Scale and faults (issue 5): DDP from the CLI and under -m, exact auto-resume, resume errors, preemption.

The training tests are `slow`: DDP runs 2 gloo processes on CPU; the Slurm test submits a real job to
the single-node Slurm that .ci/slurm-setup.sh starts and requeues it while it runs.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from nin_lightning.config import validate
from nin_lightning.errors import UserError
from tests.conftest import ROOT, cli_env, error_lines, history_epochs, read_metrics, train_cmd, wait_for
from tests.wandb_records import offline_runs

QUIET = ["trainer.enable_progress_bar=false"]
EXACT = ["logger=none", "trainer.deterministic=true", "scheduler=multistep", "scheduler.milestones=[1]", *QUIET]
CPU_ONLY = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")


def load_ckpt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def run_config(run_dir: Path):
    """The typed config of a finished run, recomposed from its .hydra/overrides.yaml."""
    from hydra import compose, initialize_config_dir

    overrides = [str(o) for o in OmegaConf.load(run_dir / ".hydra" / "overrides.yaml")]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def single_process_test_acc(run_dir: Path, checkpoint: str = "best.ckpt") -> tuple[float, int]:
    """Test accuracy of RUN_DIR/checkpoints/CHECKPOINT on the whole test set, in this one process."""
    import lightning as L

    from nin_lightning import speed
    from nin_lightning.data import build_datamodule
    from nin_lightning.run import build_model

    conf = validate(run_config(run_dir))
    plan = speed.resolve(conf)  # the `auto` speed switches, resolved the way the run did
    model = build_model(conf, plan)
    datamodule = build_datamodule(conf.dataset)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False,
                        precision=plan.precision)  # as resolved for the run (bf16-mixed on this CPU)
    results = trainer.test(model, datamodule=datamodule, ckpt_path=str(run_dir / "checkpoints" / checkpoint),
                           verbose=False)
    return results[0]["test/acc"], len(datamodule.test_split)


# ----------------------------------------------------------------------------------------------- fast
@CPU_ONLY
@pytest.mark.parametrize(("trainer", "fix"), [("ddp", "trainer=ddp_cpu")])  # trainer=gpu: test_bad_input.py
def test_gpu_trainers_fail_fast_without_a_gpu(run_cli, tmp_path, trainer, fix):
    result = run_cli(f"trainer={trainer}", "logger=none", f"hydra.run.dir={tmp_path / 'run'}", timeout=120)
    assert result.returncode != 0
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert f"trainer={trainer}" in lines[0] and fix in lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_sync_batchnorm_on_cpu_is_refused(compose_cfg):
    from nin_lightning.cluster.limits import check_devices
    from nin_lightning.config import JobContext

    with pytest.raises(UserError, match="sync_batchnorm=false"):
        check_devices(validate(compose_cfg("trainer=ddp_cpu", "trainer.sync_batchnorm=true")), JobContext())


@pytest.mark.parametrize("scale", [False, True])
def test_lr_scales_linearly_with_world_size(compose_cfg, scale):
    from nin_lightning import speed
    from nin_lightning.run import build_model

    conf = validate(compose_cfg("trainer=ddp_cpu", "scheduler=constant", "optimizer.lr=0.05",
                                f"optimizer.scale_lr_with_world_size={str(scale).lower()}"))
    model = build_model(conf, speed.resolve(conf))
    model._trainer = SimpleNamespace(world_size=4, max_epochs=2, estimated_stepping_batches=20)
    out = model.configure_optimizers()
    optimizer = out["optimizer"] if isinstance(out, dict) else out
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05 * (4 if scale else 1))


def test_slurm_tasks_decide_the_cluster_environment(compose_cfg, monkeypatch):
    from lightning.pytorch.plugins.environments import LightningEnvironment, SLURMEnvironment

    from nin_lightning.cluster.slurm import cluster_plugins

    for key in [k for k in os.environ if k.startswith(("SLURM_", "RANK", "GROUP_RANK", "LOCAL_"))]:
        monkeypatch.delenv(key)
    ddp = validate(compose_cfg("trainer=ddp_cpu"))
    assert cluster_plugins(ddp) == []  # not on Slurm: Lightning's default
    monkeypatch.setenv("SLURM_JOB_NAME", "train")
    monkeypatch.setenv("SLURM_NTASKS", "2")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "2")
    [env] = cluster_plugins(ddp)  # one task per device: Slurm made the ranks; never Lightning's requeue
    assert isinstance(env, SLURMEnvironment) and env.auto_requeue is False
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "1")
    [env] = cluster_plugins(ddp)  # one task for 2 devices: Lightning starts the local ranks itself
    assert type(env) is LightningEnvironment
    monkeypatch.setenv("SLURM_NTASKS", "3")
    with pytest.raises(UserError, match="--ntasks-per-node=2"):
        cluster_plugins(ddp)


def test_changed_keys_names_what_changed():
    from nin_lightning.rundir import changed_keys

    saved = {"model": {"dropout": 0.5, "width": 1.0}, "dataset": {"batch_size": 64, "root": "data", "gone": 1}}
    now = {"model": {"dropout": 0.3, "width": 1.0, "new": 2}, "dataset": {"batch_size": 64, "root": "/scratch"}}
    assert changed_keys(saved, now) == ["model.dropout (0.5 -> 0.3)"]  # root may move; new/removed keys skipped


def test_rng_state_roundtrip():
    import random

    import numpy as np

    from nin_lightning.callbacks import RNGState

    state = RNGState().state_dict()
    first = (torch.rand(3), np.random.rand(), random.random())
    RNGState().load_state_dict(state)
    again = (torch.rand(3), np.random.rand(), random.random())
    assert torch.equal(first[0], again[0]) and first[1:] == again[1:]


# ----------------------------------------------------------------------------------------------- DDP
@pytest.mark.slow
def test_a_ddp_rank_0_that_cannot_start_leaves_no_rank_behind(tmp_path):
    """Rank 0 cannot listen on MASTER_PORT (another process holds it; under load this happened to the port
    Lightning picked): the run fails in one line naming it, and the rank Lightning started for it, which
    waited forever for a rank 0 that was gone, is stopped. Nothing waits past a deadline that names it."""
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()  # a foreign server on the port: rank 1 connects to it and waits
        env = cli_env(tmp_path) | {"MASTER_PORT": str(holder.getsockname()[1])}
        run_dir = tmp_path / "run"
        proc = subprocess.Popen(train_cmd("trainer=ddp_cpu", "trainer.devices=2", "logger=none", *QUIET,
                                          f"hydra.run.dir={run_dir}"), cwd=tmp_path, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            _, stderr = proc.communicate(timeout=300)  # all ranks gone: the pipes close
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            pytest.fail("the run or a rank it started was still alive 300 s after it began (a rank left waiting)")
    errors = [ln for ln in error_lines(stderr) if ln.startswith("error:")]
    assert proc.returncode != 0 and len(errors) == 1 and "address already in use" in errors[0], stderr[-3000:]
    assert read_metrics(run_dir)["status"] == "failed"


@pytest.mark.slow
def test_ddp_from_the_cli_one_dir_one_wandb_run_full_test_set(run_cli, tmp_path):
    """`trainer=ddp_cpu trainer.devices=2`: Lightning re-executes the command for rank 1 in rank 0's dir."""
    result = run_cli("trainer=ddp_cpu", "trainer.devices=2", "trainer.max_epochs=1", "scheduler=constant",
                     "optimizer.scale_lr_with_world_size=true", *QUIET, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = list((tmp_path / "outputs" / "runs").iterdir())
    assert len(runs) == 1, runs  # exactly one output dir
    run_dir = runs[0]
    assert not (tmp_path / "outputs" / "sweeps").exists() and not (tmp_path / "multirun").exists()
    assert [p.name for p in run_dir.rglob("metrics.json")] == ["metrics.json"]
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "completed" and metrics["epochs"] == 1
    # exactly one W&B run (rank 0), finished, and no second run of rank 1 anywhere
    wandb_runs = offline_runs(run_dir)
    assert len(wandb_runs) == 1 and wandb_runs[0].exit_code == 0
    assert len(list(tmp_path.rglob("offline-run-*"))) == 1 and result.stdout.count("W&B offline run in") == 1
    # a distinct shard per rank: each rank takes half the batches of a 1-process epoch
    conf = validate(run_config(run_dir))
    from nin_lightning.data import build_datamodule

    datamodule = build_datamodule(conf.dataset)
    datamodule.setup("fit")
    per_rank = math.ceil(len(datamodule.train_split) / 2)
    assert metrics["global_step"] == math.ceil(per_rank / conf.dataset.batch_size)
    # optimizer.scale_lr_with_world_size: lr x 2
    with (run_dir / "history.csv").open() as fh:
        assert [float(r["lr"]) for r in csv.DictReader(fh)] == pytest.approx([2 * conf.optimizer.lr])
    # test/acc is the whole test set's accuracy (torchmetrics syncs), not rank 0's half
    acc, n = single_process_test_acc(run_dir)
    assert metrics["test/acc"] == pytest.approx(acc, abs=0.5 / n), (metrics["test/acc"], acc)


def _sweep(tmp_path: Path, *args: str, timeout: float = 900) -> tuple[subprocess.CompletedProcess[str], list[Path]]:
    env = cli_env(tmp_path)
    result = subprocess.run(train_cmd("-m", "trainer=ddp_cpu", "trainer.devices=2", "logger=none", *QUIET,
                                      "trainer.max_epochs=1", "trainer.limit_train_batches=4",
                                      "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", *args),
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)
    sweeps = list((tmp_path / "outputs" / "sweeps").iterdir()) if (tmp_path / "outputs" / "sweeps").exists() else []
    jobs = sorted(p for s in sweeps for p in s.iterdir() if p.is_dir() and not p.name.startswith("."))
    return result, jobs


def _check_ddp_jobs(result: subprocess.CompletedProcess[str], jobs: list[Path], n: int) -> None:
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert len(jobs) == n, jobs  # no nested sweep from a rank re-running the command line
    for job in jobs:
        metrics = read_metrics(job)
        assert metrics["status"] == "completed" and metrics["global_step"] == 4, (job, metrics)
        assert (job / "train_ddp_process_1.log").exists()  # rank 1 ran as a single run in the job's dir
        assert [p.name for p in job.rglob("metrics.json")] == ["metrics.json"]


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["basic", "local"])
def test_ddp_under_multirun(tmp_path, launcher):
    """Under -m, each job starts its own ranks as single runs of that job (not the sweep's command line)."""
    args = ["seed=1,2"] if launcher == "basic" else ["hydra/launcher=local", "hydra.launcher.n_jobs=1", "seed=1"]
    result, jobs = _sweep(tmp_path, *args)
    _check_ddp_jobs(result, jobs, 2 if launcher == "basic" else 1)
    assert not (tmp_path / "outputs" / "runs").exists()


# ----------------------------------------------------------------------------------------------- resume
@pytest.fixture(scope="module")
def straight_and_first_epoch(tmp_path_factory) -> tuple[Path, Path]:
    """(A) 2 epochs straight and (B) 1 epoch, run side by side; B is a finished 1-epoch run."""
    tmp = tmp_path_factory.mktemp("resume")
    env = cli_env(tmp)
    a, b = tmp / "straight", tmp / "resumed"
    procs = [subprocess.Popen(train_cmd(*EXACT, f"trainer.max_epochs={n}", f"hydra.run.dir={d}"), cwd=tmp, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for n, d in ((2, a), (1, b))]
    for p in procs:
        _, err = p.communicate(timeout=900)
        assert p.returncode == 0, err[-3000:]
    return a, b


def _copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.mark.slow
def test_resume_is_bitwise_exact(straight_and_first_epoch, tmp_path):
    """2 epochs straight == 1 epoch + `resume=auto trainer.max_epochs=2`, bit for bit (weights, BN buffers,
    optimizer momentum); without the RNG states in the checkpoint it is not."""
    straight, first = straight_and_first_epoch
    resumed = _copy_run(first, tmp_path / "resumed")
    no_rng = _copy_run(first, tmp_path / "no_rng")
    ckpt = load_ckpt(no_rng / "checkpoints" / "last.ckpt")
    assert set(ckpt["callbacks"]["RNGState"]) >= {"torch", "numpy", "python"}
    torch.load(no_rng / "checkpoints" / "last.ckpt", weights_only=True)  # plain tensors and types only
    del ckpt["callbacks"]["RNGState"]  # the control: what Lightning alone would restore
    torch.save(ckpt, no_rng / "checkpoints" / "last.ckpt")
    env = cli_env(tmp_path)
    procs = [subprocess.Popen(train_cmd(*EXACT, "resume=auto", "trainer.max_epochs=2", f"hydra.run.dir={d}"),
                              cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for d in (resumed, no_rng)]
    for p in procs:
        _, err = p.communicate(timeout=900)
        assert p.returncode == 0, err[-3000:]

    a, b, c = (load_ckpt(d / "checkpoints" / "last.ckpt") for d in (straight, resumed, no_rng))
    assert a["epoch"] == b["epoch"] == 1 and a["global_step"] == b["global_step"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    unequal = [k for k in a["state_dict"] if not torch.equal(a["state_dict"][k], b["state_dict"][k])]
    assert unequal == [], f"resume is not bitwise exact: {unequal[:5]}"
    momenta_a = [s["momentum_buffer"] for s in a["optimizer_states"][0]["state"].values()]
    momenta_b = [s["momentum_buffer"] for s in b["optimizer_states"][0]["state"].values()]
    assert all(torch.equal(x, y) for x, y in zip(momenta_a, momenta_b, strict=True))
    assert a["lr_schedulers"] == b["lr_schedulers"]  # the milestone after epoch 0 was taken once
    assert any(not torch.equal(a["state_dict"][k], c["state_dict"][k]) for k in a["state_dict"])
    # the resumed run continued in its dir: metrics.json and history.csv show both epochs
    assert read_metrics(resumed)["epochs"] == 2 and history_epochs(resumed) == [1, 2]


@pytest.mark.slow
def test_resume_errors_and_a_finished_run(straight_and_first_epoch, run_cli, tmp_path):
    _, first = straight_and_first_epoch
    run_dir = _copy_run(first, tmp_path / "run")
    metrics_before = (run_dir / "metrics.json").read_bytes()
    ckpt_before = (run_dir / "checkpoints" / "last.ckpt").read_bytes()

    # a finished run: resuming it is a no-op with a message
    result = run_cli(*EXACT, "trainer.max_epochs=1", "resume=auto", f"hydra.run.dir={run_dir}", timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "already finished" in result.stdout and "nothing to do" in result.stdout
    assert (run_dir / "metrics.json").read_bytes() == metrics_before
    assert (run_dir / "checkpoints" / "last.ckpt").read_bytes() == ckpt_before

    # a changed model (or dataset) config: one line naming the changed keys, nothing touched
    result = run_cli(*EXACT, "trainer.max_epochs=2", "resume=auto", "model.dropout=0.3", "dataset.batch_size=32",
                     f"hydra.run.dir={run_dir}", timeout=300)
    assert result.returncode != 0
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and "model.dropout (0.5 -> 0.3)" in lines[0] and "dataset.batch_size" in lines[0], lines
    assert (run_dir / "metrics.json").read_bytes() == metrics_before
    assert "model.dropout" not in (run_dir / ".hydra" / "overrides.yaml").read_text()

    # ckpt_path pointing at nothing: one line, not a silent fresh start
    missing = tmp_path / "nowhere" / "last.ckpt"
    result = run_cli(*EXACT, f"ckpt_path={missing}", f"hydra.run.dir={tmp_path / 'fresh'}", timeout=300)
    assert result.returncode != 0
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and f"ckpt_path={missing}" in lines[0]
    assert not (tmp_path / "fresh" / "metrics.json").exists()

    # a run dir with a result but no last.ckpt to continue from: one line, nothing retrained
    no_last = _copy_run(first, tmp_path / "no_last")
    (no_last / "checkpoints" / "last.ckpt").unlink()
    result = run_cli(*EXACT, "trainer.max_epochs=2", "resume=auto", f"hydra.run.dir={no_last}", timeout=300)
    lines = error_lines(result.stderr)
    assert result.returncode != 0 and len(lines) == 1 and "no checkpoints/last.ckpt" in lines[0], lines
    assert (no_last / "metrics.json").read_bytes() == metrics_before


def _lr_by_epoch(run_dir: Path) -> dict[int, float]:
    with (run_dir / "history.csv").open() as fh:
        return {int(row["epoch"]): float(row["lr"]) for row in csv.DictReader(fh)}


@pytest.mark.slow
def test_extending_a_finished_run_follows_the_new_schedule_length(tmp_path):
    """A finished 2-epoch run + `resume=auto trainer.max_epochs=4`: step schedules are stretched to the new
    length (cosine would otherwise stay at its floor of 0, one-cycle step past its end), the earlier
    result is kept as metrics.previous.json, and a no-op resume leaves the run's .hydra/ files alone."""
    env = cli_env(tmp_path)
    base = ["model.width=0.25", "logger=none", "callbacks.history=true", *QUIET]
    runs = {name: tmp_path / name for name in ("cosine", "onecycle")}

    def run_all(*args: str) -> None:
        procs = [subprocess.Popen(train_cmd(*base, f"scheduler={name}", *args, f"hydra.run.dir={d}"), cwd=tmp_path,
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for name, d in runs.items()]
        for p in procs:
            out, err = p.communicate(timeout=600)
            assert p.returncode == 0, (out + err)[-3000:]

    run_all("trainer.max_epochs=2")
    hydra_files = {d: {f.name: f.read_bytes() for f in (d / ".hydra").iterdir()} for d in runs.values()}
    run_all("trainer.max_epochs=2", "resume=auto")  # finished: nothing to do, nothing rewritten
    assert all({f.name: f.read_bytes() for f in (d / ".hydra").iterdir()} == hydra_files[d] for d in runs.values())
    first = {d: read_metrics(d) for d in runs.values()}
    run_all("trainer.max_epochs=4", "resume=auto")
    for name, d in runs.items():
        lrs = _lr_by_epoch(d)
        assert sorted(lrs) == [1, 2, 3, 4], (name, lrs)  # history.csv's lr: the LR each epoch trained with
        assert lrs[3] > 0.1 * max(lrs[1], lrs[2]), f"{name}: epoch 3 of 4 trained at LR {lrs[3]}"
        assert lrs[4] < lrs[3]  # and the stretched schedule goes on down
        assert read_metrics(d)["status"] == "completed" and read_metrics(d)["epochs"] == 4
        previous = json.loads((d / "metrics.previous.json").read_text())
        assert previous == first[d] and previous["epochs"] == 2


# ----------------------------------------------------------------------------------------------- Slurm
def _slurm_usable() -> bool:
    if not shutil.which("sinfo"):
        return False
    out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=20).stdout
    return any(s.strip().rstrip("*~#") in ("idle", "mix") for s in out.split())


def _squeue_state(job: str) -> str:
    out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True, timeout=30)
    return out.stdout.strip()


# An epoch's metrics in W&B's rows, and their history.csv columns.
EPOCH_METRICS = {"train/loss": "train/loss", "train/acc": "train/acc", "val/loss": "val/loss",
                 "val/acc": "val/acc"}


def _one_wandb_run(run_dir: Path, segments: int) -> list:
    """One W&B run: every offline segment (one per start of the job) carries the id in wandb_run.json.

    A segment's file can be cut short when Slurm's SIGTERM also stops W&B's service process, so the id is
    read from the segment dirs' names too; the last segment is complete and finished with exit code 0.
    Returns the segments' records.
    """
    run_id = json.loads((run_dir / "wandb_run.json").read_text())["id"]
    dirs = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(dirs) == segments and all(d.name.endswith(f"-{run_id}") for d in dirs), dirs
    runs = offline_runs(run_dir)
    assert {r.run_id for r in runs if r.run_id} == {run_id}
    assert runs[-1].run_id == run_id and runs[-1].exit_code == 0
    return runs


def _history(run_dir: Path) -> dict[int, dict[str, str]]:
    with (run_dir / "history.csv").open() as fh:
        return {int(row["epoch"]): row for row in csv.DictReader(fh)}


def _wandb_rows_match_history(run_dir: Path, runs: list) -> None:
    """What a preempted run's W&B record holds, exactly:
    - every epoch it holds is whole (one row per epoch, callbacks.EpochHistory) and equals history.csv;
    - the resumed segment logs every epoch from where it resumed to the end;
    - before that, at most one epoch is missing: the one that ended after W&B's service had written its
      last row and before the SIGTERM stopped it (Slurm signals every process of the job, W&B's service
      too), i.e. the epoch just before the resumed one. history.csv and metrics.json hold every epoch."""
    from tests.wandb_records import epoch_metrics

    logged, last_segment = epoch_metrics(runs, tuple(EPOCH_METRICS)), epoch_metrics(runs[-1:], tuple(EPOCH_METRICS))
    history = _history(run_dir)
    resumed_at = min(last_segment)
    assert sorted(last_segment) == list(range(resumed_at, max(history) + 1)), sorted(last_segment)
    missing = set(range(1, resumed_at)) - set(logged)  # epochs count from 1
    assert missing <= {resumed_at - 1}, f"W&B lacks epochs {sorted(missing)}; resumed at {resumed_at}"
    for epoch, values_by_key in logged.items():
        for key, column in EPOCH_METRICS.items():
            values = values_by_key.get(key)
            assert values and values == pytest.approx([float(history[epoch][column])] * len(values)), (epoch, key)


def _wandb_holds(run_dir: Path, epochs: set[int]) -> bool:
    """Whether the W&B run's offline file holds a whole row for each of EPOCHS (what its service wrote)."""
    from tests.wandb_records import epoch_metrics

    logged = epoch_metrics(offline_runs(run_dir), tuple(EPOCH_METRICS))
    return all(set(logged.get(e, {})) == set(EPOCH_METRICS) for e in epochs)


@pytest.mark.slow
@pytest.mark.slurm
def test_scontrol_requeue_resumes_the_job_from_its_checkpoint(tmp_path):
    """A running sbatch job is requeued: SIGTERM -> last.ckpt; the restarted job resumes (no resume=auto
    in its command: SLURM_RESTART_COUNT) and finishes every epoch, in one run dir, with one W&B run."""
    import signal

    from tests.slurm_cluster import need_slurm

    need_slurm()  # skip without Slurm; fail in CI (CI=1)
    epochs = 20  # a digits epoch takes well under a second: the job must still be in fit when we stop it
    run_dir, log = tmp_path / "run", tmp_path / "slurm-%j.out"
    script = tmp_path / "job.sh"
    script.write_text("\n".join([
        "#!/bin/bash",
        "#SBATCH --partition=debug --nodes=1 --ntasks=1 --cpus-per-task=1 --requeue --open-mode=append",
        f"#SBATCH --output={log} --job-name=nin-requeue-test",
        'echo "[job] start, restart=${SLURM_RESTART_COUNT:-0}"',
        f"cd {tmp_path}",
        f"echo $$ > {tmp_path / 'job.pid'}",  # exec keeps the pid: the training process
        "exec " + " ".join(train_cmd(f"trainer.max_epochs={epochs}", *QUIET, f"hydra.run.dir={run_dir}")),
    ]) + "\n")
    env = cli_env(tmp_path)
    job = subprocess.run(["sbatch", "--parsable", str(script)], env=env, capture_output=True, text=True,
                         timeout=60, check=True).stdout.strip().split(";")[0]
    try:
        last = run_dir / "checkpoints" / "last.ckpt"
        wait_for(lambda: _squeue_state(job) == "RUNNING" and last.exists(), 600, "the job's first checkpoint")
        # Freeze training, so that the signal lands where we look (in fit) however late the requeue comes
        # under load, and W&B's service, which Slurm's SIGTERM kills as well, first writes all it got.
        # Signalled while stopped, training sees the SIGTERM first thing when the requeue's SIGCONT (sent
        # before its SIGTERM to every process of the job) wakes it.
        pid = int((tmp_path / "job.pid").read_text())
        os.kill(pid, signal.SIGSTOP)
        done = history_epochs(run_dir)
        assert len(done) < epochs - 1, f"the job was past epoch {len(done)} of {epochs} when it was requeued"
        # W&B's service writes its file every 2 s; the last epoch may still be on its way to the service
        wait_for(lambda: _wandb_holds(run_dir, set(done[:-1])), 120, f"W&B's file to hold epochs {done[:-1]}")
        os.kill(pid, signal.SIGTERM)
        subprocess.run(["scontrol", "requeue", job], check=True, timeout=60)
        wait_for(lambda: _squeue_state(job) == "", 900, "the requeued job to finish", poll_s=2.0)
    finally:
        subprocess.run(["scancel", job], capture_output=True, timeout=60)
    out = Path(str(log).replace("%j", job)).read_text()
    info = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True, timeout=30).stdout
    assert "JobState=COMPLETED" in info and "Restarts=1" in info, info + out[-3000:]
    assert "stopped by a signal" in out and "Slurm restart #1" in out, out[-3000:]

    metrics = read_metrics(run_dir)
    assert metrics["status"] == "completed" and metrics["epochs"] == epochs, metrics
    assert history_epochs(run_dir) == list(range(1, epochs + 1))
    assert load_ckpt(run_dir / "checkpoints" / "last.ckpt")["epoch"] == epochs - 1
    _wandb_rows_match_history(run_dir, _one_wandb_run(run_dir, segments=2))


@pytest.mark.slow
@pytest.mark.slurm
def test_submitit_signal_checkpoints_requeues_and_resumes_ddp_tasks(tmp_path):
    """hydra/launcher=slurm with trainer=ddp_cpu: one Slurm task per rank. submitit's time-out/preemption
    signal (USR2) stops both ranks after a batch, last.ckpt is saved, then submitit (the one owner of
    requeueing) requeues the job; it resumes in the same job dir and finishes every epoch."""
    from tests.slurm_cluster import need_slurm

    need_slurm()  # skip without Slurm; fail in CI (CI=1)
    epochs = 12  # enough that USR2, sent right after the first checkpoint, lands inside fit
    env = cli_env(tmp_path)
    launcher = subprocess.Popen(
        train_cmd("-m", "hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=20",
                  "trainer=ddp_cpu", f"trainer.max_epochs={epochs}", *QUIET, "seed=1"),
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sweeps = tmp_path / "outputs" / "sweeps"
    job = ""
    try:
        wait_for(lambda: any(sweeps.glob("*/*/checkpoints/last.ckpt")), 600, "the job's first checkpoint")
        job = next(sweeps.glob("*/.submitit/*/*_submitted.pkl")).name.split("_")[0]
        assert _squeue_state(job) == "RUNNING"
        subprocess.run(["scancel", "--signal=USR2", job], check=True, timeout=60)
        out, _ = launcher.communicate(timeout=900)
    finally:
        if launcher.poll() is None:
            launcher.kill()
        if job:
            subprocess.run(["scancel", job], capture_output=True, timeout=60)
    assert launcher.returncode == 0, out[-3000:]
    [job_dir] = [p for p in next(sweeps.iterdir()).iterdir() if p.is_dir() and not p.name.startswith(".")]
    logs = "".join(p.read_text() for p in (next(sweeps.iterdir()) / ".submitit" / job).glob("*_log.*"))
    assert "stopped by a signal" in logs and f"Requeued job {job}" in logs and "Slurm restart #1" in logs, logs[-3000:]
    metrics = read_metrics(job_dir)
    assert metrics["status"] == "completed" and metrics["epochs"] == epochs, metrics
    assert history_epochs(job_dir) == list(range(1, epochs + 1))
    _one_wandb_run(job_dir, segments=2)


def test_sigterm_stops_every_rank_at_the_same_batch_and_explains_wandb_errors(monkeypatch, tmp_path):
    """The SIGTERM handler only sets a flag (no collective inside a signal handler); every
    callbacks.check_every_n_steps steps the ranks' flags are reduced (with the non-finite-loss flag, in one
    all-reduce) and every rank raises Preempted; a W&B error after the signal is the preemption."""
    import signal

    from nin_lightning.callbacks import Preempted, PreemptionCheckpoint, preemption, stop_guards
    from nin_lightning.tracking import TolerantWandbLogger

    monkeypatch.setattr(preemption, "SIGNAL_GRACE_S", 0.0)
    reduced: list[list[float]] = []

    def any_rank(flags: torch.Tensor, reduce_op: str = "sum") -> torch.Tensor:  # the other rank's flags: `peer`
        assert reduce_op == "max"
        reduced.append(flags.tolist())
        return torch.maximum(flags, torch.tensor(peer))

    def failing_log(row):
        raise ConnectionResetError("Connection lost")

    callback = PreemptionCheckpoint(tmp_path / "last.ckpt")
    _, agreement = stop_guards(callback, every_n_steps=2)
    wandb = TolerantWandbLogger(excuse=callback.excuses, experiment=SimpleNamespace(id="run1", log=failing_log))
    trainer = SimpleNamespace(loggers=[wandb], strategy=SimpleNamespace(reduce=any_rank), world_size=2,
                              global_rank=0, current_epoch=0, global_step=1, is_last_batch=False)
    module = SimpleNamespace(device=torch.device("cpu"))
    previous = signal.getsignal(signal.SIGTERM)
    try:
        callback.on_train_start(trainer, module)
        peer = [0.0, 1.0]  # the other rank was signalled
        agreement.on_train_batch_end(trainer, module, None, None, 0)  # step 1: no read, training goes on
        assert reduced == []
        with pytest.raises(ConnectionResetError):  # no signal here: a W&B failure is an error
            wandb.log_metrics({"val/acc": 0.5}, step=1)
        assert not callback.explains(ConnectionResetError())
        trainer.global_step = 2  # a read: the other rank's signal stops this one too, at the same batch
        with pytest.raises(Preempted):
            agreement.on_train_batch_end(trainer, module, None, None, 1)
        assert reduced == [[0.0, 0.0]] and callback.signalled is False
        os.kill(os.getpid(), signal.SIGTERM)  # this rank's own signal: only the flag
        time.sleep(0.1)
        assert callback.signalled and len(reduced) == 1
        wandb.log_metrics({"val/acc": 0.5}, step=2)  # Slurm's SIGTERM stopped W&B's service: rows lost, no error
        assert callback.explains(ConnectionResetError())
        peer = [0.0, 0.0]
        trainer.global_step = 4
        with pytest.raises(Preempted):  # this rank's flag goes into the next read
            agreement.on_train_batch_end(trainer, module, None, None, 3)
        assert reduced[-1] == [0.0, 1.0]
        callback.teardown(trainer, None, "fit")
        assert signal.getsignal(signal.SIGTERM) is previous  # the handler is put back
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_dead_rank_ends_its_job_never_the_sweep_process(monkeypatch):
    """Under Hydra's basic launcher every job of a sweep runs in the sweep's process: a DDP rank that dies
    interrupts the job and, if it is stuck in a collective, the process group's timeout ends it; the process
    is never killed (it would take the rest of the sweep with it). A job with a process of its own (local or
    Slurm launcher) is still killed when it stays stuck."""
    import _thread
    import signal

    from lightning.pytorch.strategies import DDPStrategy

    from nin_lightning.cluster import local_ranks
    from nin_lightning.cluster.local_ranks import LocalRanks

    dead = SimpleNamespace(pid=4242, returncode=3, poll=lambda: 3, kill=lambda: None)
    kills, interrupts = [], []
    monkeypatch.setattr(local_ranks.os, "kill", lambda pid, sig: kills.append((pid, sig)))
    monkeypatch.setattr(_thread, "interrupt_main", lambda: interrupts.append(1))
    conf = SimpleNamespace(trainer=SimpleNamespace(strategy="ddp"))
    shared = LocalRanks(procs=[dead], own_process=False)
    shared._watch(grace_s=0.01)
    assert interrupts == [1] and kills == [] and "exited with code 3" in shared.failure
    assert isinstance(shared.strategy(conf), DDPStrategy)  # with the process group's timeout (not "ddp")
    own = LocalRanks(procs=[dead], own_process=True)
    own._watch(grace_s=0.01)
    assert kills == [(os.getpid(), signal.SIGKILL)] and own.strategy(conf) == "ddp"


def test_a_single_process_stops_at_the_batch_it_was_signalled_in_without_a_read(tmp_path):
    """One process: the signal flag is looked at after every step (a Python flag: no host sync)."""
    from nin_lightning.callbacks import Preempted, PreemptionCheckpoint, stop_guards

    callback = PreemptionCheckpoint(tmp_path / "last.ckpt")
    _, agreement = stop_guards(callback, every_n_steps=10)
    trainer = SimpleNamespace(world_size=1, current_epoch=0, global_step=3, is_last_batch=False,
                              strategy=SimpleNamespace(reduce=lambda *a, **k: pytest.fail("no collective")))
    module = SimpleNamespace(device=torch.device("cpu"))
    agreement.on_train_batch_end(trainer, module, None, None, 2)
    callback.signalled = True
    with pytest.raises(Preempted):
        agreement.on_train_batch_end(trainer, module, None, None, 3)
    trainer.is_last_batch = True  # signalled in an epoch's last batch: the epoch ends first, the next one stops
    agreement.on_train_batch_end(trainer, module, None, None, 4)
    with pytest.raises(Preempted):
        agreement.on_train_batch_start(trainer, module, None, 0)


@pytest.mark.slow
def test_a_signal_in_an_epochs_last_batch_loses_no_epoch(compose_cfg, tmp_path):
    """SIGTERM (or submitit's USR2) during the last batch of epoch 2 of 3, then `resume=auto`: history.csv
    holds epochs 1, 2, 3. Before, the run stopped at that batch and saved a checkpoint whose epoch had every
    batch but no end, so the resume skipped epoch 2's validation and record (CI: history [1, 3, 4, ...])."""
    from lightning.pytorch.callbacks import Callback

    from nin_lightning.callbacks import PreemptionCheckpoint
    from nin_lightning.config import JobContext
    from nin_lightning.run import train

    class SignalInLastBatch(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.current_epoch == 1 and batch_idx == trainer.num_training_batches - 1:
                next(c for c in trainer.callbacks if isinstance(c, PreemptionCheckpoint)).signalled = True

    run_dir = tmp_path / "run"
    common = ["experiment=quickstart", "model.width=0.25", "logger=none", *QUIET, "trainer.max_epochs=3"]
    with pytest.raises(SystemExit) as stopped:
        train(compose_cfg(*common), JobContext(run_dir=run_dir), callbacks=[SignalInLastBatch()])
    assert stopped.value.code == 143 and read_metrics(run_dir)["status"] == "preempted"
    assert history_epochs(run_dir) == [1, 2]  # epoch 2 ended (validated, recorded) before the stop
    train(compose_cfg(*common, "resume=auto"), JobContext(run_dir=run_dir))
    assert history_epochs(run_dir) == [1, 2, 3] and read_metrics(run_dir)["status"] == "completed"
