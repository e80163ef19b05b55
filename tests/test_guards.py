"""Guards: a non-finite loss stops the run cleanly; checkpoint writes are atomic; low disk space warns."""

from __future__ import annotations

import csv
import errno
import hashlib
import re
import subprocess
from collections import namedtuple
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from nin_lightning.config import JobContext
from nin_lightning.errors import UserError
from nin_lightning.rundir import checkpoint_io, disk
from nin_lightning.rundir.checkpoint_io import AtomicCheckpointIO
from nin_lightning.rundir.disk import warn_if_low_disk
from tests.conftest import error_lines, read_metrics, tmpfs


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in error_lines(result.stderr) if ln.startswith("error:")]
    assert result.returncode != 0 and len(lines) == 1, result.stderr[-3000:]
    return lines[0]


def _finite(path: Path) -> bool:
    weights = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    return all(bool(torch.isfinite(t).all()) for t in weights.values() if t.is_floating_point())


@pytest.mark.slow
def test_non_finite_loss_from_the_start_fails_in_one_line_without_checkpoints(run_cli, tmp_path):
    """Issue 12's trial `optimizer.lr=1e6 model.batch_norm=false`: it diverges in its first steps; nothing is
    written from it, and the line says that no checkpoint exists to resume from (not "the last good one
    is kept")."""
    run_dir = tmp_path / "run"
    blown = run_cli(f"hydra.run.dir={run_dir}", "logger=none", "trainer.enable_progress_bar=false",
                    "optimizer.lr=1e6", "model.batch_norm=false", "trainer.max_epochs=2")
    line = _error_line(blown)
    assert "non-finite training loss" in line and "epoch 1, step " in line, line
    assert "none was written before it: start again and lower optimizer.lr" in line, line
    assert not list(run_dir.rglob("*.ckpt"))
    assert read_metrics(run_dir)["status"] == "failed"


@pytest.mark.slow
def test_a_diverged_resume_names_the_good_checkpoint_and_a_lower_lr_resumes_from_it(run_cli, tmp_path):
    """1 good epoch; `resume=auto optimizer.lr=1e6` diverges: last.ckpt stays the good one (finite, byte for
    byte), the line names it and the command; that command with a lower LR then finishes the run. (Before,
    the line named no checkpoint, and with scheduler=constant a resume kept the checkpoint's LR.)"""
    run_dir = tmp_path / "run"
    common = [f"hydra.run.dir={run_dir}", "logger=none", "trainer.enable_progress_bar=false", "experiment=quickstart",
              "scheduler=constant", "model.width=0.5"]
    assert run_cli(*common, "trainer.max_epochs=1").returncode == 0
    last = run_dir / "checkpoints" / "last.ckpt"
    good = _sha(last)
    line = _error_line(run_cli(*common, "resume=auto", "optimizer.lr=1e6", "trainer.max_epochs=3"))
    assert "non-finite training loss" in line and "epoch 2, step " in line, line
    assert re.search(rf"{re.escape(str(last))} \(saved at epoch 1, step \d+\) is the last good one", line), line
    assert f"resume=auto hydra.run.dir={run_dir} optimizer.lr=<lower>" in line, line
    assert _sha(last) == good and _finite(last)
    assert read_metrics(run_dir)["status"] == "failed"
    assert run_cli(*common, "resume=auto", "optimizer.lr=0.1", "trainer.max_epochs=3").returncode == 0
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "completed" and metrics["epochs"] == 3 and metrics["test/acc"] > 0.8


@pytest.mark.slow
def test_a_constant_lr_follows_the_config_after_a_resume(compose_cfg, tmp_path):
    """scheduler=constant has no schedule to re-plan: the resumed optimizer takes the config's LR, not the
    checkpoint's (or `resume=auto optimizer.lr=<lower>`, the fix a divergence names, would change nothing)."""
    from nin_lightning.run import train

    run_dir = tmp_path / "run"
    common = ["scheduler=constant", "logger=none", "trainer.enable_progress_bar=false", "model.width=0.25",
              "trainer.limit_train_batches=3"]
    train(compose_cfg(*common, "trainer.max_epochs=1", "optimizer.lr=0.1"), JobContext(run_dir=run_dir))
    train(compose_cfg(*common, "trainer.max_epochs=2", "optimizer.lr=0.02", "resume=auto"), JobContext(run_dir=run_dir))
    with (run_dir / "history.csv").open() as fh:
        assert [float(row["lr"]) for row in csv.DictReader(fh)] == pytest.approx([0.1, 0.02])


