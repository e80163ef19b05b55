"""The bad-input catalogue: every case runs the CLI's entry point and must fail fast, in one line, harming nothing.

Each case checks: a non-zero exit; exactly one `error:` line on stderr that names the culprit (and the fix
or the valid choices where one exists); no traceback; and no file of an earlier run changed.

Every case runs train.py in this process (`run_train_in_process`: `python train.py ARGS` as runpy runs it,
with its argv, working dir and environment, the process state it changes restored afterwards); a few
(REAL_CLI) run it again as a real process, for what only a process shows: its exit status and its real
stderr, with no traceback, on each kind of failure path.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import runpy
import shutil
import signal
import subprocess
import sys
import time
import traceback
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests import fake_data
from tests.conftest import ROOT, cli_env, error_lines, snapshot

HANG_LIMIT_S = 120  # a hang detector, not a speed target: these cases take a few seconds
WITHIN_S = 60  # "within seconds": a bad input must never reach training (a loaded 2-core box takes ~6 s)


@dataclass
class Case:
    """One bad input: CLI args, and substrings the error line must contain."""

    id: str
    args: list[str]
    expect: list[str]
    prepare: Callable[[Path, Path], list[str]] | None = None  # (tmp, earlier_run) -> extra args
    env: dict[str, str] = field(default_factory=dict)


def _file_as_root(tmp: Path, _: Path) -> list[str]:
    (tmp / "not_a_dir").write_text("x")
    return [f"dataset.root={tmp / 'not_a_dir'}"]


def _file_as_run_dir(tmp: Path, _: Path) -> list[str]:
    (tmp / "a_file").write_text("mine")
    return [f"hydra.run.dir={tmp / 'a_file'}"]


def _truncated_ckpt(tmp: Path, earlier: Path) -> list[str]:
    data = (earlier / "checkpoints" / "last.ckpt").read_bytes()
    (tmp / "truncated.ckpt").write_bytes(data[: len(data) // 3])
    return [f"ckpt_path={tmp / 'truncated.ckpt'}"]


def _garbage_ckpt(tmp: Path, _: Path) -> list[str]:
    (tmp / "garbage.ckpt").write_bytes(b"this is not a checkpoint" * 10)
    return [f"ckpt_path={tmp / 'garbage.ckpt'}"]


def _foreign_ckpt(tmp: Path, _: Path) -> list[str]:
    import argparse

    import torch

    torch.save({"state_dict": {}, "args": argparse.Namespace(lr=0.1)}, tmp / "foreign.ckpt")  # code on unpickling
    return [f"ckpt_path={tmp / 'foreign.ckpt'}"]


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _damaged(write: Callable[[Path], object], damaged: str, dataset: str) -> Callable[[Path, Path], list[str]]:
    """Write tiny files in torchvision's format under tmp/data, truncate one, and point the run at them."""

    def prepare(tmp: Path, _: Path) -> list[str]:
        write(tmp / "data")
        _truncate(tmp / "data" / damaged)
        return [f"dataset={dataset}", f"dataset.root={tmp / 'data'}"]

    return prepare


def _written(write: Callable[..., object], dataset: str, *extra: str,
             **sizes: int) -> Callable[[Path, Path], list[str]]:
    """Intact tiny files in torchvision's format under tmp/data (their MD5s are not torchvision's)."""

    def prepare(tmp: Path, _: Path) -> list[str]:
        write(tmp / "data", **sizes)
        return [f"dataset={dataset}", f"dataset.root={tmp / 'data'}", *extra]

    return prepare


def _placed_archive(tmp: Path, _: Path) -> list[str]:
    """cifar-100-python.tar.gz copied into dataset.root by hand (not torchvision's: its MD5 differs)."""
    fake_data.write_cifar100(tmp / "data", n_train=100, n_test=100)
    fake_data.pack_archive(tmp / "data", "cifar-100-python", "cifar-100-python.tar.gz")
    return ["dataset=cifar100", f"dataset.root={tmp / 'data'}"]


NO_NETWORK = {"https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9"}  # refused at once

