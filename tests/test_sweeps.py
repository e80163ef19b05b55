"""Sweeps: the ready grids compose; a 2x2 dropout x seed grid on digits runs through hydra/launcher=local
and hydra/launcher=slurm (a real single-node Slurm) with one job failing on purpose; an Optuna search runs
its trials in one process; the ablation report reads the sweep.

The failing job: before the sweep starts, the test puts a FILE named `checkpoints` into the job dir of
(model.dropout=0.5, seed=2). That job starts, opens its W&B run, trains its first epoch and then fails
for real when Lightning cannot create its checkpoint dir (as on a full or read-only disk). The grid
stays dropout x seed and nothing in the code knows about the test.
"""

from __future__ import annotations

import csv
import itertools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser

from nin_lightning.config import validate
from tests.conftest import CONF, ROOT, cli_env, error_lines, read_metrics
from tests.wandb_records import offline_runs

GRID = ["model.dropout=0.0,0.5", "seed=1,2"]
TINY = ["experiment=quickstart", "model.width=0.5", "trainer.max_epochs=3", "trainer.enable_progress_bar=false",
        "tags=[ablation]"]
FAILING = {"model.dropout": "0.5", "seed": "2"}  # job 3 of the grid
CHANCE = 0.1  # 10 digit classes
READY_GRIDS = ["width", "dropout", "weight_decay", "lr_schedule", "dataset_seed"]
SLURM_UP = ("idle", "mix", "alloc", "comp")


# ----------------------------------------------------------------------------- helpers
def job_dir_name(num: int, overrides: list[str]) -> str:
    """Hydra's `${hydra.job.num}_${hydra.job.override_dirname}` (sorted `key=value`, joined with ',')."""
    excluded = {"logger", "trainer.enable_progress_bar", "sweep"}
    return f"{num}_" + ",".join(sorted(o for o in overrides if o.split("=", 1)[0] not in excluded))


def grid_jobs() -> list[list[str]]:
    """The grid's jobs in Hydra's order (the last axis varies fastest)."""
    return [[f"model.dropout={d}", f"seed={s}", *TINY] for d, s in itertools.product(("0.0", "0.5"), ("1", "2"))]


def plant_failure(sweep_dir: Path) -> Path:
    """Block the failing job's checkpoint dir with a file; returns that job's dir."""
    num, overrides = next((i, o) for i, o in enumerate(grid_jobs())
                          if {f"{k}={v}" for k, v in FAILING.items()} <= set(o))
    job_dir = sweep_dir / job_dir_name(num, overrides)
    job_dir.mkdir(parents=True)
    (job_dir / "checkpoints").write_text("not a directory: this job must fail when it saves a checkpoint\n")
    return job_dir


def run_sweep(tmp: Path, sweep_dir: Path, *extra: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """`python train.py -m GRID TINY EXTRA` with outputs under tmp, W&B offline."""
    args = [sys.executable, str(ROOT / "train.py"), "-m", *GRID, *TINY, f"hydra.sweep.dir={sweep_dir}", *extra]
    return subprocess.run(args, cwd=tmp, env=cli_env(tmp), capture_output=True, text=True, timeout=timeout)


def check_grid(result: subprocess.CompletedProcess[str], sweep_dir: Path, failed_dir: Path) -> None:
    """3 jobs completed and learned, the planted one failed; the CLI exits non-zero with one line;
    4 distinct W&B runs in one group, named by their overrides, the failed one with a non-zero exit code."""
    assert result.returncode != 0, result.stdout[-2000:]
    own = [ln for ln in error_lines(result.stderr) if ln.startswith("error:")]
    assert len(own) == 1 and error_lines(result.stderr)[-1] == own[0], result.stderr[-3000:]
    assert "checkpoints" in own[0] and "Traceback" not in result.stderr

    dirs = sorted(d for d in sweep_dir.iterdir() if d.is_dir() and not d.name.startswith("."))
    assert [d.name for d in dirs] == [job_dir_name(i, o) for i, o in enumerate(grid_jobs())]
    runs = {}
    for job_dir in dirs:
        metrics = read_metrics(job_dir)
        (run,) = offline_runs(job_dir)
        runs[run.run_id] = run
        assert run.group == sweep_dir.name and run.job_type == "train"
        assert run.name == job_dir.name.split("_", 1)[1] and run.tags == ["ablation"]
        assert run.config["model"]["dropout"] == float(run.name.split("model.dropout=")[1].split(",")[0])
        if job_dir == failed_dir:
            assert metrics["status"] == "failed" and "checkpoints" in metrics["error"]
            assert run.exit_code not in (None, 0)
        else:
            assert metrics["status"] == "completed" and metrics["epochs"] == 3
            assert metrics["test/acc"] > 3 * CHANCE and metrics["val/acc_best"] > 3 * CHANCE
            assert run.exit_code == 0
    assert len(runs) == 4


def slurm_state() -> str | None:
    """The Slurm node's state, or None when there is no usable Slurm here."""
    if not shutil.which("sinfo"):
        return None
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    states = [s.strip().rstrip("*~#") for s in out.split()]
    return next((s for s in states if s in SLURM_UP), None)


def need_slurm() -> None:
    """Skip (fail in CI, where .ci/run starts Slurm) without a usable Slurm node."""
    if slurm_state() is None:
        reason = "no usable Slurm here: `sinfo` is missing or shows no idle/mix/alloc node (.ci/slurm-setup.sh)"
        if os.environ.get("CI"):
            pytest.fail(reason + " -- CI must run this test")
        pytest.skip(reason)


# ----------------------------------------------------------------------------- fast: configs
def sweep_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides), return_hydra_config=True)


