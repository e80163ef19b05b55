"""Shared fixtures: compose the real config, run the real CLI in a subprocess, and one trained run per session."""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from nin_lightning.config import register_configs

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


@pytest.fixture(scope="session", autouse=True)
def _registered() -> None:
    register_configs()


# ------------------------------------------------------------------ the suite's cost: Python processes
_python_processes = 0
_popen_init = subprocess.Popen.__init__


def _counting_popen_init(self: subprocess.Popen, args: object, *rest: object, **kwargs: object) -> None:
    """subprocess.Popen, counting the Python processes the tests start themselves (not their children's)."""
    global _python_processes
    argv0 = args[0] if isinstance(args, list | tuple) and args else args
    _python_processes += "python" in Path(str(argv0)).name
    _popen_init(self, args, *rest, **kwargs)


def pytest_configure(config: pytest.Config) -> None:
    """Count the Python processes the suite starts; under pytest-xdist (`make test` runs WORKERS of them)
    each worker's torch, and every process it starts, uses one thread (the workers share the cores)."""
    subprocess.Popen.__init__ = _counting_popen_init  # type: ignore[method-assign]
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ.setdefault("OMP_NUM_THREADS", "1")


# Module-scoped fixtures that train, sweep or evaluate: under pytest-xdist each worker that runs a test using
# one builds its own, so the tests sharing one are kept on one worker (built once, as in a plain pytest run).
SHARED_MODULE_RUNS = {"ddp_straight_and_resumed", "earlier_run", "evaluated", "local_sweep", "logged_in_run",
                      "quiet_run", "straight_and_first_epoch", "sweep"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist (--dist loadgroup): the Slurm tests share one single-node cluster, so one worker runs
    them one after another; the tests of a module that share a trained run (SHARED_MODULE_RUNS) run on one
    worker."""
    for item in items:
        shared = sorted(SHARED_MODULE_RUNS.intersection(getattr(item, "fixturenames", ())))
        if item.get_closest_marker("slurm"):
            item.add_marker(pytest.mark.xdist_group("slurm"))
        elif shared:
            item.add_marker(pytest.mark.xdist_group(f"{item.module.__name__}.{shared[0]}"))


def pytest_sessionfinish(session: pytest.Session) -> None:
    if hasattr(session.config, "workeroutput"):  # an xdist worker: its count goes to the controller
        session.config.workeroutput["python_processes"] = _python_processes


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: object, error: object) -> None:
    """The controller adds up its workers' counts (pytest-xdist's hook)."""
    global _python_processes
    _python_processes += getattr(node, "workeroutput", {}).get("python_processes", 0)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    terminalreporter.write_line(f"Python processes started by the tests: {_python_processes} "
                                "(each pays ~6 s of imports when it trains; their own children not counted)")


@pytest.fixture
def compose_cfg() -> Callable[..., DictConfig]:
    """compose_cfg('dataset=cifar100', ...) -> the composed task config (no `hydra` node)."""

    def _compose(*overrides: str) -> DictConfig:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose(config_name="train", overrides=list(overrides))

    return _compose


DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK",
           "LOCAL_WORLD_SIZE")


def cli_env(tmp: Path) -> dict[str, str]:
    """An environment with no W&B login and outputs under tmp."""
    # torch.distributed's variables too: an in-process DDP test leaves MASTER_PORT in this process's
    # environment, and two runs started with it at once (a fixture's) both tried to listen on it
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "HYDRA_", "NIN_", "SLURM_"))
           and k not in DDP_ENV}
    env.update(HOME=str(tmp / "home"), NIN_OUTPUT_DIR=str(tmp / "outputs"), PYTHONUNBUFFERED="1",
               WANDB_DISABLE_CODE="true")
    (tmp / "home").mkdir(exist_ok=True)
    return env


@pytest.fixture
def run_cli(tmp_path: Path) -> Iterator[Callable[..., subprocess.CompletedProcess[str]]]:
    """run_cli('dataset=digits', ...) runs `python train.py ...` in tmp_path and returns the result."""

    def _run(*args: str, timeout: float = 600, env: dict[str, str] | None = None,
             script: str = "train.py") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(ROOT / script), *args],
            cwd=tmp_path, env=env or cli_env(tmp_path), capture_output=True, text=True, timeout=timeout,
        )

    yield _run


def lr_trace(scheduler, optimizer, steps: int) -> list[float]:
    """The LR before each of `steps` optimizer + scheduler steps."""
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def read_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def error_lines(stderr: str) -> list[str]:
    """Non-empty stderr lines, less library warnings."""
    return [ln for ln in stderr.splitlines() if ln.strip() and "Warning" not in ln and not ln.startswith("  ")]


def train_cmd(*args: str) -> list[str]:
    """argv of `python train.py ARGS` (this checkout's train.py)."""
    return [sys.executable, str(ROOT / "train.py"), *args]


def history_epochs(run_dir: Path) -> list[int]:
    with (run_dir / "history.csv").open() as fh:
        return [int(row["epoch"]) for row in csv.DictReader(fh)]


def wait_for(condition: Callable[[], object], timeout_s: float, what: str, poll_s: float = 0.2) -> None:
    """Wait until CONDITION() holds; past the deadline, fail naming WHAT was waited for."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(poll_s)


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ROOT and the hash of its bytes: what 'nothing was touched' compares."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def tmpfs(mount: Path, size: str) -> Iterator[Path]:
    """A real filesystem of SIZE (tmpfs, needs root) mounted at MOUNT, so that a run can fill it up; for a
    fixture to yield from. Without root it skips, and fails under CI (which must run these tests)."""
    mount.mkdir()
    mounted = os.geteuid() == 0 and not subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                                                        str(mount)]).returncode
    if not mounted:
        if os.environ.get("CI"):
            pytest.fail("CI must run the full-disk test: it needs root to mount a small tmpfs")
        pytest.skip("needs root to mount a small tmpfs")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


# ------------------------------------------------------------------------------------ the session's run
# One finished digits run per pytest process (per xdist worker), trained in-process once: what the tests
# that need "a finished run", "a checkpoint" or "a run dir" start from, instead of each training its own.
# As `python train.py SHARED_RUN hydra.run.dir=...` would leave it: .hydra/ (config, hydra, overrides),
# train.log, checkpoints/{best,last}.ckpt, history.csv, metrics.json, and W&B offline (wandb_run.json and
# one offline run's .wandb file, no login). 3 epochs: test/acc 0.867 (tests/test_inference.py wants >= 0.85).
SHARED_RUN = ("experiment=quickstart", "model.width=0.5", "trainer.enable_progress_bar=false", "trainer.max_epochs=3")


@contextmanager
def _process_state_restored() -> Iterator[None]:
    """Whatever an in-process run may change in this process is put back after it: the environment (W&B's,
    Lightning's PL_GLOBAL_SEED, MASTER_PORT), the working dir, signal handlers, the root logger's handlers
    and level, warning filters, torch's threads, deterministic mode and matmul precision, the global RNGs."""
    import random

    import numpy as np
    import torch

    env, cwd = dict(os.environ), os.getcwd()
    handlers = {s: signal.getsignal(s) for s in signal.valid_signals()
                if s not in (signal.SIGKILL, signal.SIGSTOP) and signal.getsignal(s) is not None}
    root = logging.getLogger()
    root_handlers, root_level = list(root.handlers), root.level
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    matmul = torch.get_float32_matmul_precision()
    rng = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    hook = sys.excepthook
    try:
        with warnings.catch_warnings():
            yield
    finally:
        os.environ.clear()
        os.environ.update(env)
        os.chdir(cwd)
        for sig, handler in handlers.items():
            if signal.getsignal(sig) is not handler:
                signal.signal(sig, handler)
        root.handlers[:] = root_handlers
        root.setLevel(root_level)
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
        torch.set_float32_matmul_precision(matmul)
        random.setstate(rng[0])
        np.random.set_state(rng[1])
        torch.set_rng_state(rng[2])
        sys.excepthook = hook


def train_in_process(run_dir: Path, *overrides: str) -> Path:
    """`python train.py OVERRIDES hydra.run.dir=RUN_DIR` in this process: the config composed as Hydra's
    CLI composes it, the JobContext read from it as the CLI reads it (cli/hydra_job.py), in the environment
    cli_env gives the CLI (no W&B login: offline), with RUN_DIR/train.log as Hydra's job logging writes it.
    Nothing else the CLI does (--help, quiet library loggers, exit codes): for those, run the CLI."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from nin_lightning.cli.hydra_job import job_context
    from nin_lightning.run import train
    from nin_lightning.status import RunLogHandler

    tmp = run_dir.parent
    with _process_state_restored():
        os.environ.clear()
        os.environ.update(cli_env(tmp))
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(config_name="train", overrides=[*overrides, f"hydra.run.dir={run_dir}"],
                          return_hydra_config=True)
        with read_write(cfg.hydra), open_dict(cfg.hydra):  # what Hydra's run_job adds to the composed config
            cfg.hydra.mode = RunMode.RUN
            cfg.hydra.runtime.output_dir = str(run_dir.resolve())
            cfg.hydra.runtime.cwd = str(tmp)
        task = copy.deepcopy(cfg)  # the task config, as Hydra's run_job makes it
        with read_write(task), open_dict(task):
            del task["hydra"]
        HydraConfig.instance().set_config(cfg)
        try:
            job = job_context(OmegaConf.to_yaml(task))
        finally:
            HydraConfig.instance().cfg = None
        log = RunLogHandler(str(run_dir / "train.log"))
        log.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
        root = logging.getLogger()
        root.addHandler(log)
        root.setLevel(logging.INFO)
        try:
            train(task, job)
        finally:
            root.removeHandler(log)
            log.close()
    return run_dir


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's finished run (SHARED_RUN): read it, never change it; copy it (run_copy) to change it."""
    return train_in_process(tmp_path_factory.mktemp("trained_run") / "run", *SHARED_RUN)


def copy_run(run_dir: Path, where: Path) -> Path:
    """A copy of RUN_DIR at WHERE (a new dir); its wandb_run.json names WHERE as the dir that logs, so the
    copy is a run of its own, not a copy of the original (check_not_a_copy)."""
    shutil.copytree(run_dir, where)
    identity = where / "wandb_run.json"
    if identity.is_file():
        identity.write_text(json.dumps(json.loads(identity.read_text()) | {"dir": str(where.resolve())}))
    return where


@pytest.fixture
def run_copy(trained_run: Path, tmp_path: Path) -> Path:
    """A fresh copy of the session's finished run, tmp_path/run, to change at will."""
    return copy_run(trained_run, tmp_path / "run")