DATA_CASES = [
    Case("md5-mismatch-cifar10", [], ["cifar-10-batches-py/data_batch_1", "MD5"],
         prepare=_written(fake_data.write_cifar10, "cifar10")),
    Case("md5-mismatch-placed-archive", [], ["cifar-100-python.tar.gz", "MD5 mismatch"], prepare=_placed_archive),
    Case("val-size-too-large-mnist", [], ["dataset.val_size=300", "no training data", "300 training images"],
         prepare=_written(fake_data.write_mnist, "mnist", "dataset.val_size=300", n_train=300)),
    Case("failed-download", ["dataset=cifar10", "dataset.download=true"],
         ["cannot download cifar-10-python.tar.gz", "no network", "put cifar-10-python.tar.gz in"], env=NO_NETWORK),
    Case("missing-svhn", ["dataset=svhn", "dataset.root=/nonexistent/data"],
         ["/nonexistent/data/train_32x32.mat", "test_32x32.mat", "dataset.download=true"]),
    Case("truncated-mnist", [], ["train-images-idx3-ubyte"],
         prepare=_damaged(fake_data.write_mnist, "MNIST/raw/train-images-idx3-ubyte", "mnist")),
    Case("truncated-cifar10", [], ["data_batch_1"],
         prepare=_damaged(fake_data.write_cifar10, "cifar-10-batches-py/data_batch_1", "cifar10")),
    Case("truncated-cifar100", [], ["cifar-100-python"],
         prepare=_damaged(fake_data.write_cifar100, "cifar-100-python/train", "cifar100")),
    Case("truncated-svhn", [], ["train_32x32.mat"],
         prepare=_damaged(fake_data.write_svhn, "train_32x32.mat", "svhn")),
]

GROUP_CASES = [
    Case(f"unknown-{group.replace('/', '-')}", [f"{group}=nope"], [f"{group}=nope", choice])
    for group, choice in [("dataset", "cifar10"), ("model", "nin"), ("optimizer", "sgd"), ("scheduler", "cosine"),
                          ("trainer", "ddp_cpu"), ("logger", "wandb"), ("callbacks", "default"),
                          ("experiment", "quickstart"), ("hydra/launcher", "basic")]
]

