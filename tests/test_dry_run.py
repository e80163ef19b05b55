"""`hydra/launcher=dry`: a sweep's jobs, overrides and resources, listed without running or making anything."""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import ROOT, cli_env

LIST_WITHIN_S = 10.0  # the promise for sweep=width's 12 jobs (CPU seconds: a shared box stretches wall time)
HANG_S = 120


def dry(tmp: Path, *args: str, option: str = "dry") -> tuple[subprocess.CompletedProcess[str], float, float]:
    """Run `python train.py -m ARGS hydra/launcher=OPTION`; (result, wall seconds, CPU seconds of the child)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run([sys.executable, str(ROOT / "train.py"), "-m", *args, f"hydra/launcher={option}"],
                            cwd=tmp, env=cli_env(tmp), capture_output=True, text=True, timeout=HANG_S)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return result, wall, cpu


def job_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("#")]


def test_the_width_sweep_is_listed_quickly_and_nothing_is_made(tmp_path):
    result, wall, cpu = dry(tmp_path, "sweep=width")
    print(f"dry run of sweep=width: {wall:.1f} s wall, {cpu:.1f} s CPU")
    assert result.returncode == 0, result.stderr[-3000:]
    assert cpu < LIST_WITHIN_S
    lines = job_lines(result.stdout)
    assert [line.split("  ")[0] for line in lines] == [f"#{i}" for i in range(12)]
    widths, seeds = ("0.5", "1.0", "1.5", "2.0"), ("1", "2", "3")
    assert [line.split("  |")[0].split("  ", 1)[1] for line in lines] == [
        f"model.width={w} seed={s}" for w in widths for s in seeds]
    assert all(line.endswith("|  1 node x 1 task(s), no GPU per node") for line in lines)
    assert "every job: sweep=width" in result.stdout
    assert "dry run: 12 job(s);" in result.stdout and "Nothing was run" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]  # no outputs/, no sweep dir, no multirun.yaml


def test_an_ad_hoc_grid_gets_the_slurm_launchers_resources_per_job(tmp_path):
    """Each job's own trainer config decides (as hydra/launcher=slurm does): a CPU job asks for no GPU, a DDP
    job one task and one GPU per device, num_nodes nodes; a pinned value wins; a bad job says why."""
    result, _, _ = dry(tmp_path, "trainer=cpu,ddp", "trainer.devices=2", "trainer.num_nodes=1,2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert [line.split("  ", 1)[1] for line in job_lines(result.stdout)] == [
        "trainer=cpu trainer.num_nodes=1  |  1 node x 2 task(s), no GPU per node",
        "trainer=cpu trainer.num_nodes=2  |  2 nodes x 2 task(s), no GPU per node",
        "trainer=ddp trainer.num_nodes=1  |  1 node x 2 task(s), 2 GPUs per node",
        "trainer=ddp trainer.num_nodes=2  |  2 nodes x 2 task(s), 2 GPUs per node",
    ]
    pinned, _, _ = dry(tmp_path, "trainer=ddp", "trainer.devices=4", "seed=1,2", "hydra.launcher.gpus_per_node=0",
                       "hydra.launcher.tasks_per_node=1", "hydra.launcher.partition=gpu")  # a Slurm command line
    assert all(line.endswith("|  1 node x 1 task(s), no GPU per node") for line in job_lines(pinned.stdout))
    assert "as hydra/launcher=slurm would submit them: partition gpu, 60 min per job, 2 CPUs per task" \
        in pinned.stdout  # conf/hydra/launcher/slurm.yaml's values
    bad, _, _ = dry(tmp_path, "trainer=cpu,gpu", "trainer.devices=auto")  # how many GPUs is unknown on Slurm
    cpu_job, gpu_job = job_lines(bad.stdout)
    assert cpu_job.endswith("|  1 node x 1 task(s), no GPU per node")
    assert "|  would fail: " in gpu_job and "trainer.devices" in gpu_job, gpu_job
    assert "dry run: 2 job(s), 1 of which would fail;" in bad.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]


def test_a_ready_grid_with_group_choices_and_a_search(tmp_path):
    paper, _, _ = dry(tmp_path, "sweep=paper", "trainer=gpu")
    assert [line.split("  ", 1)[1] for line in job_lines(paper.stdout)] == [
        f"experiment=paper_{d}  |  1 node x 1 task(s), 1 GPU per node"
        for d in ("cifar10", "cifar100", "svhn", "mnist")]
    search, _, _ = dry(tmp_path, "sweep=optuna_dropout_wd")
    assert search.returncode == 0, search.stderr[-3000:]
    assert len(job_lines(search.stdout)) == 2 and "only its first batch can be listed (20 trials" in search.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]


def test_a_local_sweeps_dry_run_speaks_of_local_jobs(tmp_path):
    """The dry run of a local sweep said "as hydra/launcher=slurm would submit them ... 60 min per job".
    hydra/launcher=dry_local stands for the local launcher: this machine's jobs at a time, threads, processes."""
    result, _, _ = dry(tmp_path, "sweep=width", option="dry_local")
    assert result.returncode == 0, result.stderr[-3000:]
    header = result.stdout.splitlines()[0]
    assert header.startswith("as hydra/launcher=local would run them on this machine: 1 job(s) at a time "
                             "(n_jobs=auto), each in a process of its own with 2 CPU thread(s)"), header
    assert "slurm" not in result.stdout.lower() and "node" not in result.stdout and "60 min" not in result.stdout
    lines = job_lines(result.stdout)
    assert len(lines) == 12 and all(line.endswith("|  1 process, no GPU") for line in lines)
    assert "dry run: 12 job(s);" in result.stdout and "Nothing was run" in result.stdout
    ddp, _, _ = dry(tmp_path, "trainer=ddp_cpu", "trainer.devices=2", "seed=1,2", "hydra.launcher.n_jobs=2",
                    option="dry_local")  # a local command line's own keys are accepted as they are
    assert all(line.endswith("|  2 processes (DDP), no GPU") for line in job_lines(ddp.stdout)), ddp.stdout
    assert "2 job(s) at a time (n_jobs=2), each in a process of its own with 1 CPU thread(s)" in ddp.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]


