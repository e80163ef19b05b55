"""The real CLI: bad input fails fast with one line; a digits run learns and leaves its artefacts."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, cli_env, error_lines, read_metrics

BAD_INPUT = [
    ("model.dropuot=0.3", "model.dropuot", "model.dropout"),
    ("model.dropout=abc", "model.dropout", "abc"),
    ("model.dropout=1.5", "model.dropout", "1.5"),
    ("model.width=0", "model.width", "> 0"),
    ("dataset=imagenet", "dataset=imagenet", "cifar10"),
]


@pytest.mark.parametrize(("override", "culprit", "hint"), BAD_INPUT)
def test_bad_input_one_line_nonzero_exit(run_cli, tmp_path, override, culprit, hint):
    result = run_cli(override, "logger=none", timeout=60)
    assert result.returncode != 0
    lines = error_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and culprit in lines[0] and hint in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "outputs").exists()  # no dir left, outputs/ included


def test_a_value_out_of_range_is_refused_before_torch_loads(tmp_path):
    """The schema's checks (ranges, types) run before torch and Lightning are imported: a value out of range
    is refused as fast as a typo (benchmarks/refusal_time.py measures both)."""
    code = ("import runpy, sys; sys.argv = ['train.py', 'model.dropout=1.5']\n"
            "try:\n    runpy.run_path({!r}, run_name='__main__')\n"
            "except SystemExit as exc:\n    print('exit', exc.code)\n"
            "print(sorted(m for m in ('torch', 'lightning') if m in sys.modules))").format(str(ROOT / "train.py"))
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=cli_env(tmp_path), capture_output=True,
                            text=True, timeout=120)
    assert "model.dropout=1.5" in result.stderr and "exit 2" in result.stdout, result.stdout + result.stderr
    assert result.stdout.strip().endswith("[]"), result.stdout  # neither was imported
    assert not (tmp_path / "outputs").exists()


def test_traceback_only_with_hydra_full_error(run_cli, tmp_path):
    env = cli_env(tmp_path) | {"HYDRA_FULL_ERROR": "1"}
    result = run_cli("model.width=0", env=env, timeout=60)
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_existing_run_dir_is_not_overwritten(run_cli, tmp_path):
    run_dir = tmp_path / "old"
    run_dir.mkdir()
    (run_dir / "metrics.json").write_text('{"status": "completed"}')
    result = run_cli(f"hydra.run.dir={run_dir}", "logger=none", timeout=120)
    assert result.returncode != 0 and "resume=auto" in error_lines(result.stderr)[-1]
    assert (run_dir / "metrics.json").read_text() == '{"status": "completed"}'


def test_missing_ckpt_path_is_one_line_error(run_cli, tmp_path):
    result = run_cli("ckpt_path=/nonexistent/last.ckpt", "logger=none", timeout=120)
    assert result.returncode != 0
    assert "ckpt_path=/nonexistent/last.ckpt" in error_lines(result.stderr)[-1]


@pytest.mark.slow
def test_digits_run_learns_and_writes_artefacts(run_cli, tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli("experiment=quickstart", "trainer.max_epochs=12", f"hydra.run.dir={run_dir}")  # a pipe: lines
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "completed"
    assert metrics["test/acc"] >= 0.90
    assert metrics["epochs"] == 12 and metrics["wall_time_s"] > 0
    assert 0.0 < metrics["val/acc_best"] <= 1.0
    # exactly one W&B offline run, with the resolved config (no _target_ keys) and the one-line sync hint
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    assert "wandb sync" in result.stdout
    # no library noise on a fresh HOME's console: Lightning's own INFO handler (it adds one at its import, after
    # the config's checks now), matplotlib's first-run font cache line (torchmetrics imports it)
    console = f"{result.stdout}\n{result.stderr}".splitlines()
    noise = [ln for ln in console if ln.startswith("INFO: ") or "fontManager" in ln]
    assert not noise, noise
    assert (run_dir / "checkpoints" / "best.ckpt").is_file() and (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    with (run_dir / "history.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == list(range(1, 13))  # epochs count from 1 (docs/tracking.md)
    assert float(rows[-1]["train/acc"]) > float(rows[0]["train/acc"])
    # the run's log file holds what the console showed: our status lines and one line per epoch
    log = (run_dir / "train.log").read_text()
    assert "[nin] W&B offline run in" in log and f"[nin] completed: test/acc={metrics['test/acc']:.4f}" in log
    assert sum("][nin_lightning][INFO] - epoch " in line for line in log.splitlines()) == 12
    # W&B: each epoch's metrics arrive in ONE row, equal to history.csv's (a stopped logger cannot keep half
    # an epoch), and the test metrics in one row after them
    from tests.wandb_records import offline_runs

    (run,) = offline_runs(run_dir)
    epoch_rows = [r for r in run.history if "val/acc" in r or "train/acc" in r]
    assert [r["epoch"] for r in epoch_rows] == list(range(1, 13))
    for row, csv_row in zip(epoch_rows, rows, strict=True):
        assert {"train/loss", "train/acc", "val/loss", "val/acc", "val/acc_best", "lr"} <= set(row)
        assert row["val/acc"] == pytest.approx(float(csv_row["val/acc"]))
        assert row["train/loss"] == pytest.approx(float(csv_row["train/loss"]))  # history.csv's names
    (test_row,) = [r for r in run.history if "test/acc" in r]
    assert test_row["test/acc"] == pytest.approx(metrics["test/acc"])


@pytest.mark.slow
def test_two_runs_in_the_same_second_never_collide(tmp_path):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = cli_env(tmp_path)
    args = [sys.executable, str(root / "train.py"), "logger=none", "trainer.max_epochs=1", "dataset.val_size=900",
            "trainer.enable_progress_bar=false", "trainer.limit_train_batches=2"]
    procs = [subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for _ in range(2)]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read() if p.stderr else ""
    dirs = sorted((tmp_path / "outputs" / "runs").iterdir())
    assert len(dirs) == 2 and all((d / "metrics.json").is_file() for d in dirs)
    assert os.path.commonpath(dirs) == str(tmp_path / "outputs" / "runs")


def test_a_resumed_run_keeps_its_wandb_run_id_group_and_name(tmp_path, monkeypatch):
    """A second start in the same run dir (resume, requeue) continues the same W&B run: same id, and the
    group and name of the first start, whatever the resume command's own overrides are."""
    from nin_lightning.config import LoggerConfig
    from nin_lightning.rundir.start import wandb_identity
    from nin_lightning.tracking import Tracker
    from tests.wandb_records import offline_runs

    monkeypatch.setenv("HOME", str(tmp_path))
    for key in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(key, raising=False)
    cfg = LoggerConfig(name="wandb", mode="offline")
    first = Tracker(cfg, tmp_path, {"seed": 1}, "dropout_sweep", "model.dropout=0.5,seed=1", ["ablation"])
    first.finish(1)
    again = Tracker(cfg, tmp_path, {"seed": 1}, None, "resume=auto,trainer.max_epochs=60", ["ablation"],
                    identity=wandb_identity(tmp_path))  # what rundir reads when the run continues
    again.finish(0)
    runs = offline_runs(tmp_path)
    assert len(runs) == 2 and len({r.run_id for r in runs}) == 1
    assert {(r.group, r.name) for r in runs} == {("dropout_sweep", "model.dropout=0.5,seed=1")}


def test_a_failed_job_process_is_one_short_line():
    """A sweep job that failed in its own process (submitit) raises with that process's whole output: the CLI
    shows the job's own `error:` line, not a 3 KB dump."""
    from nin_lightning.cli.errors import explain

    dump = "\n".join(["Job (task=0) failed during processing with trace:", "-" * 22, *(["  noise " * 20] * 40),
                      "error: checkpoints/last.ckpt: Not a directory; check the path", "-" * 22,
                      "You can check full logs with 'job.stderr(0)'"])
    assert explain(RuntimeError(dump)) == "checkpoints/last.ckpt: Not a directory; check the path"
    crash = "\n".join(["Job failed:", "Traceback (most recent call last):", '  File "x.py", line 1',
                       "MemoryError: out of memory", "You can check full logs with 'job.stderr(0)'"])
    line = explain(RuntimeError(crash))
    assert line.startswith("MemoryError: out of memory") and "\n" not in line and len(line) < 200