CASES = [
    *GROUP_CASES,
    *DATA_CASES,
    Case("misspelt-key", ["model.dropuot=0.3"], ["model.dropuot", "did you mean model.dropout"]),
    Case("misspelt-top-level", ["sed=1"], ["sed", "unknown config key"]),
    Case("type-seed", ["seed=abc"], ["seed", "abc", "give a whole number, e.g. seed="]),
    Case("type-dropout", ["model.dropout=abc"], ["model.dropout", "abc", "give a number, e.g. model.dropout="]),
    Case("type-batch-norm", ["model.batch_norm=maybe"], ["model.batch_norm", "maybe", "model.batch_norm=true"]),
    Case("range-dropout", ["model.dropout=1.5"], ["model.dropout=1.5", "0 <= dropout < 1"]),
    Case("range-width-zero", ["model.width=0"], ["model.width=0", "> 0"]),
    Case("range-width-negative", ["model.width=-2"], ["model.width=-2", "> 0"]),
    Case("range-lr", ["optimizer.lr=-0.1"], ["optimizer.lr=-0.1", "> 0"]),
    Case("range-batch-size", ["dataset.batch_size=0"], ["dataset.batch_size=0", ">= 1"]),
    Case("range-max-epochs", ["trainer.max_epochs=-5"], ["trainer.max_epochs=-5", ">= 1"]),
    Case("range-max-epochs-unlimited", ["trainer.max_epochs=-1"], ["trainer.max_epochs=-1", "not supported"]),
    Case("range-devices", ["trainer.devices=0"], ["trainer.devices=0", ">= 1"]),
    Case("range-val-size", ["dataset.val_size=5000"], ["dataset.val_size=5000", "1437"]),
    Case("missing-data-dir", ["dataset=mnist", "dataset.root=/nonexistent/data"],
         ["/nonexistent/data", "dataset.download=true"]),
    Case("data-root-is-a-file", ["dataset=cifar10"], ["not_a_dir"], prepare=_file_as_root),
    Case("unwritable-output-dir", ["hydra.run.dir=/proc/nin-run"], ["/proc/nin-run"]),
    Case("run-dir-is-a-file", [], ["a_file is a file, not a directory; give a run dir"], prepare=_file_as_run_dir),
    Case("missing-ckpt", ["ckpt_path=/nonexistent/last.ckpt"], ["ckpt_path=/nonexistent/last.ckpt", "no such file"]),
    Case("truncated-ckpt", [], ["truncated.ckpt", "ckpt_path"], prepare=_truncated_ckpt),
    Case("garbage-ckpt", [], ["garbage.ckpt", "ckpt_path"], prepare=_garbage_ckpt),
    Case("foreign-ckpt", [], ["foreign.ckpt", "refusing to unpickle"], prepare=_foreign_ckpt),
    Case("gpu-without-gpu", ["trainer=gpu"], ["trainer=gpu", "trainer=cpu"]),
    Case("empty-sweep-list", ["-m", "model.dropout=choice()"], ["model.dropout=choice()", "empty"]),
    Case("bad-resume-value", ["resume=sometimes"], ["resume='sometimes'", "never, auto"]),
    Case("added-unknown-key", ["+foo=1"], ["foo", "unknown config key"]),
    Case("key-of-another-option", ["scheduler.patience=2"], ["scheduler.patience", "belongs to scheduler=plateau"]),
    Case("unquoted-job-dir", ["hydra.run.dir=outputs/sweeps/s/000_model.dropout=0.5,seed=1"],
         ["hydra.run.dir=outputs/sweeps/s/000_model.dropout=0.5,seed=1", "hydra.run.dir=\"'outputs/sweeps"]),
    Case("range-max-epochs-zero", ["trainer.max_epochs=0"], ["trainer.max_epochs=0", ">= 1"]),
    Case("unknown-precision", ["trainer.precision=bogus"], ["trainer.precision='bogus'", "bf16-mixed"]),
    Case("unknown-strategy", ["trainer.strategy=dpp"], ["trainer.strategy=dpp", "did you mean ddp"]),
    Case("unknown-monitored-metric", ["callbacks.monitor=val/accc"], ["callbacks.monitor='val/accc'", "val/acc"]),
    Case("bad-value-late-in-a-sweep", ["-m", "model.dropout=0.0,0.3,1.5"], ["model.dropout=1.5", "0 <= dropout < 1"]),
    # issue 12: refused at start, naming the key (before: numpy's "ValueError: -1 is not in bounds" after the run
    # dir existed; each val_size=0 case failed after its first epoch)
    Case("range-seed-negative", ["seed=-1"], ["seed=-1", "2**32"]),
    Case("range-seed-too-large", ["seed=4294967296"], ["seed=4294967296", "2**32"]),
    Case("no-val-set-with-val-monitor", ["dataset.val_size=0"], ["dataset.val_size=0", "callbacks.monitor=val/acc",
                                                                 "callbacks.monitor=train/acc"]),
    Case("no-val-set-with-early-stopping", ["dataset.val_size=0", "callbacks.early_stopping_patience=3",
                                            "callbacks.monitor=val/loss", "callbacks.mode=min"],
         ["dataset.val_size=0", "callbacks.monitor=val/loss", "early stopping"]),
    Case("no-val-set-with-val-plateau", ["dataset.val_size=0", "callbacks.monitor=train/acc", "scheduler=plateau"],
         ["dataset.val_size=0", "scheduler.monitor=val/acc", "scheduler.monitor=train/acc"]),
    # issue 22 item 2: names W&B refuses, refused with the config (before: W&B's UsageError after the run dir
    # said `running`, left behind)
    Case("wandb-project-with-slash", ["logger=wandb", "logger.project=a/b", "trainer.max_epochs=1"],
         ["logger.project='a/b'", "W&B refuses it", "logger.project=<name>"]),
    Case("wandb-project-from-env", ["logger=wandb", "trainer.max_epochs=1"], ["WANDB_PROJECT='a%b'", "W&B"],
         env={"WANDB_PROJECT": "a%b"}),
]


# Run again as a real process (`python train.py ...`): one case per kind of failure path. Hydra's own
# override errors, the schema's checks, a sweep's values checked by a Hydra callback (which exits from inside
# Hydra), a data file that torch reads, and W&B's names from the environment.
REAL_CLI = ("misspelt-key", "range-dropout", "bad-value-late-in-a-sweep", "truncated-cifar10",
            "wandb-project-from-env")

TRAIN = ROOT / "train.py"
_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


@dataclass
class Ran:
    """What a run of train.py showed: its exit status and its output."""

    returncode: int
    stdout: str
    stderr: str


