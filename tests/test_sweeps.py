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
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser

from hydra_plugins.nin_lightning_launcher._resources import Resources
from nin_lightning.config import validate
from nin_lightning.errors import UserError
from tests.conftest import CONF, ROOT, cli_env, error_lines, read_metrics
from tests.slurm_cluster import need_slurm
from tests.wandb_records import offline_runs

GRID = ["model.dropout=0.0,0.5", "seed=1,2"]
TINY = ["experiment=quickstart", "model.width=0.5", "trainer.max_epochs=3", "trainer.enable_progress_bar=false",
        "tags=[ablation]"]
FAILING = {"model.dropout": "0.5", "seed": "2"}  # job 3 of the grid
CHANCE = 0.1  # 10 digit classes
READY_GRIDS = ["width", "dropout", "weight_decay", "lr_schedule", "dataset_seed"]


# ----------------------------------------------------------------------------- helpers
def job_dir_name(num: int, overrides: list[str]) -> str:
    """conf/train.yaml's sweep subdir: the zero-padded job number, then the job's overrides of the swept keys
    only (sorted `key=value`, joined with ',')."""
    swept = {o.split("=", 1)[0] for o in GRID}
    return f"{num:03d}_" + ",".join(sorted(o for o in overrides if o.split("=", 1)[0] in swept))


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
    assert "checkpoints" in own[0] and "Traceback" not in result.stderr and len(own[0]) < 400  # the job's line
    assert f"[nin] sweep: 4 jobs (3 completed, 1 failed) in {sweep_dir}; table and plots: python -m " \
           "nin_lightning.report" in result.stdout, result.stdout[-2000:]

    dirs = sorted(d for d in sweep_dir.iterdir() if d.is_dir() and not d.name.startswith("."))
    assert [d.name for d in dirs] == [job_dir_name(i, o) for i, o in enumerate(grid_jobs())]
    runs = {}
    for job_dir in dirs:
        metrics = read_metrics(job_dir)
        (run,) = offline_runs(job_dir)
        runs[run.run_id] = run
        assert run.group == sweep_dir.name and run.job_type == "train"
        assert run.name == job_dir.name.split("_", 1)[1] and run.tags == ["ablation", "dropout", "seed"]  # + swept
        assert run.config["model"]["dropout"] == float(run.name.split("model.dropout=")[1].split(",")[0])
        if job_dir == failed_dir:
            assert metrics["status"] == "failed" and "checkpoints" in metrics["error"]
            assert run.exit_code not in (None, 0)
        else:
            assert metrics["status"] == "completed" and metrics["epochs"] == 3
            assert metrics["test/acc"] > 3 * CHANCE and metrics["val/acc_best"] > 3 * CHANCE
            assert run.exit_code == 0
    assert len(runs) == 4


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


def test_paper_grid_runs_each_paper_preset(compose_cfg):
    """sweep=paper: the README's results column in one command, one job per paper preset."""
    params = dict(sweep_cfg("sweep=paper").hydra.sweeper.params)
    presets = params["experiment"].split(",")
    assert sorted(presets) == ["paper_cifar10", "paper_cifar100", "paper_mnist", "paper_svhn"]
    datasets = {validate(compose_cfg("sweep=paper", f"experiment={p}")).dataset.name for p in presets}
    assert datasets == {"cifar10", "cifar100", "mnist", "svhn"}


def test_optuna_search_maximises_val_acc():
    hydra_cfg = sweep_cfg("sweep=optuna_dropout_wd").hydra
    assert "optuna" in hydra_cfg.sweeper._target_.lower()
    assert hydra_cfg.sweeper.direction == "maximize"
    assert set(hydra_cfg.sweeper.params) == {"model.dropout", "optimizer.weight_decay"}


@pytest.fixture
def launcher_for():
    """launcher_for('slurm', *hydra_overrides): hydra/launcher=NAME instantiated and set up as Hydra does,
    with Hydra's real config loader, so it composes each job's config itself."""
    from hydra._internal.callbacks import Callbacks
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.plugins import Plugins
    from hydra.types import HydraContext

    def make(name: str, *overrides: str):
        cfg = compose(config_name="train", overrides=[f"hydra/launcher={name}", *overrides], return_hydra_config=True)
        ctx = HydraContext(config_loader=GlobalHydra.instance().config_loader(), callbacks=Callbacks())
        return Plugins.instance().instantiate_launcher(hydra_context=ctx, task_function=lambda _: 0, config=cfg)

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield make


