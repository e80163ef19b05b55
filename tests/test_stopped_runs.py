"""A stopped run says how to continue (issue 25): interrupted, preempted outside Slurm, or failed with a
last.ckpt, its last console line is `python train.py <its overrides> resume=auto hydra.run.dir=<dir>`."""

from __future__ import annotations

import csv
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from nin_lightning.cli.errors import one_line_errors
from nin_lightning.errors import UserError, add_next_step
from nin_lightning.rundir.start import resume_command
from tests.conftest import ROOT, cli_env, history_epochs, read_metrics

QUICK = ["experiment=quickstart", "model.width=0.5", "logger=none"]


def stopped_run(tmp: Path, overrides: list[str], mode: str = "RUN") -> Path:
    """A run dir as a stopped run leaves it: .hydra/ of its start and a last.ckpt (content unread here)."""
    run_dir = tmp / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (run_dir / ".hydra" / "hydra.yaml").write_text(f"hydra:\n  mode: {mode}\n")
    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"x")
    return run_dir


def test_the_command_repeats_the_runs_overrides_quoted_and_drops_resume_and_ckpt_path(tmp_path):
    overrides = ["model.dropout=0.3", "tags=[a,b]", "resume=auto", "ckpt_path=/x/best.ckpt", "+note=a b"]
    run_dir = stopped_run(tmp_path, overrides)
    line = resume_command(run_dir, "interrupted", "runs/my run")
    assert line is not None and line.startswith("to continue: python train.py ")
    assert shlex.split(line.removeprefix("to continue: ")) == ["python", "train.py", "model.dropout=0.3", "tags=[a,b]",
                                                               "+note=a b", "resume=auto", "hydra.run.dir=runs/my run"]
    assert resume_command(run_dir, "failed", "d") is not None
    assert resume_command(run_dir, "preempted", "d") is not None  # outside Slurm: nothing requeues it
    assert resume_command(run_dir, "preempted", "d", requeued=True) is None  # Slurm requeues it by itself
    assert resume_command(run_dir, "completed", "d") is None
    (run_dir / "checkpoints" / "last.ckpt").unlink()
    assert resume_command(run_dir, "failed", "d") is None  # nothing to continue from
    assert resume_command(run_dir, "interrupted", "d") is not None  # stopped in epoch 1: resume=auto starts again
    (run_dir / "history.csv").write_text("epoch,val/acc\n1,0.5\n2,0.6\n")  # 2 epochs, no last.ckpt (save_last=false)
    assert resume_command(run_dir, "interrupted", "d") is None  # resume=auto refuses it: no command that fails


def test_no_single_run_command_for_a_sweeps_job_or_a_run_without_train_py(tmp_path):
    assert resume_command(stopped_run(tmp_path / "a", ["seed=1"], mode="MULTIRUN"), "interrupted", "d") is None
    bare = stopped_run(tmp_path / "b", [])
    (bare / ".hydra" / "overrides.yaml").unlink()  # run.train called from a notebook
    assert resume_command(bare, "interrupted", "d") is None


def test_the_command_line_prints_a_failed_runs_next_step_after_its_error_line(capsys):
    def failing() -> None:
        exc = UserError("loss is nan at epoch 4")
        add_next_step(exc, "to continue: python train.py resume=auto hydra.run.dir=d")
        raise exc

    with pytest.raises(SystemExit) as stopped:
        one_line_errors(failing)
    assert stopped.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["error: loss is nan at epoch 4", "[nin] to continue: python train.py resume=auto hydra.run.dir=d"]


@pytest.mark.slow
@pytest.mark.parametrize("error", [RuntimeError, UserError])
def test_a_run_that_fails_after_a_checkpoint_carries_the_command(compose_cfg, tmp_path, error):
    """A crash in epoch 5 (after 4 epochs' last.ckpt): the exception carries the command, which the command
    line prints after the error line; the run had learned before it failed. A UserError (a diverged loss,
    say) names its own fix instead: the same command would stop the same way."""
    from lightning.pytorch.callbacks import Callback

    from nin_lightning.config import JobContext
    from nin_lightning.run import train

    class FailInEpoch5(Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == 4:
                raise error("a crash in epoch 5")

    run_dir = tmp_path / "run"
    overrides = [*QUICK, "trainer.max_epochs=8"]
    job = JobContext(run_dir=run_dir, hydra_files={"overrides.yaml": "".join(f"- {o}\n" for o in overrides)})
    with pytest.raises(error) as failed:
        train(compose_cfg(*overrides), job, callbacks=[FailInEpoch5()])
    assert read_metrics(run_dir)["status"] == "failed" and history_epochs(run_dir) == [1, 2, 3, 4]
    with (run_dir / "history.csv").open() as fh:
        assert float(list(csv.DictReader(fh))[-1]["val/acc"]) >= 0.5  # it learned before the crash
    expected = [f"[nin] to continue: python train.py {' '.join(overrides)} resume=auto hydra.run.dir={run_dir}"]
    assert getattr(failed.value, "__notes__", []) == (expected if error is RuntimeError else [])


@pytest.mark.slow
def test_ctrl_c_ends_with_the_command_that_continues_the_run(tmp_path):
    """The issue's trial: after Ctrl-C the last line was `[nin] interrupted: test/acc=- -> .../metrics.json`
    and the command that continues it had to be rebuilt from the README. SIGINT after the first epoch line:
    the last line is the command, quoted for the shell, and run as printed it finishes the run."""
    run_dir = tmp_path / "run"
    args = [*QUICK, "tags=[stopped,continued]", "trainer.max_epochs=20"]
    env = cli_env(tmp_path) | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.Popen(["python", "train.py", *args, f"hydra.run.dir={run_dir}"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # as a user presses Ctrl-C once the first epoch is shown
            if line.startswith("epoch 1/"):
                proc.send_signal(signal.SIGINT)
                break
        out, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode != 0 and read_metrics(run_dir)["status"] == "interrupted", err[-3000:]
    last = out.splitlines()[-1]
    assert last.startswith("[nin] to continue: python train.py "), out[-3000:]
    command = last.removeprefix("[nin] to continue: ")
    assert shlex.split(command) == ["python", "train.py", *args, "resume=auto", f"hydra.run.dir={run_dir}"]
    assert "'tags=[stopped,continued]'" in command  # quoted: the shell would glob the brackets

    resumed = subprocess.run(["bash", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "to continue" not in resumed.stdout  # a completed run has nothing to continue
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "completed" and metrics["epochs"] == 20 and metrics["test/acc"] >= 0.9, metrics
    assert history_epochs(run_dir) == list(range(1, 21))


@pytest.mark.parametrize("shown", ["runs/my run", "/tmp/r/sp ace/é=x, y", "runs/a=1,b=2", "it's here", "plain/dir"])
def test_the_printed_command_gives_hydra_the_run_dir_it_names(tmp_path, shown):
    """Follow-up of issue 23's adversarial check: a run dir whose path held `=`, `,` or `é` was printed unquoted
    for Hydra, and the printed command failed (LexerNoViableAltException). Hydra's own parser reads it back."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    line = resume_command(stopped_run(tmp_path, ["seed=1"]), "interrupted", shown)
    assert line is not None
    override = OverridesParser.create().parse_override(shlex.split(line.removeprefix("to continue: "))[-1])
    assert override.key_or_group == "hydra.run.dir" and override.value() == shown