def _logging_state() -> dict[logging.Logger, tuple[Any, ...]]:
    loggers = [logging.getLogger(), *(lg for lg in logging.Logger.manager.loggerDict.values()
                                      if isinstance(lg, logging.Logger))]
    return {lg: (list(lg.handlers), lg.level, lg.propagate, lg.disabled, list(lg.filters),
                 {h: list(h.filters) for h in lg.handlers}) for lg in loggers}


def _restore_logging(saved: dict[logging.Logger, tuple[Any, ...]]) -> None:
    """Hydra's job logging (dictConfig) replaced the root logger's handlers, with ones writing to this case's
    stdout and run dir: close those, and give every logger back its handlers, level and filters."""
    kept = {h for handlers, *_ in saved.values() for h in handlers}
    for lg in _logging_state():
        for handler in lg.handlers:
            if handler not in kept:
                handler.close()
        if lg not in saved:  # made by the case: left empty
            lg.handlers.clear()
            continue
        handlers, level, propagate, disabled, filters, handler_filters = saved[lg]
        lg.handlers[:] = handlers
        lg.setLevel(level)
        lg.propagate, lg.disabled, lg.filters[:] = propagate, disabled, filters
        for handler, old in handler_filters.items():
            handler.filters[:] = old


@contextlib.contextmanager
def _process_state_restored() -> Iterator[list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]]]:
    """Whatever train.py changes in its process, put back afterwards: the environment (HYDRA_FULL_ERROR, the
    seed, compile cache dirs), working dir, argv, stdout/stderr, logging, warnings' filters and showwarning,
    signal handlers, Hydra's singletons (GlobalHydra, HydraConfig: `job_context` reads them), our module
    globals and caches, urllib's opener (built once per process, it reads the proxies of that moment). Yields
    the list of the project's functions the run registered with atexit: a process would call them at its exit."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.singleton import Singleton

    from nin_lightning.cli import hydra_job, options

    GlobalHydra.instance().clear()
    urllib.request.install_opener(None)
    environ, cwd, argv, streams = dict(os.environ), os.getcwd(), list(sys.argv), (sys.stdout, sys.stderr)
    singletons = Singleton.get_state()  # Hydra's own way to carry its singletons (and OmegaConf's resolvers)
    handlers = {sig: signal.getsignal(sig) for sig in _SIGNALS}
    logs, made = _logging_state(), hydra_job.made_for_run
    at_exit: list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = []
    register = atexit.register

    def collect(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Callable[..., Any]:
        """The project's exit functions are the run's (the sweep summary); a library's, registered once when
        it is first imported (weakref.finalize's, which torch's op registrations depend on), stay the process's."""
        if not str(getattr(func, "__module__", "")).startswith(("nin_lightning", "hydra_plugins")):
            return register(func, *args, **kwargs)
        at_exit.append((func, args, kwargs))
        return func

    atexit.register = collect
    try:
        with warnings.catch_warnings():
            yield at_exit
    finally:
        atexit.register = register
        GlobalHydra.instance().clear()
        Singleton.set_state(singletons)
        _restore_logging(logs)
        for sig, handler in handlers.items():
            if signal.getsignal(sig) is not handler and handler is not None:
                signal.signal(sig, handler)
        hydra_job.made_for_run = made
        options.groups_text.cache_clear()  # "" when a run is not --help, cached for the process
        urllib.request.install_opener(None)
        sys.stdout, sys.stderr = streams
        sys.argv[:] = argv
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(environ)


def run_train_in_process(args: list[str], cwd: Path, env: dict[str, str], capfd: pytest.CaptureFixture[str],
                         monkeypatch: pytest.MonkeyPatch) -> Ran:
    """`python train.py ARGS` in CWD with exactly the environment ENV, run in this process: train.py executed
    as __main__ (its `one_line_errors(main)`), its exit status from SystemExit, its output from the fds."""
    capfd.readouterr()  # what came before is not the run's
    with _process_state_restored() as at_exit:
        monkeypatch.chdir(cwd)
        for key in set(os.environ) - set(env):
            monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setattr(sys, "argv", [str(TRAIN), *args])
        code: int | str | None = 0
        try:
            runpy.run_path(str(TRAIN), run_name="__main__")
        except SystemExit as exc:
            code = exc.code
        for func, fargs, fkwargs in reversed(at_exit):  # as the interpreter does at exit
            try:
                func(*fargs, **fkwargs)
            except Exception:
                sys.stderr.write("Exception ignored in atexit callback:\n")
                traceback.print_exc()
        if isinstance(code, str):  # sys.exit("message"): the interpreter prints it and exits 1
            sys.stderr.write(f"{code}\n")
        sys.stdout.flush()
        sys.stderr.flush()
        out = capfd.readouterr()
    return Ran(code if isinstance(code, int) else 0 if code is None else 1, out.out, out.err)