def test_launcher_configs_hold_values_not_logic():
    for name in ("slurm", "local"):
        text = (CONF / "hydra" / "launcher" / f"{name}.yaml").read_text()
        assert "${nin." not in text and "${trainer." not in text
    slurm = sweep_cfg("hydra/launcher=slurm").hydra.launcher
    assert slurm._target_ == "hydra_plugins.nin_lightning_launcher.slurm_launcher.SlurmLauncher"
    assert slurm.partition is None  # the cluster's default partition
    assert (slurm.nodes, slurm.tasks_per_node, slurm.gpus_per_node) == (None, None, None)  # per job
    assert 0 < slurm.signal_delay_s < 60 * slurm.timeout_min
    local = sweep_cfg("hydra/launcher=local").hydra.launcher
    assert local.n_jobs == "auto" and local.jobs_per_gpu == 1 and local.gpus_per_node is None
    assert local.tasks_per_node == 1


@pytest.mark.parametrize(("job", "expected"), [
    (["trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"], Resources(2, 4, 4)),
    (["trainer=gpu"], Resources(1, 1, 1)),
    (["trainer=cpu"], Resources(1, 1, None)),
    (["trainer=ddp_cpu", "trainer.num_nodes=3"], Resources(3, 2, None)),
    (["trainer.devices=2"], Resources(1, 2, None)),  # accelerator=auto asks for no GPUs
    (["trainer=cpu", "trainer.devices=auto"], Resources(1, 1, None)),  # auto on CPU: one process
    (["experiment=quickstart", "trainer=ddp", "trainer.devices=3"], Resources(1, 3, 3)),
])
def test_slurm_resources_come_from_each_jobs_config(launcher_for, job, expected):
    assert launcher_for("slurm").resources(job) == expected


@pytest.mark.parametrize("devices", ["auto", "-1"])
def test_slurm_gpu_devices_auto_is_a_one_line_error(launcher_for, devices):
    with pytest.raises(UserError, match=rf"trainer.devices={devices} .*integer >= 1") as err:
        launcher_for("slurm").resources(["trainer=gpu", f"trainer.devices={devices}"])
    assert "\n" not in str(err.value)


def test_slurm_values_set_in_hydra_launcher_win(launcher_for):
    launcher = launcher_for("slurm", "hydra.launcher.tasks_per_node=1", "hydra.launcher.gpus_per_node=0")
    assert launcher.resources(["trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"]) == Resources(2, 1, None)
    assert launcher.resources(["trainer=gpu", "trainer.devices=auto"]) == Resources(1, 1, None)  # nothing to guess
    pinned = launcher_for("slurm", "hydra.launcher.nodes=1", "hydra.launcher.gpus_per_node=8")
    assert pinned.resources(["trainer=ddp", "trainer.num_nodes=2"]) == Resources(1, 2, 8)


def test_slurm_sweep_submits_one_array_per_resources(launcher_for, tmp_path, monkeypatch):
    """trainer.devices=1,2 x seed=1,2 and trainer=cpu,ddp: one array per distinct resources, results in
    sweep order, and the sbatch script of each array asks for its own tasks and GPUs."""
    from hydra.core.utils import JobReturn, JobStatus

    launcher = launcher_for("slurm", f"hydra.sweep.dir={tmp_path}")
    devices = [["trainer=ddp_cpu", f"trainer.devices={d}", f"seed={s}"] for d in (1, 2) for s in (1, 2)]
    assert launcher.groups(devices) == {Resources(1, 1, None): [0, 1], Resources(1, 2, None): [2, 3]}
    trainers = [["trainer=cpu"], ["trainer=ddp"], ["trainer=cpu", "seed=2"]]
    assert launcher.groups(trainers) == {Resources(1, 1, None): [0, 2], Resources(1, 2, 2): [1]}

    for res, flags in ((Resources(2, 4, 4), ["--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4"]),
                       (Resources(1, 1, None), ["--nodes=1", "--ntasks-per-node=1"])):
        script = launcher.executor(res)._executor._make_submission_file_text("python job.py", "uid")
        assert all(f"#SBATCH {flag}\n" in script for flag in flags), script
        assert ("--gpus" in script) == bool(res.gpus_per_node) and "--partition" not in script

    arrays: list[tuple[Resources, list[int]]] = []

    class Array:
        def __init__(self, res: Resources) -> None:
            self.res = res

        def map_array(self, fn, overrides, _dir_key, nums, *_rest) -> list:
            arrays.append((self.res, list(nums)))
            return [SimpleNamespace(results=lambda o=o: [JobReturn(overrides=o, status=JobStatus.COMPLETED)])
                    for o in overrides]

    monkeypatch.setattr(launcher, "executor", Array)
    returns = launcher.launch(trainers, initial_job_idx=10)
    assert arrays == [(Resources(1, 1, None), [10, 12]), (Resources(1, 2, 2), [11])]
    assert [r.overrides for r in returns] == trainers