def test_a_resume_takes_the_configs_optimizer_settings_not_the_checkpoints(compose_cfg, tmp_path):
    """Lightning restores the optimizer's param groups whole. `resume=auto optimizer.lr=0.01
    optimizer.weight_decay=0` on a one-cycle run kept max_lr 0.1 and weight decay 5e-4 from the checkpoint:
    the overrides were accepted and silently ignored. Now the config's settings apply from the resumed epoch."""
    from nin_lightning.run import train

    run_dir = tmp_path / "run"
    common = ["scheduler=onecycle", "optimizer=sgd", "logger=none", "trainer.enable_progress_bar=false",
              "model.width=0.25", "trainer.limit_train_batches=3"]
    train(compose_cfg(*common, "trainer.max_epochs=1", "optimizer.lr=0.1", "optimizer.weight_decay=5e-4"),
          JobContext(run_dir=run_dir))
    train(compose_cfg(*common, "trainer.max_epochs=2", "optimizer.lr=0.01", "optimizer.weight_decay=0",
                      "resume=auto"), JobContext(run_dir=run_dir))
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    [group] = saved["optimizer_states"][0]["param_groups"]
    assert (group["max_lr"], group["weight_decay"]) == (pytest.approx(0.01), 0.0)
    with (run_dir / "history.csv").open() as fh:
        lrs = [float(row["lr"]) for row in csv.DictReader(fh)]
    assert len(lrs) == 2 and 0 < lrs[1] <= 0.01


class PoisonBatchNorm(Callback):
    """At the start of EPOCH, one BatchNorm running statistic becomes non-finite, as an overflow of the
    activations leaves it: training (batch statistics) stays finite, evaluation and the weights do not."""

    def __init__(self, epoch: int, buffer: str, value: float) -> None:
        self.epoch, self.buffer, self.value = epoch, buffer, value

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            bn = next(m for m in pl_module.modules() if isinstance(m, torch.nn.BatchNorm2d))
            getattr(bn, self.buffer).fill_(self.value)


@pytest.mark.slow
@pytest.mark.parametrize(("buffer", "value", "what"), [("running_mean", float("nan"), "non-finite validation loss"),
                                                       ("running_var", float("inf"), "non-finite weights")])
def test_a_non_finite_validation_loss_or_weight_is_divergence_too(compose_cfg, tmp_path, buffer, value, what):
    from nin_lightning.run import train

    run_dir = tmp_path / "run"
    cfg = compose_cfg("experiment=quickstart", "logger=none", "trainer.enable_progress_bar=false", "model.width=0.25",
                      "trainer.max_epochs=3", "trainer.limit_train_batches=5")
    with pytest.raises(UserError) as err:
        train(cfg, JobContext(run_dir=run_dir), callbacks=[PoisonBatchNorm(1, buffer, value)])
    message = str(err.value)
    assert message.startswith(what) and "at epoch 2" in message and "saved at epoch 1" in message, message
    last, best = run_dir / "checkpoints" / "last.ckpt", run_dir / "checkpoints" / "best.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=True)["epoch"] == 0 and _finite(last) and _finite(best)
    with (run_dir / "history.csv").open() as fh:
        assert [row["epoch"] for row in csv.DictReader(fh)] == ["1"]  # the diverged epoch is not recorded
    assert read_metrics(run_dir)["status"] == "failed"


@pytest.mark.slow
def test_divergence_after_a_good_epoch_keeps_the_last_good_checkpoint(compose_cfg, tmp_path, monkeypatch):
    from nin_lightning.module import NiNClassifier
    from nin_lightning.run import train

    run_dir = tmp_path / "run"
    common = ["logger=none", "trainer.enable_progress_bar=false", "trainer.limit_train_batches=3"]
    train(compose_cfg(*common, "trainer.max_epochs=1"), JobContext(run_dir=run_dir))
    last = run_dir / "checkpoints" / "last.ckpt"
    before = _sha(last)

    step = NiNClassifier.training_step

    def diverging(self, batch, batch_idx):  # simulate a blow-up in epoch 2
        return step(self, batch, batch_idx) * float("inf")

    monkeypatch.setattr(NiNClassifier, "training_step", diverging)
    with pytest.raises(UserError, match=r"non-finite training loss .* epoch 2, step 3"):
        train(compose_cfg(*common, "trainer.max_epochs=3", "resume=auto"), JobContext(run_dir=run_dir))
    assert _sha(last) == before
    assert read_metrics(run_dir)["status"] == "failed"