def run_train_process(args: list[str], cwd: Path, env: dict[str, str]) -> Ran:
    """`python train.py ARGS`, a real process."""
    result = subprocess.run([sys.executable, str(TRAIN), *args], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=HANG_LIMIT_S)
    return Ran(result.returncode, result.stdout, result.stderr)


@pytest.fixture(scope="module")
def earlier_run(tmp_path_factory) -> Path:
    """A real, finished 1-epoch digits run whose files no bad input may touch."""
    tmp = tmp_path_factory.mktemp("earlier")
    run_dir = tmp / "outputs" / "runs" / "earlier"
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), f"hydra.run.dir={run_dir}", "trainer.max_epochs=1",
         "trainer.limit_train_batches=3", "trainer.enable_progress_bar=false", "logger=csv"],
        cwd=tmp, env=cli_env(tmp), capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return run_dir


def test_catalogue_has_at_least_20_cases():
    assert len(CASES) >= 20 and len({c.id for c in CASES}) == len(CASES)
    assert set(REAL_CLI) <= {c.id for c in CASES}


def _argv(case: Case, extra: list[str]) -> list[str]:
    """The case's arguments; without W&B unless the case is about it."""
    quiet = [] if any(a.startswith("logger") for a in case.args) else ["logger=none"]
    return [*case.args, *extra, *quiet]


Runner = Callable[[list[str], Path, dict[str, str]], Ran]  # (args, cwd, env) -> what the run showed


def _check_bad_input(case: Case, earlier_run: Path, tmp_path: Path, run: Runner) -> tuple[int, str]:
    """Run CASE with RUN (in this process, or a real one) and check that it failed fast, in one line, harming
    nothing. Returns its exit status and error line (TMP_PATH in it as <tmp>)."""
    if case.id == "gpu-without-gpu":
        import torch

        if torch.cuda.is_available():
            pytest.skip("checks the message on a machine without a GPU")
    outputs = earlier_run.parents[1]
    before = snapshot(earlier_run)
    extra = case.prepare(tmp_path, earlier_run) if case.prepare else []
    env = cli_env(tmp_path) | {"NIN_OUTPUT_DIR": str(outputs)} | case.env
    started = time.perf_counter()
    result = run(_argv(case, extra), tmp_path, env)
    elapsed = time.perf_counter() - started
    print(f"{case.id}: exit {result.returncode} in {elapsed:.1f}s: {result.stderr.strip()[-300:]}")
    assert result.returncode != 0 and elapsed < WITHIN_S
    assert not (outputs / "sweeps").exists()  # a sweep with a bad value starts no job
    assert [p.name for p in (outputs / "runs").iterdir()] == [earlier_run.name]  # and a run leaves no run dir
    lines = [ln for ln in error_lines(result.stderr) if ln.startswith("error:")]
    assert len(lines) == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    for needle in case.expect:
        assert needle in lines[0], (needle, lines[0])
    assert snapshot(earlier_run) == before
    return result.returncode, lines[0].replace(str(tmp_path), "<tmp>")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, earlier_run: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str],
                   monkeypatch: pytest.MonkeyPatch):
    def in_process(args: list[str], cwd: Path, env: dict[str, str]) -> Ran:
        return run_train_in_process(args, cwd, env, capfd, monkeypatch)

    _check_bad_input(case, earlier_run, tmp_path, in_process)