def test_local_launcher_gpus_per_job(launcher_for):
    launcher = launcher_for("local")
    assert [launcher.job_gpus(job) for job in (["trainer=gpu", "trainer.devices=2"], ["trainer=ddp"],
                                               ["trainer=cpu"], ["trainer=ddp_cpu"], [])] == [2, 2, 0, 0, 0]
    with pytest.raises(UserError, match=r"trainer\.devices=auto"):
        launcher.job_gpus(["trainer=gpu", "trainer.devices=auto"])
    assert launcher_for("local", "hydra.launcher.gpus_per_node=1").job_gpus(["trainer=ddp"]) == 1
    assert launcher.pick_gpus(2, {0: 1, 2: 1}, node_gpus=4) == (1, 3) and launcher.pick_gpus(0, {0: 1}, 4) == ()
    assert launcher.pick_gpus(2, {0: 1, 2: 1}, node_gpus=3) is None  # only GPU 1 is free: wait
    packed = launcher_for("local", "hydra.launcher.jobs_per_gpu=2")
    assert packed.pick_gpus(1, {0: 1, 1: 2}, node_gpus=2) == (0,) and packed.pick_gpus(1, {0: 2, 1: 2}, 2) is None


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
        self.asked: list[tuple[int | None, tuple[int, ...] | None]] = []  # (gpus_per_node, visible_gpus) per job

    def update_parameters(self, **params) -> None:
        self.params.update(params)

    def submit(self, fn, overrides, *args) -> FakeJob:
        job = FakeJob(self, overrides, polls=1 + 2 * (self.submitted % 2), crash="seed=3" in overrides)
        job.gpus = self.params.get("visible_gpus")
        self.clashes += sum(bool(set(other.gpus) & set(job.gpus)) for other in self.active)
        self.gpus.add(job.gpus)
        self.asked.append((self.params.get("gpus_per_node"), job.gpus))
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


def test_local_launcher_gives_each_job_its_own_gpus(launcher_for, tmp_path, monkeypatch):
    """Jobs needing 2, 1, 2, 1 GPUs on a node with 3 (n_jobs=auto): each sees as many GPUs as it asks for,
    never shared, so 2 run at once."""
    launcher = launcher_for("local", "hydra.launcher.poll_s=0", f"hydra.sweep.dir={tmp_path}")
    fake = FakeExecutor()
    monkeypatch.setattr(launcher, "_executor", lambda: fake)
    monkeypatch.setattr(launcher, "node_gpus", lambda: 3)
    jobs = [["trainer=gpu", f"trainer.devices={n}", f"seed={i}"] for i, n in enumerate((2, 1, 2, 1))]
    returns = launcher.launch(jobs, initial_job_idx=0)
    assert fake.peak == 2 and fake.clashes == 0 and len(returns) == 4
    assert [(n, len(gpus)) for n, gpus in fake.asked] == [(2, 2), (1, 1), (2, 2), (1, 1)]
    assert all(max(gpus) < 3 for _, gpus in fake.asked)  # 2 + 1 GPUs at most in use at once