@pytest.mark.parametrize("name", READY_GRIDS)
def test_ready_grid_composes_every_job(compose_cfg, name):
    hydra_cfg = sweep_cfg(f"sweep={name}").hydra
    assert f"/sweeps/{name}_" in hydra_cfg.sweep.dir
    params = dict(hydra_cfg.sweeper.params)
    parser = OverridesParser.create()
    axes = {k: [f"{k}={v}" for v in parser.parse_overrides([f"{k}={params[k]}"])[0].sweep_string_iterator()]
            for k in params}
    assert len(axes.pop("seed")) >= 3 and len(axes) == 1 and len(next(iter(axes.values()))) >= 4
    axes["seed"] = ["seed=1"]
    for job in itertools.product(*axes.values()):
        validate(compose_cfg(f"sweep={name}", *job))


def test_optuna_search_maximises_val_acc():
    hydra_cfg = sweep_cfg("sweep=optuna_dropout_wd").hydra
    assert "optuna" in hydra_cfg.sweeper._target_.lower()
    assert hydra_cfg.sweeper.direction == "maximize"
    assert set(hydra_cfg.sweeper.params) == {"model.dropout", "optimizer.weight_decay"}


@pytest.mark.parametrize(("trainer", "tasks", "gpus"), [("cpu", 1, None), ("ddp_cpu", 2, None), ("gpu", 1, 1),
                                                         ("ddp", 2, 2)])
def test_slurm_launcher_follows_trainer(trainer, tasks, gpus):
    cfg = sweep_cfg("hydra/launcher=slurm", f"trainer={trainer}", "trainer.num_nodes=2")
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and launcher.partition == "debug"
    assert (launcher.tasks_per_node, launcher.gpus_per_node, launcher.nodes) == (tasks, gpus, 2)
    assert 0 < launcher.signal_delay_s < 60 * launcher.timeout_min


def test_local_launcher_config():
    launcher = sweep_cfg("hydra/launcher=local", "trainer=cpu").hydra.launcher
    assert launcher.n_jobs >= 1 and launcher.gpus_per_node is None and launcher.tasks_per_node == 1


class FakeJob:
    """A submitit job that is done after `polls` polls; `crash` makes its results() raise."""

    def __init__(self, executor: FakeExecutor, overrides: list[str], polls: int, crash: bool) -> None:
        self.executor, self.overrides, self.polls, self.crash = executor, overrides, polls, crash
        self.gpus: tuple[int, ...] | None = None

    def done(self) -> bool:
        self.polls -= 1
        if self.polls <= 0:
            self.executor.active.discard(self)
        return self.polls <= 0

    def results(self) -> list:
        from hydra.core.utils import JobReturn, JobStatus

        if self.crash:
            raise RuntimeError("job process killed")
        return [JobReturn(overrides=self.overrides, status=JobStatus.COMPLETED, _return_value=0.9)]


class FakeExecutor:
    """Records how many jobs run at once and which GPUs each job sees."""

    def __init__(self) -> None:
        self.active: set[FakeJob] = set()
        self.peak = self.submitted = self.clashes = 0
        self.params: dict = {}
        self.gpus: set = set()

    def update_parameters(self, **params) -> None:
        self.params.update(params)

    def submit(self, fn, overrides, *args) -> FakeJob:
        job = FakeJob(self, overrides, polls=1 + 2 * (self.submitted % 2), crash="seed=3" in overrides)
        job.gpus = self.params.get("visible_gpus")
        self.clashes += sum(other.gpus == job.gpus for other in self.active)
        self.gpus.add(job.gpus)
        self.active.add(job)
        self.submitted += 1
        self.peak = max(self.peak, len(self.active))
        return job


