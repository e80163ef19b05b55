"""Issue 22: limits found at the start (memory, processes, job dir names, disk space), and refusals that leave
nothing behind (no run dir, no parent dir the command made, no line in a dir that is not a run dir)."""

from __future__ import annotations

import errno
import os
import resource
import subprocess
from pathlib import Path

import pytest
import torch

from nin_lightning.atomic_files import atomic_write
from nin_lightning.config import validate
from nin_lightning.errors import UserError, one_line
from nin_lightning.rundir.checkpoint_io import AtomicCheckpointIO
from tests.conftest import error_lines, read_metrics, tmpfs


def _error(result: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in error_lines(result.stderr) if ln.startswith("error:")]
    assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    return lines[0]


def test_memory_and_worker_limits_refuse_at_start_leaving_no_dir(run_cli, tmp_path):
    """Issue 22's trials: `dataset.num_workers=10000` forked 690 workers, `model.width=1000` allocated 8 GB before
    it was killed, both leaving run dirs that said `running`. Now each is one line before any work (the width one
    with the estimate and the limit), and neither leaves a dir, outputs/runs/ included."""
    line = _error(run_cli("dataset.num_workers=10000", "logger=none"))
    cpus = len(os.sched_getaffinity(0))
    assert line == (f"error: dataset.num_workers=10000 is more than the {cpus} CPU(s) this process may use; pass "
                    f"dataset.num_workers={cpus} or fewer (0 loads batches in the training process)")
    line = _error(run_cli("model.width=1000", "logger=none"))
    assert line.startswith("error: this run needs at least ") and "of RAM (parameters " in line, line
    assert "GB is available (" in line and line.endswith("lower model.width or dataset.batch_size"), line
    assert not (tmp_path / "outputs").exists()


def test_the_memory_estimate_counts_the_batch_and_the_data(compose_cfg, monkeypatch):
    """The estimate is a lower bound: weights and gradients, the activations a step keeps, the data, x processes
    on CPU; a small run passes and the same run with a batch too large for the RAM available is refused."""
    from nin_lightning.cluster import limits
    from nin_lightning.run import activations, model_size

    conf = validate(compose_cfg("model.width=0.5", "trainer.precision=32-true"))
    params, per_image = model_size(conf)["params"], activations(conf)
    need = params * 8 + per_image * conf.dataset.batch_size * 4 + 1_000_000
    monkeypatch.setattr(limits, "available_ram", lambda: (need, "a test's limit"))
    limits.check_memory(conf, params, per_image, 1_000_000)  # exactly fits
    with pytest.raises(UserError, match=r"needs at least .* but .* is available \(a test's limit\)"):
        limits.check_memory(conf, params, per_image, 1_000_001)
    ddp = validate(compose_cfg("model.width=0.5", "trainer.precision=32-true", "trainer=ddp_cpu",
                               "trainer.devices=2"))
    with pytest.raises(UserError, match=r"x 2 processes\), .* or use fewer devices"):
        limits.check_memory(ddp, params, per_image, 1_000_000)


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 8 MB filesystem (tmpfs, needs root), as in the issue's trial."""
    yield from tmpfs(tmp_path / "disk", "8m")


def test_a_full_disk_inside_torch_save_is_named_and_the_earlier_checkpoint_kept(tiny_disk, tmp_path):
    """Issue 22's trial: on an 8 MB tmpfs torch.save raised `RuntimeError: ... unexpected pos ...`, which the
    "disk full" line did not recognise. The file-size limit (EFBIG) the same way; the file before stays whole."""
    from nin_lightning.atomic_files import out_of_space

    path = tiny_disk / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"w": torch.ones(1000)}, path)
    before = path.read_bytes()
    with pytest.raises(UserError) as full:
        io.save_checkpoint({"w": torch.zeros(3_000_000)}, path)
    assert isinstance(full.value.__cause__.__context__, RuntimeError)  # what torch raised: "unexpected pos"
    assert str(full.value).startswith(f"disk full while writing {path}; the previous checkpoint is intact")
    assert path.read_bytes() == before and sorted(p.name for p in tiny_disk.iterdir()) == ["last.ckpt"]
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, hard))
    try:
        with pytest.raises(UserError, match=r"^file too large while writing .*big\.ckpt; no checkpoint was damaged "
                                            r".*Raise the file-size limit \(ulimit -f\)"):
            io.save_checkpoint({"w": torch.zeros(3_000_000)}, tmp_path / "big.ckpt")
        with pytest.raises(OSError) as other:  # any writer: the one line names the file and the cause
            atomic_write(tmp_path / "metrics.json", "x" * (2 << 20))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert one_line(other.value).startswith(f"file too large while writing {tmp_path / 'metrics.json'} (")
    quota = out_of_space(RuntimeError("x"), tmp_path / "f")
    assert quota is None
    cut = out_of_space(RuntimeError("PytorchStreamWriter failed writing file data/0"), tmp_path / "f")
    assert cut is not None and cut.errno == errno.ENOSPC and cut.filename == str(tmp_path / "f")