def test_local_launcher_packs_jobs_per_gpu_and_splits_the_cpus(launcher_for, tmp_path, monkeypatch):
    """n_jobs=auto on a node with 2 GPUs: one job per GPU; with jobs_per_gpu=3, three on each (6 at once), no
    GPU above 3 jobs; the CPUs are split among the jobs at once. Without GPU jobs, one job per 2 cores."""
    jobs = [["trainer=gpu", "trainer.devices=1", f"seed={i}"] for i in range(9)]
    monkeypatch.setattr(os, "cpu_count", lambda: 12)
    for per_gpu, at_once in ((1, 2), (3, 6)):
        launcher = launcher_for("local", "hydra.launcher.poll_s=0", f"hydra.launcher.jobs_per_gpu={per_gpu}",
                                f"hydra.sweep.dir={tmp_path}")
        fake = FakeExecutor()
        monkeypatch.setattr(launcher, "_executor", lambda fake=fake: fake)
        monkeypatch.setattr(launcher, "node_gpus", lambda: 2)
        launched_env: list[str] = []

        def submit(*args, fake=fake, seen=launched_env):
            seen.append(os.environ["OMP_NUM_THREADS"])  # the threads each job process gets
            return FakeExecutor.submit(fake, *args)

        monkeypatch.setattr(fake, "submit", submit)
        launcher.launch(jobs, initial_job_idx=0)
        assert fake.peak == at_once and {g for gpus in fake.gpus for g in gpus} == {0, 1}
        assert set(launched_env) == {str(12 // at_once)}
    cpu_launcher = launcher_for("local")
    assert cpu_launcher.slots([0, 0], node_gpus=0) == 6 and launcher_for("local", "hydra.launcher.n_jobs=4").slots(
        [0], node_gpus=0) == 4


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
    assert not (sweep_dir / ".submitit" / "%j").exists()  # submitit's folder template leaves no empty dir


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
    assert "--partition" not in script and "#SBATCH --ntasks-per-node=1\n" in script  # the default partition
    assert sys.executable in script and "--gpus" not in script


@pytest.mark.slow
@pytest.mark.slurm
def test_slurm_sweep_over_devices_asks_each_job_its_own_tasks(tmp_path):
    """trainer.devices=1,2 on ddp_cpu: two job arrays, with 1 and 2 tasks; both jobs train to the end."""
    need_slurm()
    sweep_dir = tmp_path / "outputs" / "sweeps" / "devices"
    args = [sys.executable, str(ROOT / "train.py"), "-m", "hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1",
            "hydra.launcher.timeout_min=10", "trainer=ddp_cpu", "trainer.devices=1,2", "logger=none",
            "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
            "trainer.limit_test_batches=1", "trainer.enable_progress_bar=false", f"hydra.sweep.dir={sweep_dir}"]
    result = subprocess.run(args, cwd=tmp_path, env=cli_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    scripts = sorted((sweep_dir / ".submitit").glob("*/*_submission.sh"))
    tasks = sorted(ln for p in scripts for ln in p.read_text().splitlines() if "--ntasks-per-node" in ln)
    assert tasks == ["#SBATCH --ntasks-per-node=1", "#SBATCH --ntasks-per-node=2"], scripts
    jobs = sorted(d for d in sweep_dir.iterdir() if d.is_dir() and not d.name.startswith("."))
    assert [read_metrics(d)["status"] for d in jobs] == ["completed", "completed"]


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
    for number, (job_dir, run) in enumerate(zip(jobs, runs, strict=True)):
        config = yaml.safe_load((job_dir / ".hydra" / "config.yaml").read_text())
        dropout, decay = config["model"]["dropout"], config["optimizer"]["weight_decay"]
        assert run.config["model"]["dropout"] == dropout
        # named by the searched keys only (before: every override, dataset=... and trainer.max_epochs=2 too)
        assert run.name == f"model.dropout={dropout},optimizer.weight_decay={decay}"
        assert job_dir.name == f"{number:03d}_{run.name}"


def test_a_sweep_job_that_died_is_one_line_naming_it_and_the_fix():
    """submitit's UncompletedJobError (a local or Slurm job killed by kill -9 or the OOM killer) dumps the job's
    whole log into its message: the error line names the job, its log dir and `resume=auto` instead."""
    from submitit.core.utils import UncompletedJobError

    from nin_lightning.cli.errors import explain

    log = "\n".join(f"[nin] epoch {i}/5 ..." for i in range(1, 40))
    exc = UncompletedJobError(f"Job 6407 (task: 0) with path /s/.submitit/6407/6407_0_result.pkl\nhas not produced "
                              f"any output (state: FINISHED)\nError stream produced:\n-----\n{log}")
    line = explain(exc)
    assert line == ("sweep job 6407 died before it returned a result (killed, or out of memory?); its log is in "
                    "/s/.submitit/6407; re-run the same sweep command with resume=auto to continue it")


def test_an_unfinished_sweep_says_how_to_continue_it_in_its_dir(tmp_path, capsys):
    """Fresh-eyes try: after Ctrl-C in a sweep, its own command plus resume=auto (what the docs said) made a new
    sweep dir and trained every job again; the sweep's last line now gives the command with hydra.sweep.dir."""
    import json
    import shutil

    from nin_lightning.report.sweep_summary import summarise_sweep

    sweep = tmp_path / "s"
    shutil.copytree(ROOT / "tests" / "data" / "report_sweep", sweep)
    again = "python train.py -m 'model.dropout=0.0,0.5' 'seed=1,2' resume=auto hydra.sweep.dir=s"
    summarise_sweep(sweep, again)
    assert "to continue" not in capsys.readouterr().out  # every job completed
    job = sorted(d for d in sweep.iterdir() if d.is_dir())[-1]
    metrics = json.loads((job / "metrics.json").read_text())
    (job / "metrics.json").write_text(json.dumps(metrics | {"status": "interrupted"}))
    summarise_sweep(sweep, again)
    assert capsys.readouterr().out.splitlines()[-1] == f"[nin] to continue the sweep in its dir: {again}"
