"""The ablation report on made-up sweeps: a sweep dir, and W&B's public API through a fake `wandb.Api`."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest
import yaml

from nin_lightning.report import cli
from nin_lightning.report.jobs import read_sweep_dir
from nin_lightning.report.table import aggregate, group_keys
from nin_lightning.report.wandb_source import parse_run_name, run_history

# (dropout, seed, status, val/acc_best, test/acc); None status: the job never wrote metrics.json
JOBS = [("0.0", 1, "completed", 0.90, 0.89), ("0.0", 2, "completed", 0.80, 0.81),
        ("0.5", 1, "completed", 0.70, 0.72), ("0.5", 2, "failed", None, None), ("0.7", 1, None, None, None)]


def make_sweep(root: Path) -> Path:
    """A sweep dir as Hydra and train() leave it."""
    sweep = root / "dropout_2026-01-01"
    for num, (dropout, seed, status, val, test) in enumerate(JOBS):
        job = sweep / f"{num}_model.dropout={dropout},seed={seed}"
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(
            [f"model.dropout={dropout}", f"seed={seed}", "trainer.max_epochs=2"]))
        config = {"seed": seed, "model": {"dropout": float(dropout)}}
        (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
        if status is None:
            continue
        metrics = {"status": status, "seed": seed, "epochs": 2, "wall_time_s": 10.0 + seed}
        if status == "completed":
            metrics.update({"val/acc_best": val, "test/acc": test})
        else:
            metrics["error"] = "RuntimeError: boom"
        (job / "metrics.json").write_text(json.dumps(metrics))
        rows = [{"epoch": e, "step": 10 * (e + 1), "epoch_time_s": 1.0, "lr": 0.1, "train/loss": 2.0 - e,
                 "train/acc": 0.5, "val/loss": 1.0, "val/acc": (val or 0.2) - 0.1 * (1 - e), "val/acc_best": val}
                for e in range(2)]
        with (job / "history.csv").open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    (sweep / ".submitit").mkdir()  # launcher files are not jobs
    return sweep


def check_outputs(out: Path, capsys: pytest.CaptureFixture[str]) -> None:
    md = (out / "report.md").read_text()
    assert "5 jobs: 3 completed, 1 failed, 1 incomplete" in md
    table = [ln for ln in md.splitlines() if ln.startswith("| 0.")]
    mean, std = statistics.fmean([0.9, 0.8]), statistics.stdev([0.9, 0.8])
    assert table[0].startswith(f"| 0.0 | 2 | {mean:.4f} ± {std:.4f} |") and table[0].endswith("| 2 ok |")
    assert table[1].startswith("| 0.5 | 1 | 0.7000 |") and table[1].endswith("| 1 ok, 1 FAILED |")
    assert table[2].startswith("| 0.7 | 0 | - |") and table[2].endswith("| 0 ok, 1 incomplete |")
    with (out / "report.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["model.dropout"], r["n_seeds"], r["n_jobs"], r["n_failed"], r["n_incomplete"]) for r in rows] == [
        ("0.0", "2", "2", "0", "0"), ("0.5", "1", "2", "1", "0"), ("0.7", "0", "1", "0", "1")]
    assert float(rows[0]["val/acc_best_mean"]) == pytest.approx(mean)
    assert float(rows[0]["val/acc_best_std"]) == pytest.approx(std, rel=1e-4)
    for name in ("metric_vs_model_dropout.png", "learning_curves.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG" and (out / name).stat().st_size > 5000
    printed = capsys.readouterr().out
    assert str(out / "report.md") in printed and str(out / "learning_curves.png") in printed


def test_sweep_dir_report(tmp_path, capsys):
    sweep = make_sweep(tmp_path)
    assert cli.main([str(sweep)]) == 0
    check_outputs(sweep, capsys)
    assert "RuntimeError: boom" in (sweep / "report.md").read_text()


def test_groups_by_swept_keys_other_than_seed(tmp_path):
    jobs = read_sweep_dir(make_sweep(tmp_path))
    assert group_keys(jobs) == ["model.dropout"]  # trainer.max_epochs is fixed, seed is averaged over
    assert [r.setting["model.dropout"] for r in aggregate(jobs, ["model.dropout"])] == ["0.0", "0.5", "0.7"]


def test_missing_sweep_dir_is_one_line_error(tmp_path, capsys):
    assert cli.main([str(tmp_path / "nope")]) == 1
    assert capsys.readouterr().out.startswith("error: ")
    assert cli.main([str(tmp_path)]) == 1


# ----------------------------------------------------------------------------- W&B public API (faked)
class FakeRun:
    """The attributes of `wandb.apis.public.Run` that the report reads."""

    def __init__(self, dropout: str, seed: int, status: str | None, val: float | None, test: float | None) -> None:
        self.id = f"run{dropout}{seed}"
        self.name = f"model.dropout={dropout},seed={seed},tags=[a,b]"
        self.state = {"completed": "finished", "failed": "failed", None: "running"}[status]
        self.config = {"seed": seed, "model": {"dropout": float(dropout)}, "_wandb": {}}
        self.summary = {"val/acc_best": val, "test/acc": test, "_runtime": 10 + seed}
        self._val = val

    def scan_history(self) -> list[dict]:
        rows = []
        for e in range(2):
            rows += [{"_step": 3 * e, "train/loss_step": 2.5, "epoch": e},
                     {"_step": 3 * e + 1, "val/acc": (self._val or 0.2) - 0.1 * (1 - e), "epoch": e},
                     {"_step": 3 * e + 2, "train/loss_epoch": 2.0 - e, "train/acc": 0.5, "epoch": e}]
        return rows


class FakeApi:
    calls: list = []

    def __init__(self, **kwargs: object) -> None:
        pass

    def runs(self, path: str, filters: dict | None = None) -> list[FakeRun]:
        FakeApi.calls.append((path, filters))
        return [FakeRun(*job) for job in JOBS]


def test_wandb_report_through_the_public_api(tmp_path, monkeypatch, capsys):
    import wandb

    monkeypatch.setattr(wandb, "Api", FakeApi)
    out = tmp_path / "report"
    assert cli.main(["--wandb", "me/nin-lightning", "--group", "dropout_2026-01-01", str(out)]) == 0
    assert FakeApi.calls[-1] == ("me/nin-lightning", {"group": "dropout_2026-01-01"})
    check_outputs(out, capsys)
    with (out / "report.csv").open() as fh:
        first = next(csv.DictReader(fh))
    assert first["epochs_mean"] == "2" and float(first["wall_time_s_mean"]) == pytest.approx(11.5)


def test_wandb_group_without_runs_is_one_line_error(monkeypatch, capsys):
    import wandb

    class Empty(FakeApi):
        def runs(self, path: str, filters: dict | None = None) -> list[FakeRun]:
            return []

    monkeypatch.setattr(wandb, "Api", Empty)
    assert cli.main(["--wandb", "me/p", "--group", "nope"]) == 1
    assert "no W&B runs in group 'nope'" in capsys.readouterr().out


def test_run_names_and_history():
    assert parse_run_name("model.dropout=0.5,tags=[a,b],seed=2") == {
        "model.dropout": "0.5", "tags": "[a,b]", "seed": "2"}
    assert parse_run_name("bright-sun-12") == {}
    merged = run_history(FakeRun("0.0", 1, "completed", 0.9, 0.9).scan_history())
    assert [r["epoch"] for r in merged] == [0.0, 1.0]
    assert merged[1] == {"epoch": 1.0, "val/acc": 0.9, "train/loss": 1.0, "train/acc": 0.5}