def test_local_launcher_runs_at_most_n_jobs_and_reports_a_dead_job(tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    from hydra_plugins.nin_lightning_launcher.local_launcher import LocalLauncher

    launcher = LocalLauncher(n_jobs=2, poll_s=0, gpus_per_node=1, submitit_folder=str(tmp_path / "%j"))
    launcher.config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    fake = FakeExecutor()
    monkeypatch.setattr(launcher, "_executor", lambda: fake)
    returns = launcher.launch([[f"seed={i}"] for i in range(6)], initial_job_idx=0)
    assert fake.peak == 2 and len(returns) == 6
    assert fake.gpus == {(0,), (1,)} and fake.clashes == 0  # one GPU per slot, never shared
    assert [r.status.name for r in returns] == ["COMPLETED"] * 3 + ["FAILED"] + ["COMPLETED"] * 2
    with pytest.raises(RuntimeError, match="killed"):
        _ = returns[3].return_value


# ----------------------------------------------------------------------------- slow: real sweeps
@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("local")
    sweep_dir = tmp / "outputs" / "sweeps" / "dropout_seed_local"
    failed_dir = plant_failure(sweep_dir)
    result = run_sweep(tmp, sweep_dir, "hydra/launcher=local", "hydra.launcher.n_jobs=2")
    return result, sweep_dir, failed_dir


@pytest.mark.slow
def test_local_launcher_grid_with_one_failing_job(local_sweep):
    result, sweep_dir, failed_dir = local_sweep
    check_grid(result, sweep_dir, failed_dir)
    # one fresh process per job: each job has its own submitit folder (its own process id)
    assert len([d for d in (sweep_dir / ".submitit").iterdir() if any(d.glob("*_result.pkl"))]) == 4


@pytest.mark.slow
def test_report_over_the_local_sweep(local_sweep, tmp_path):
    _, sweep_dir, _ = local_sweep
    out = subprocess.run([sys.executable, "-m", "nin_lightning.report", str(sweep_dir)], cwd=tmp_path,
                         env=cli_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    md = (sweep_dir / "report.md").read_text()
    print(md)  # the table, for the record (pytest -s)
    assert str(sweep_dir / "report.md") in out.stdout
    table = [ln for ln in md.splitlines() if ln.startswith("| 0.")]
    assert len(table) == 2 and "| 2 ok |" in table[0] and "1 ok, 1 FAILED" in table[1]
    assert "4 jobs: 3 completed, 1 failed, 0 incomplete" in md and "**failed**" in md
    with (sweep_dir / "report.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["model.dropout"], r["n_seeds"], r["n_failed"]) for r in rows] == [("0.0", "2", "0"), ("0.5", "1", "1")]
    assert float(rows[0]["val/acc_best_mean"]) > 3 * CHANCE and float(rows[0]["val/acc_best_std"]) >= 0
    for png in ("metric_vs_model_dropout.png", "learning_curves.png"):
        data = (sweep_dir / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
        assert f"]({png})" in md


@pytest.mark.slow
@pytest.mark.slurm
def test_slurm_launcher_grid_with_one_failing_job(tmp_path):
    need_slurm()
    sweep_dir = tmp_path / "outputs" / "sweeps" / "dropout_seed_slurm"
    failed_dir = plant_failure(sweep_dir)
    result = run_sweep(tmp_path, sweep_dir, "hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1",
                       "hydra.launcher.timeout_min=20")
    check_grid(result, sweep_dir, failed_dir)
    script = next((sweep_dir / ".submitit").glob("*/*_submission.sh")).read_text()
    assert "#SBATCH --partition=debug" in script and sys.executable in script and "--gpus" not in script


@pytest.mark.slow
def test_optuna_trials_in_one_process_are_distinct_runs(tmp_path):
    """Two Optuna trials through Hydra's basic launcher (one process): two W&B runs, not one merged run."""
    sweep_dir = tmp_path / "outputs" / "sweeps" / "optuna"
    args = [sys.executable, str(ROOT / "train.py"), "-m", "sweep=optuna_dropout_wd", "hydra.sweeper.n_trials=2",
            *TINY, "trainer.max_epochs=2", f"hydra.sweep.dir={sweep_dir}"]
    result = subprocess.run(args, cwd=tmp_path, env=cli_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted(d for d in sweep_dir.iterdir() if d.is_dir() and (d / ".hydra").is_dir())
    assert len(jobs) == 2
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    values = [read_metrics(d)["val/acc_best"] for d in jobs]
    assert best["best_value"] == pytest.approx(max(values))  # maximised
    runs = [r for d in jobs for r in offline_runs(d)]
    assert len(runs) == 2 and runs[0].run_id != runs[1].run_id
    assert {r.group for r in runs} == {"optuna"} and all(r.exit_code == 0 for r in runs)
    for job_dir, run in zip(jobs, runs, strict=True):
        dropout = yaml.safe_load((job_dir / ".hydra" / "config.yaml").read_text())["model"]["dropout"]
        assert run.config["model"]["dropout"] == dropout and run.name in job_dir.name
