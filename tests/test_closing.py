"""Issue 22: every path out of a begun run closes it (rundir/closing.py), and the limits checked at start."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest
from lightning.pytorch.callbacks import Callback

from nin_lightning import run as run_module
from nin_lightning.config import JobContext
from nin_lightning.errors import UserError
from nin_lightning.rundir import RunDir
from tests.conftest import cli_env, error_lines, read_metrics, train_cmd, wait_for

TINY = ("logger=none", "trainer.enable_progress_bar=false", "model.width=0.5", "model.dropout=0",
        "trainer.max_epochs=1")


def _broken(exc: BaseException):
    def build(*args, **kwargs):
        raise exc
    return build


def test_a_failure_after_the_run_began_ends_it_failed(compose_cfg, tmp_path, monkeypatch):
    """Issue 22's trial (W&B raised after run.begin): the tracker was built outside every close, and
    metrics.json said `running` for good. Now it says failed with the error line, and the lock is free."""
    run_dir = tmp_path / "run"
    monkeypatch.setattr(run_module, "Tracker", _broken(RuntimeError("the tracker broke")))
    with pytest.raises(RuntimeError, match="the tracker broke"):
        run_module.train(compose_cfg(*TINY), JobContext(run_dir=run_dir))
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "failed" and "the tracker broke" in metrics["error"], metrics
    RunDir.claim(run_dir).release()  # the lock was released


def test_a_refusal_before_training_leaves_no_run_dir_but_a_sweep_job_shows_it(compose_cfg, tmp_path, monkeypatch):
    """A refusal (UserError) while the Trainer is assembled, before any epoch: a single run leaves no run dir,
    like a refusal before the run began; a sweep's job keeps its dir, failed, so the sweep shows it."""
    monkeypatch.setattr(run_module, "build_callbacks", _broken(UserError("callbacks.x=1: refused")))
    single = tmp_path / "outputs" / "runs" / "a"
    with pytest.raises(UserError):
        run_module.train(compose_cfg(*TINY), JobContext(run_dir=single, made=tmp_path / "outputs"))
    assert not (tmp_path / "outputs").exists()  # nor the parents the command made
    own = tmp_path / "own"  # a dir that held only the user's train.log: what the start wrote goes, the log stays
    own.mkdir()
    (own / "train.log").write_text("mine\n")
    with pytest.raises(UserError):
        run_module.train(compose_cfg(*TINY), JobContext(run_dir=own))
    assert [p.name for p in own.iterdir()] == ["train.log"]
    job = tmp_path / "sweep" / "0"
    with pytest.raises(UserError):
        run_module.train(compose_cfg(*TINY), JobContext(run_dir=job, multirun=True))
    assert read_metrics(job)["status"] == "failed" and read_metrics(job)["error"] == "callbacks.x=1: refused"


class SignalAtTestStart(Callback):
    """SIGTERM this process when the test phase starts: after fit, before any test batch."""

    def on_test_start(self, trainer, pl_module) -> None:
        os.kill(os.getpid(), signal.SIGTERM)


def test_a_signal_between_fit_and_test_ends_the_run_preempted(compose_cfg, tmp_path, caplog):
    """Issue 22's trial: SIGTERM after `Trainer.fit` stopped killed the process with metrics.json `running`."""
    run_dir = tmp_path / "run"
    with caplog.at_level("INFO", logger="nin_lightning"), pytest.raises(SystemExit) as stop:
        run_module.train(compose_cfg(*TINY), JobContext(run_dir=run_dir), callbacks=[SignalAtTestStart()])
    assert stop.value.code == 143
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "preempted" and "SIGTERM" in metrics["error"], metrics
    assert any("after training, before the test ended; resume=auto" in m for m in caplog.messages), caplog.messages
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # no handler of the run is left behind
    run_module.train(compose_cfg(*TINY, "resume=auto", "trainer.max_epochs=4"), JobContext(run_dir=run_dir))
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "completed" and metrics["test/acc"] > 0.5, metrics  # it learned (chance: 0.1)