def test_a_dry_run_cut_short_by_a_closed_pipe_leaves_no_dir(tmp_path):
    """Fresh-eyes try: `... hydra/launcher=dry_local | head -2` left outputs/sweeps/<name>/multirun.yaml, and the
    README's report command on the newest sweep dir then failed with 'no jobs in it'."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), "-m", "sweep=lr_schedule",
                             "hydra/launcher=dry_local"], cwd=tmp_path, env=cli_env(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # as `head -1` does
    proc.wait(timeout=120)
    assert first.startswith(b"as hydra/launcher=local would run them")
    assert not (tmp_path / "outputs").exists()


def test_a_dry_run_into_an_existing_sweep_dir_changes_nothing_and_a_run_dir_is_no_sweep_dir(tmp_path):
    """Follow-up of issue 23's adversarial check: a dry run aimed at an existing sweep dir rewrote its
    multirun.yaml (the report then took other settings for repeats of one) and summed up the old jobs as its
    own; a sweep aimed at a single run's dir would put its jobs inside that run."""
    import shutil

    sweep = tmp_path / "sweep"
    shutil.copytree(ROOT / "tests" / "data" / "report_sweep", sweep)
    before = {p: p.read_bytes() for p in sweep.rglob("*") if p.is_file()}
    result, _, _ = dry(tmp_path, "model.width=0.25,1.0", f"hydra.sweep.dir={sweep}", option="dry_local")
    assert result.returncode == 0 and len(job_lines(result.stdout)) == 2, result.stderr[-3000:]
    assert "[nin] sweep:" not in result.stdout
    assert {p: p.read_bytes() for p in sweep.rglob("*") if p.is_file()} == before
    run_dir = tmp_path / "run"
    shutil.copytree(next(p for p in sweep.iterdir() if (p / ".hydra").is_dir()), run_dir)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    result, _, _ = dry(tmp_path, "model.width=0.25,1.0", f"hydra.sweep.dir={run_dir}", option="dry_local")
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and "is a single run's dir (it has .hydra/)" in errors[0]
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