@pytest.mark.parametrize("case", [c for c in CASES if c.id in REAL_CLI], ids=[c.id for c in CASES if c.id in REAL_CLI])
def test_bad_input_real_cli(case: Case, earlier_run: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str],
                            monkeypatch: pytest.MonkeyPatch):
    """The process's own exit status and stderr: one line, no traceback (HYDRA_FULL_ERROR unset); the same
    status and line as the case run in this process."""
    (tmp_path / "process").mkdir()
    (tmp_path / "in_process").mkdir()
    real = _check_bad_input(case, earlier_run, tmp_path / "process", run_train_process)

    def in_process(args: list[str], cwd: Path, env: dict[str, str]) -> Ran:
        return run_train_in_process(args, cwd, env, capfd, monkeypatch)

    assert _check_bad_input(case, earlier_run, tmp_path / "in_process", in_process) == real


def _process_fingerprint() -> dict[str, Any]:
    """What a run of train.py changes in its process, and later tests (in this process) would see."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    from nin_lightning.cli import hydra_job

    names = ("", "hydra", "lightning", "lightning.pytorch", "nin_lightning", "torch")
    return {"environ": dict(os.environ), "cwd": os.getcwd(), "argv": list(sys.argv), "main": sys.modules["__main__"],
            "streams": (sys.stdout, sys.stderr), "signals": {sig: signal.getsignal(sig) for sig in _SIGNALS},
            "loggers": {n: (list(logging.getLogger(n).handlers), logging.getLogger(n).level,
                            logging.getLogger(n).propagate) for n in names},
            "warnings": (list(warnings.filters), warnings.showwarning),
            "hydra": (GlobalHydra.instance().is_initialized(), HydraConfig.initialized(), hydra_job.made_for_run)}


@pytest.mark.parametrize("case_id", ["misspelt-key", "bad-value-late-in-a-sweep", "truncated-mnist",
                                     "wandb-project-from-env"])
def test_in_process_run_leaves_the_process_as_it_was(case_id: str, earlier_run: Path, tmp_path: Path,
                                                     capfd: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch):
    """The cases above share this process with each other and with other test files: after a run, the
    environment, working dir, logging, warnings, signal handlers and Hydra's globals are as before."""
    case = next(c for c in CASES if c.id == case_id)
    extra = case.prepare(tmp_path, earlier_run) if case.prepare else []
    env = cli_env(tmp_path) | {"NIN_OUTPUT_DIR": str(tmp_path / "outputs")} | case.env
    before = _process_fingerprint()
    result = run_train_in_process(_argv(case, extra), tmp_path, env, capfd, monkeypatch)
    assert result.returncode != 0 and "error:" in result.stderr
    assert _process_fingerprint() == before


def test_full_traceback_only_with_hydra_full_error(earlier_run: Path, tmp_path: Path):
    env = cli_env(tmp_path) | {"HYDRA_FULL_ERROR": "1"}
    result = subprocess.run([sys.executable, str(ROOT / "train.py"), "model.dropuot=0.3"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=HANG_LIMIT_S)
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_wandb_online_without_network_falls_back_to_offline(tmp_path: Path):
    """logger.mode=online with an unreachable server must not hang: it logs offline and says so."""
    run_dir = tmp_path / "run"
    env = cli_env(tmp_path) | {"WANDB_BASE_URL": "http://127.0.0.1:9", "WANDB_API_KEY": "x" * 40}
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "logger.mode=online", f"hydra.run.dir={run_dir}",
         "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.enable_progress_bar=false"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "unreachable" in result.stdout and list((run_dir / "wandb").glob("offline-run-*"))


def test_earlier_run_dir_is_left_alone_without_resume(earlier_run: Path, tmp_path: Path, capfd, monkeypatch):
    before = snapshot(earlier_run)
    result = run_train_in_process([f"hydra.run.dir={earlier_run}", "logger=none"], tmp_path, cli_env(tmp_path), capfd,
                                  monkeypatch)
    assert result.returncode != 0 and "resume=auto" in result.stderr
    assert snapshot(earlier_run) == before
    shutil.rmtree(tmp_path / "outputs", ignore_errors=True)


def test_config_errors_need_no_torch():
    """A typo costs well under a second: the modules of the config-error path import neither torch nor
    Lightning (importing them takes about 6 s on this machine)."""
    code = ("import sys, nin_lightning.config, nin_lightning.errors, nin_lightning.cli.errors,"
            " nin_lightning.cli.hydra_callbacks, nin_lightning.rundir, nin_lightning.status;"
            " print(sorted(m for m in ('torch', 'lightning') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr[-2000:]