def test_a_signal_while_the_trainer_is_set_up_ends_the_run_preempted(compose_cfg, tmp_path, monkeypatch, caplog):
    """SIGTERM before the fit (W&B, callbacks, Trainer being set up) ended the process with `running` too."""
    real = run_module.build_callbacks

    def signalled(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(run_module, "build_callbacks", signalled)
    with caplog.at_level("INFO", logger="nin_lightning"), pytest.raises(SystemExit) as stop:
        run_module.train(compose_cfg(*TINY), JobContext(run_dir=tmp_path / "run"))
    assert stop.value.code == 143 and read_metrics(tmp_path / "run")["status"] == "preempted"
    assert any("stopped by a signal before training; resume=auto" in m for m in caplog.messages), caplog.messages
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


@pytest.mark.slow
def test_cli_sigterm_after_fit_ends_preempted_with_a_line(tmp_path):
    """Through the real CLI: SIGTERM once train.log says `Trainer.fit` stopped (a slow test phase: one image
    per batch) ends the run preempted, exit 143, with a line; metrics.json never stays `running`."""
    run_dir = tmp_path / "run"
    log = run_dir / "train.log"
    proc = subprocess.Popen(train_cmd(*TINY, f"hydra.run.dir={run_dir}", "dataset.eval_batch_size=1"),
                            cwd=tmp_path, env=cli_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        wait_for(lambda: log.is_file() and "`Trainer.fit` stopped" in log.read_text(), 300, "the fit's end",
                 poll_s=0.02)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 143, err[-2000:]
    assert read_metrics(run_dir)["status"] == "preempted"
    assert "stopped by a signal after training, before the test ended; resume=auto" in out + err, (out + err)[-2000:]
    assert not [ln for ln in error_lines(err) if "Traceback" in ln]


def test_closers_run_latest_first_and_each_runs_whatever_the_others_did(tmp_path):
    """RunClosing: metrics.json first, then the closers, the latest registered first (the requeue hand-over,
    registered first, runs last); a closer that fails in a failed run is told and the others still run; a
    judge's replacement is raised from the original."""
    from nin_lightning.rundir.closing import Ending, RunClosing

    run = RunDir.claim(tmp_path / "r")
    run.begin(run.plan("never", None, {}), {}, {"seed": 1})
    order: list[str] = []

    def broken(_closing) -> None:
        order.append("broken")
        raise RuntimeError("W&B is gone")

    with pytest.raises(SystemExit) as stop, RunClosing(run, {"seed": 1}) as closing:
        closing.on_close(lambda c: order.append(f"last:{read_metrics(tmp_path / 'r')['status']}"))
        closing.on_close(broken)
        closing.on_close(lambda c: order.append("first"))
        closing.judge(lambda exc: Ending("preempted", "stopped", SystemExit(143)) if "sig" in str(exc) else None)
        closing.fitting()
        raise RuntimeError("sig")
    assert stop.value.code == 143 and str(stop.value.__cause__) == "sig"
    assert order == ["first", "broken", "last:preempted"]
    assert read_metrics(tmp_path / "r")["error"] == "stopped"


class SignalInEpoch2(Callback):
    """SIGTERM this process after the third step of epoch 2 (as Slurm's preemption would)."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch == 1 and batch_idx == 2:
            os.kill(os.getpid(), signal.SIGTERM)


def test_a_signal_mid_epoch_says_one_line_and_the_run_resumes_from_there(compose_cfg, tmp_path, caplog):
    """Follow-up of issue 23's adversarial check: SIGTERM in an epoch printed `stopped by a signal at epoch 2,
    step N: saved ...` and then `stopped by a signal before training` (false). And the resume check of
    history.csv must take a checkpoint saved mid-epoch (its epoch not in history.csv yet) as whole."""
    run_dir = tmp_path / "run"
    cfg = compose_cfg(*TINY[:-1], "trainer.max_epochs=3")
    with caplog.at_level("INFO", logger="nin_lightning"), pytest.raises(SystemExit) as stop:
        run_module.train(cfg, JobContext(run_dir=run_dir), callbacks=[SignalInEpoch2()])
    lines = [m for m in caplog.messages if "stopped by a signal" in m]
    assert stop.value.code == 143 and len(lines) == 1 and "stopped by a signal at epoch 2, step" in lines[0], lines
    assert (run_dir / "history.csv").read_text().count("\n") == 2  # its header and epoch 1
    run_module.train(compose_cfg(*TINY[:-1], "trainer.max_epochs=3", "resume=auto"), JobContext(run_dir=run_dir))
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "completed" and metrics["epochs"] == 3 and metrics["test/acc"] > 0.5, metrics
    epochs = [line.split(",")[0] for line in (run_dir / "history.csv").read_text().splitlines()[1:]]
    assert epochs == ["1", "2", "3"]


def test_a_signal_in_the_fits_teardown_is_after_training(tmp_path):
    """Seen once in CI: SIGTERM after the last epoch, while `Trainer.fit` tore down, was reported as `stopped at
    epoch 2, step 20` of a 1-epoch run (and last.ckpt saved again). After the fit's last epoch the signal is
    `watching`'s: `stopped by a signal after training`, last.ckpt as the last epoch left it."""
    from types import SimpleNamespace

    from nin_lightning.callbacks import Preempted, PreemptionCheckpoint

    preemption = PreemptionCheckpoint(tmp_path / "last.ckpt")
    preemption.on_train_end(None, None)
    saved: list[object] = []
    trainer = SimpleNamespace(state=SimpleNamespace(fn="fit"), save_checkpoint=saved.append, current_epoch=1,
                              global_step=20)
    preemption.on_exception(trainer, None, Preempted("stopped by a signal outside the fit's epochs"))
    assert saved == [] and not preemption.said