def test_a_full_disk_during_a_real_run_is_one_line(run_cli, tiny_disk):
    """Through the CLI: the first checkpoint does not fit the 8 MB disk (about 11 MB): one line naming it, the
    run ends failed (metrics.json written once the temp file is gone), no temp file left."""
    run_dir = tiny_disk / "run"
    line = _error(run_cli(f"hydra.run.dir={run_dir}", "logger=none", "model.width=2", "trainer.max_epochs=1",
                          "trainer.limit_train_batches=1", "trainer.enable_progress_bar=false"))
    assert line.startswith(f"error: disk full while writing {run_dir / 'checkpoints'}/"), line
    assert read_metrics(run_dir)["status"] == "failed"
    assert not [p for p in run_dir.rglob(".*.tmp")]


def test_refusals_leave_no_dir_they_made_and_never_write_into_a_dir_that_is_not_a_run(run_cli, tmp_path):
    """Smaller items of issue 22: `hydra.run.dir=/tmp/a/b/c` refused left /tmp/a/b; `hydra.run.dir=$HOME` trained
    into it and appended to the train.log there."""
    nested = tmp_path / "a" / "b" / "c"
    _error(run_cli(f"hydra.run.dir={nested}", "model.dropout=1.5"))
    assert not (tmp_path / "a").exists()
    home = tmp_path / "myhome"
    home.mkdir()
    (home / "notes.txt").write_text("mine\n")
    (home / "train.log").write_text("my log\n")
    line = _error(run_cli(f"hydra.run.dir={home}", "logger=none", "trainer.max_epochs=1"))
    assert line == (f"error: {home} already holds files and is not a run dir (no metrics.json, .hydra/ or "
                    "checkpoints/): nothing is written there; pass hydra.run.dir=<a new or empty dir>")
    assert sorted(p.name for p in home.iterdir()) == ["notes.txt", "train.log"]
    assert (home / "train.log").read_text() == "my log\n"


def test_job_dir_names_the_filesystem_refuses_stop_the_sweep_before_any_dir(run_cli, tmp_path):
    """Issue 22's trial: a 61-milestone list in every job's dir name; the dry run listed both jobs, the real
    sweep stopped at job 0 with "File name too long; check the path and its permissions" (the wrong fix) and
    left a sweep dir. Now the sweep, dry or real, is refused in one line naming the key to leave out, before
    any dir; a sweep dir too deep for the path limit likewise names hydra.sweep.dir."""
    milestones = f"scheduler.milestones=[{','.join(str(m) for m in range(100, 161))}]"
    sweep = ("-m", "scheduler=multistep", milestones, "trainer.max_epochs=1", "seed=1,2", "logger=none")
    for launcher in ([], ["hydra/launcher=dry"]):
        line = _error(run_cli(*sweep, *launcher))
        assert line.startswith("error: job #0's dir name is 31"), line
        assert "add scheduler.milestones to hydra.job.config.override_dirname.exclude_keys" in line, line
        assert not (tmp_path / "outputs").exists()
    # a job dir over the path limit; and a sweep dir over it itself (17 parts: before, Python's stat of it raised
    # ENAMETOOLONG: a warning, Hydra's own error, exit 1 and a traceback at exit; found under pytest-xdist,
    # whose longer tmp_path pushed the 16-part dir over the limit)
    for parts in (16, 17):
        deep = tmp_path / "/".join(["d" * 250] * parts)
        line = _error(run_cli("-m", "seed=1,2", f"hydra.sweep.dir={deep}", "hydra/launcher=dry"))
        assert line.startswith("error: job #0's dir is a path of ") and "pass a shorter hydra.sweep.dir" in line, line
        assert not (tmp_path / ("d" * 250)).exists()


def test_the_sync_command_of_a_copied_run_dir_names_only_its_own_segments(tmp_path):
    """Issue 22: a copied run dir (continued as a new W&B run) printed `wandb sync .../offline-run-*`, which also
    uploads the original's segments copied with it. The command's glob, run by a shell, finds only its own."""
    from nin_lightning.tracking.wandb_run import sync_command

    run_dir = tmp_path / "copy of run"
    for segment in ("offline-run-20261201_100000-origin01", "offline-run-20261202_100000-abcd1234",
                    "offline-run-20261203_100000-abcd1234"):
        (run_dir / "wandb" / segment).mkdir(parents=True)
    command = sync_command(run_dir, "abcd1234")
    listed = subprocess.run(["bash", "-c", command.replace("wandb sync", "printf '%s\\n'", 1)],
                            capture_output=True, text=True, check=True).stdout.split("\n")
    assert [Path(p).name for p in listed if p] == ["offline-run-20261202_100000-abcd1234",
                                                    "offline-run-20261203_100000-abcd1234"]