def test_atomic_checkpoint_write_replaces_whole_file(tmp_path):
    io = AtomicCheckpointIO()
    target = tmp_path / "last.ckpt"
    io.save_checkpoint({"w": torch.ones(3)}, target)
    io.save_checkpoint({"w": torch.zeros(3)}, target)
    assert torch.equal(torch.load(target)["w"], torch.zeros(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_disk_full_fails_loudly_and_leaves_last_checkpoint_intact(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    target = tmp_path / "last.ckpt"
    io.save_checkpoint({"w": torch.ones(1000)}, target)
    before = _sha(target)

    def no_space(obj, fh, *args, **kwargs):
        fh.write(b"partial bytes")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_io.torch, "save", no_space)
    with pytest.raises(UserError) as err:
        io.save_checkpoint({"w": torch.zeros(1000)}, target)
    assert "disk full" in str(err.value) and str(target) in str(err.value) and "\n" not in str(err.value)
    assert _sha(target) == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temp file left behind


def test_low_disk_space_warns_in_one_line(tmp_path, monkeypatch, caplog):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(disk.shutil, "disk_usage", lambda _: usage(10e9, 9.8e9, 0.2e9))
    with caplog.at_level("INFO", logger="nin_lightning"):  # status lines go through logging (status.py)
        assert warn_if_low_disk(tmp_path, min_free_gb=1.0) == pytest.approx(0.2)
    out = caplog.messages
    assert len(out) == 1 and "only 0.20 GB free" in out[0] and "\n" not in out[0]
    caplog.clear()
    monkeypatch.setattr(disk.shutil, "disk_usage", lambda _: usage(10e9, 1e9, 9e9))
    with caplog.at_level("INFO", logger="nin_lightning"):
        warn_if_low_disk(tmp_path, min_free_gb=1.0)
    assert caplog.messages == []


@pytest.fixture
def small_disk(tmp_path):
    """A real 64 MB filesystem (tmpfs, needs root), so that a run can fill it up."""
    yield from tmpfs(tmp_path / "disk", "64m")


class FillDiskAt(Callback):
    """At the start of `epoch`, remember last.ckpt's hash and fill the run dir's filesystem up."""

    def __init__(self, run_dir: Path, epoch: int) -> None:
        self.run_dir, self.epoch, self.last_sha = run_dir, epoch, None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch != self.epoch:
            return
        self.last_sha = _sha(self.run_dir / "checkpoints" / "last.ckpt")
        with (self.run_dir.parent / "filler").open("wb") as fh:
            try:
                while True:
                    fh.write(b"\0" * (1 << 20))
                    fh.flush()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC


@pytest.mark.slow
def test_a_really_full_disk_fails_loudly_and_the_run_resumes_after(compose_cfg, small_disk):
    from nin_lightning.run import train

    run_dir = small_disk / "run"
    common = ["logger=none", "trainer.enable_progress_bar=false", "model.width=0.25", "trainer.limit_train_batches=3"]
    fill = FillDiskAt(run_dir, epoch=1)
    with pytest.raises(UserError, match=r"disk full while writing .*\.ckpt; the previous checkpoint is intact"):
        train(compose_cfg(*common, "trainer.max_epochs=3"), JobContext(run_dir=run_dir), callbacks=[fill])
    last = run_dir / "checkpoints" / "last.ckpt"
    assert fill.last_sha is not None and _sha(last) == fill.last_sha  # epoch 0's checkpoint, whole
    assert torch.load(last, map_location="cpu", weights_only=False)["epoch"] == 0
    assert not [p.name for p in run_dir.rglob(".*") if p.is_file() and p.name != ".lock"]  # no half-written temp files
    (small_disk / "filler").unlink()
    train(compose_cfg(*common, "trainer.max_epochs=3", "resume=auto"), JobContext(run_dir=run_dir))
    assert read_metrics(run_dir)["status"] == "completed" and read_metrics(run_dir)["epochs"] == 3
