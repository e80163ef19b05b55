"""The ablation report on made-up sweeps: a sweep dir, W&B's public API faked, and the real W&B client
(in a subprocess) against a closed port and a fake server for its one-line errors."""

from __future__ import annotations

import csv
import http.server
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from nin_lightning.errors import UserError
from nin_lightning.report import cli, wandb_source
from nin_lightning.report.jobs import read_spec, read_sweep_dir
from nin_lightning.report.stats import paired, power, seeds_for, seeds_needed, still_improving, welch
from nin_lightning.report.table import aggregate, group_keys
from nin_lightning.report.wandb_source import explain, parse_run_name, run_history

# (dropout, seed, status, val/acc_best, test/acc); None status: the job never wrote metrics.json
JOBS = [("0.0", 1, "completed", 0.90, 0.89), ("0.0", 2, "completed", 0.80, 0.81),
        ("0.5", 1, "completed", 0.70, 0.72), ("0.5", 2, "failed", None, None), ("0.7", 1, None, None, None)]


def make_sweep(root: Path, multirun: bool = True, dir_names: bool = True) -> Path:
    """A sweep dir as Hydra and train() leave it (`python train.py -m model.dropout=0.0,0.5,0.7 seed=1,2
    trainer.max_epochs=2 logger=csv`); without multirun.yaml, or with job dirs named by number only."""
    sweep = root / "dropout_2026-01-01"
    for num, (dropout, seed, status, val, test) in enumerate(JOBS):
        name = f"model.dropout={dropout},seed={seed},trainer.max_epochs=2"  # override_dirname: logger excluded
        job = sweep / (f"{num}_{name}" if dir_names else str(num))
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(
            [f"model.dropout={dropout}", f"seed={seed}", "trainer.max_epochs=2", "logger=csv"]))
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
    if multirun:
        task = ["model.dropout=0.0,0.5,0.7", "seed=1,2", "trainer.max_epochs=2", "logger=csv"]
        (sweep / "multirun.yaml").write_text(yaml.safe_dump(
            {"hydra": {"overrides": {"hydra": [f"hydra.sweep.dir={sweep}"], "task": task},
                       "sweeper": {"params": None}}, "seed": 42}))
    return sweep


def resume_by_hand(job: Path, max_epochs: int) -> None:
    """What `python train.py resume=auto hydra.run.dir=JOB model.dropout=.. seed=.. trainer.max_epochs=N` leaves."""
    lines = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
    lines = ["resume=auto", *(f"trainer.max_epochs={max_epochs}" if ln.startswith("trainer.") else ln for ln in lines),
             f"ckpt_path={job}/checkpoints/last.ckpt"]
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(lines))
    metrics = json.loads((job / "metrics.json").read_text())
    (job / "metrics.json").write_text(json.dumps(metrics | {"epochs": max_epochs}))


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


@pytest.mark.parametrize(("multirun", "dir_names"), [(True, True), (False, True), (True, False)],
                         ids=["multirun.yaml", "dir-names-only", "numbered-dirs"])
def test_job_resumed_by_hand_keeps_its_row(tmp_path, capsys, multirun, dir_names):
    sweep = make_sweep(tmp_path, multirun=multirun, dir_names=dir_names)
    first = sorted(d for d in sweep.iterdir() if d.name.startswith("0"))[0]
    resume_by_hand(first, max_epochs=4)
    jobs = read_sweep_dir(sweep)
    assert group_keys(jobs) == ["model.dropout"]  # not resume, ckpt_path, nor the raised trainer.max_epochs
    assert jobs[0].changed == {"trainer.max_epochs": "2 -> 4"} and not any(j.changed for j in jobs[1:])
    rows = aggregate(jobs, ["model.dropout"])
    assert [(r.setting["model.dropout"], len(r.jobs)) for r in rows] == [("0.0", 2), ("0.5", 2), ("0.7", 1)]
    assert rows[0].mean["epochs"] == 3.0 and rows[0].jobs_note() == "2 ok, 1 changed"
    assert cli.main([str(sweep)]) == 0
    md = (sweep / "report.md").read_text()
    assert "Swept: model.dropout;" in md and "## Changed after the sweep" in md
    assert f"- `{first.name}`: trainer.max_epochs 2 -> 4" in md
    with (sweep / "report.csv").open() as fh:
        assert [r["n_changed"] for r in csv.DictReader(fh)] == ["1", "0", "0"]


def test_swept_keys_from_multirun_yaml(tmp_path):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    hydra = {"overrides": {"task": ["sweep=dropout", "+foo=1,2", "optimizer.lr=0.1", "scheduler=cosine,onecycle"]},
             "sweeper": {"params": {"model.dropout": "0.0,0.5", "seed": "1,2,3", "optimizer.weight_decay":
                                    "tag(log, interval(1e-5, 1e-2))"}}}
    (sweep / "multirun.yaml").write_text(yaml.safe_dump({"hydra": hydra}))
    spec = read_spec(sweep)
    assert spec is not None
    assert spec.swept == {"foo", "scheduler", "model.dropout", "seed", "optimizer.weight_decay"}
    assert spec.fixed == {"sweep": "dropout", "optimizer.lr": "0.1"}
    assert read_spec(tmp_path) is None


def test_command_line_and_job_overrides_compare_in_hydra_normal_form(tmp_path):
    """The command line says `false` and `1e-4`; Hydra writes `False` and `0.0001` into each job's overrides."""
    sweep = make_sweep(tmp_path)
    spec = yaml.safe_load((sweep / "multirun.yaml").read_text())
    spec["hydra"]["overrides"]["task"] += ["trainer.enable_progress_bar=false", "optimizer.lr=1e-4"]
    (sweep / "multirun.yaml").write_text(yaml.safe_dump(spec))
    for overrides in sweep.glob("*/.hydra/overrides.yaml"):
        lines = yaml.safe_load(overrides.read_text())
        overrides.write_text(yaml.safe_dump([*lines, "trainer.enable_progress_bar=False", "optimizer.lr=0.0001"]))
    jobs = read_sweep_dir(sweep)
    assert len(jobs) == 5 and not any(j.changed for j in jobs), [j.changed for j in jobs]


def test_bad_sweep_dir_raises_one_line_user_error(tmp_path):
    with pytest.raises(UserError, match="no such directory"):
        cli.main([str(tmp_path / "nope")])
    with pytest.raises(UserError, match="no jobs in it"):
        cli.main([str(tmp_path)])
    job = next(d for d in make_sweep(tmp_path).iterdir() if d.name.startswith("0_"))
    with pytest.raises(UserError, match="one job's dir, not a sweep dir; give its parent"):
        cli.main([str(job)])


def run_report(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`python -m nin_lightning.report ARGS`, bounded by `timeout`."""
    return subprocess.run([sys.executable, "-m", "nin_lightning.report", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)


def assert_one_line_error(out: subprocess.CompletedProcess[str], *words: str) -> None:
    assert out.returncode == 2 and out.stdout == "", out.stderr[-2000:]
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("error: ") and "Traceback" not in out.stderr
    assert all(word in out.stderr for word in words), out.stderr


def test_cli_missing_sweep_dir_one_line_on_stderr(tmp_path):
    assert_one_line_error(run_report(str(tmp_path / "nope")), "nope: no such directory")
    full = run_report(str(tmp_path / "nope"), env={"HYDRA_FULL_ERROR": "1"})
    assert full.returncode != 0 and "Traceback" in full.stderr and "no such directory" in full.stderr


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
    monkeypatch.setattr(wandb_source, "connect", FakeApi)
    out = tmp_path / "report"
    assert cli.main(["--wandb", "me/nin-lightning", "--group", "dropout_2026-01-01", str(out)]) == 0
    assert FakeApi.calls[-1] == ("me/nin-lightning", {"group": "dropout_2026-01-01"})
    check_outputs(out, capsys)
    with (out / "report.csv").open() as fh:
        first = next(csv.DictReader(fh))
    assert first["epochs_mean"] == "2" and float(first["wall_time_s_mean"]) == pytest.approx(11.5)


def test_wandb_group_without_runs_is_one_line_error(monkeypatch):
    class Empty(FakeApi):
        def runs(self, path: str, filters: dict | None = None) -> list[FakeRun]:
            return []

    monkeypatch.setattr(wandb_source, "connect", Empty)
    with pytest.raises(UserError, match="W&B: no runs in group 'nope' of me/p; check --group"):
        cli.main(["--wandb", "me/p", "--group", "nope"])


def test_wandb_errors_name_cause_and_fix():
    from wandb.errors import AuthenticationError, CommError, UsageError

    assert "run `wandb login`" in explain(UsageError("No API key configured. Use `wandb login` to log in."), "me/p")
    assert "`wandb login --relogin`" in explain(AuthenticationError("returned error 401"), "me/p")
    assert "did not answer in time" in explain(AuthenticationError("the service process is busy and did not "
                                                                   "respond in time."), "me/p")
    assert "no project me/p" in explain(ValueError("Could not find project p"), "me/p")
    assert "check --wandb ENTITY/PROJECT" in explain(CommError("permission denied"), "me/p")


class FakeWandbServer(http.server.BaseHTTPRequestHandler):
    """Just enough W&B GraphQL: any API key is valid, no project exists."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        query = json.loads(body or b"{}").get("query", "") if self.path == "/graphql" else ""
        data = {"viewer": {"id": "u1", "entity": "me", "username": "me", "flags": "{}", "teams": {"edges": []}}}
        out = json.dumps({"data": data if "viewer" in query else {"project": None}}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_HEAD = do_POST

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def wandb_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeWandbServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join(timeout=10)


@pytest.mark.parametrize("case", ["unreachable", "no-key", "no-project"])
def test_cli_wandb_errors_one_line_and_fast(tmp_path, wandb_server, case):
    """The real W&B client against a closed port or a fake server: one line on stderr, quickly."""
    env = {"HOME": str(tmp_path), "WANDB_CONFIG_DIR": str(tmp_path), "WANDB_DIR": str(tmp_path),
           "WANDB_BASE_URL": "http://127.0.0.1:9" if case == "unreachable" else wandb_server,
           "WANDB_API_KEY": "" if case == "no-key" else "x" * 40}
    started = time.monotonic()
    out = run_report("--wandb", "me/p", "--group", "g", str(tmp_path / "out"), env=env)
    assert time.monotonic() - started < 30
    words = {"unreachable": ["cannot reach the server http://127.0.0.1:9", "WANDB_BASE_URL"],
             "no-key": ["no API key", "wandb login"], "no-project": ["no project me/p", "--wandb ENTITY/PROJECT"]}
    assert_one_line_error(out, *words[case])
    assert not (tmp_path / "out").exists()


def test_run_names_and_history():
    assert parse_run_name("model.dropout=0.5,tags=[a,b],seed=2") == {
        "model.dropout": "0.5", "tags": "[a,b]", "seed": "2"}
    assert parse_run_name("bright-sun-12") == {}
    merged = run_history(FakeRun("0.0", 1, "completed", 0.9, 0.9).scan_history())
    assert [r["epoch"] for r in merged] == [0.0, 1.0]
    assert merged[1] == {"epoch": 1.0, "val/acc": 0.9, "train/loss": 1.0, "train/acc": 0.5}


def test_one_bad_job_is_marked_and_the_rest_reported(tmp_path, capsys):
    """A corrupt metrics.json, a garbled overrides.yaml, a binary history.csv: each marks its job, naming the file,
    and the other jobs are reported. A job dir holding only .hydra/ and a train.log with an `error:` line (it
    failed before writing metrics.json) is failed, not incomplete."""
    sweep = make_sweep(tmp_path)
    jobs = sorted(d for d in sweep.iterdir() if d.is_dir() and not d.name.startswith("."))
    (jobs[0] / "metrics.json").write_text('{"status": "compl')
    (jobs[1] / ".hydra" / "overrides.yaml").write_text("{{{ [")
    (jobs[2] / "history.csv").write_bytes(b"\x00\xff\xfe" * 50)
    (jobs[4] / "train.log").write_text("[2026-01-01][nin_lightning][ERROR] - error: dataset.root=/x: not found\n")
    by_name = {j.name: j for j in read_sweep_dir(sweep)}
    assert "metrics.json is unreadable" in by_name[jobs[0].name].error and not by_name[jobs[0].name].ok
    assert "overrides.yaml is unreadable" in by_name[jobs[1].name].error
    assert "history.csv is unreadable" in by_name[jobs[2].name].error and by_name[jobs[2].name].history == []
    assert by_name[jobs[4].name].status == "failed" and by_name[jobs[4].name].error == "dataset.root=/x: not found"
    assert cli.main([str(sweep)]) == 0
    md = (sweep / "report.md").read_text()
    assert str(jobs[0] / "metrics.json") in md and "| 0.5 |" in md


# ----------------------------------------------------------------------------- trust, pairing, power, convergence
REAL_SWEEP = Path(__file__).parent / "data" / "report_sweep"  # a real 2x2 sweep's files (its README.md)


def real_sweep(root: Path) -> tuple[Path, list[Path]]:
    """A copy of the real sweep dir, and its job dirs in job order."""
    sweep = root / "s"
    shutil.copytree(REAL_SWEEP, sweep, ignore=shutil.ignore_patterns("README.md"))
    return sweep, sorted(d for d in sweep.iterdir() if d.is_dir())


MISSING = object()


def set_metric(job: Path, key: str, value: object) -> None:
    """Edit one key of a job's metrics.json (a value of MISSING removes it)."""
    metrics = json.loads((job / "metrics.json").read_text())
    if value is MISSING:
        metrics.pop(key)
    else:
        metrics[key] = value
    (job / "metrics.json").write_text(json.dumps(metrics, indent=2))


def test_issue22_trial_a_true_test_acc_is_named_and_not_used_through_the_cli(tmp_path):
    """The issue's trial: one job of the real 2x2 sweep says `test/acc: true`. Before: the dropout=0.0 cell was
    0.7972 ± 0.2868 ('2 ok', a CI and a p-value); now that job is named on the console and in report.md and
    counted apart, and the cell is the other seed's value."""
    sweep, jobs = real_sweep(tmp_path)
    kept = json.loads((jobs[0] / "metrics.json").read_text())["test/acc"]
    set_metric(jobs[1], "test/acc", True)
    out = run_report(str(sweep))
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"[nin] {jobs[1].name}: not used: test/acc is true (a bool, not a number)" in out.stdout
    md = (sweep / "report.md").read_text()
    row = next(ln for ln in md.splitlines() if ln.startswith("| 0.0 |"))
    assert row.startswith("| 0.0 | 1 | ") and f"| {kept:.4f} |" in row and row.endswith("| 1 ok, 1 NOT USED |")
    assert "0.7972" not in md and "1 not used" in md
    assert f"- `{jobs[1].name}`: **rejected**: not used: test/acc is true (a bool, not a number)" in md
    with (sweep / "report.csv").open() as fh:
        first = next(csv.DictReader(fh))
    assert (first["n_seeds"], first["n_rejected"], float(first["test/acc_mean"])) == ("1", "1", pytest.approx(kept))


def test_the_real_sweep_untouched_is_the_issues_numbers(tmp_path, capsys):
    sweep, _ = real_sweep(tmp_path)
    assert cli.main([str(sweep)]) == 0
    md = (sweep / "report.md").read_text()
    assert "| 0.0 | 2 | " in md and "0.6764 ± 0.1159" in md and "not used" not in capsys.readouterr().out


@pytest.mark.parametrize(("key", "value", "why"), [
    ("test/acc", True, "test/acc is true (a bool, not a number)"),
    ("test/acc", "0.99", "test/acc is '0.99' (text, not a number)"),
    ("test/acc", float("nan"), "test/acc is nan (not a finite number)"),
    ("test/acc", float("inf"), "test/acc is inf (not a finite number)"),
    ("test/acc", 1.5, "test/acc is 1.5, outside [0, 1]"),
    ("test/acc", -0.1, "test/acc is -0.1, outside [0, 1]"),
    ("test/acc", None, "test/acc is missing"),
    ("test/acc", MISSING, "test/acc is missing"),
    ("test/acc", [0.9], "test/acc is [0.9] (list, not a number)"),
    ("val/acc_best", 2.0, "val/acc_best is 2, outside [0, 1]"),
    ("val/acc_best", MISSING, "val/acc_best is missing"),
    ("epochs", "2", "epochs is '2' (text, not a number)"),
    ("wall_time_s", -3.0, "wall_time_s is -3, below 0"),
    ("epochs", 2.5, "epochs is 2.5, not a whole number"),
    ("params", False, "params is false (a bool, not a number)"),
], ids=["bool", "text", "nan", "inf", "above-1", "below-0", "null", "missing", "list", "val-above-1", "val-missing",
        "epochs-text", "negative-wall-time", "epochs-fraction", "params-bool"])
def test_a_value_the_report_cannot_trust_leaves_its_job_out(tmp_path, capsys, key, value, why):
    sweep, jobs = real_sweep(tmp_path)
    kept = json.loads((jobs[0] / "metrics.json").read_text())["test/acc"]
    set_metric(jobs[1], key, value)
    assert cli.main([str(sweep)]) == 0
    assert f"[nin] {jobs[1].name}: not used: {why}" in capsys.readouterr().out
    md = (sweep / "report.md").read_text()
    assert f"- `{jobs[1].name}`: **rejected**: not used: {why}" in md
    row = next(ln for ln in md.splitlines() if ln.startswith("| 0.0 |"))
    assert row.startswith("| 0.0 | 1 | ") and f"| {kept:.4f} |" in row and row.endswith("| 1 ok, 1 NOT USED |")


def test_a_metrics_json_that_is_not_json_leaves_its_job_out(tmp_path, capsys):
    sweep, jobs = real_sweep(tmp_path)
    (jobs[1] / "metrics.json").write_text('{"status": "completed", "test/acc": 0.9')
    assert cli.main([str(sweep)]) == 0
    printed = capsys.readouterr().out
    assert f"[nin] {jobs[1].name}: {jobs[1] / 'metrics.json'} is unreadable (ValueError: not JSON)" in printed
    md = (sweep / "report.md").read_text()
    assert f"- `{jobs[1].name}`: **rejected**: {jobs[1] / 'metrics.json'} is unreadable" in md
    assert next(ln for ln in md.splitlines() if ln.startswith("| 0.0 |")).endswith("| 1 ok, 1 NOT USED |")


@pytest.mark.parametrize(("key", "value", "metric"), [("dataset.name", "mnist", None), ("model.width", 0.5, 91000)],
                         ids=["another-dataset", "another-width"])
def test_a_job_of_another_dataset_or_model_shape_is_not_pooled(tmp_path, capsys, key, value, metric):
    """A job whose config (e.g. resumed by hand into another dataset) or model size differs from the rest of its
    setting is named and left out: never pooled into the setting's mean."""
    sweep, jobs = real_sweep(tmp_path)
    config = yaml.safe_load((jobs[1] / ".hydra" / "config.yaml").read_text())
    section, name = key.split(".")
    config[section][name] = value
    (jobs[1] / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    if metric is not None:
        set_metric(jobs[1], "params", metric)
    assert cli.main([str(sweep)]) == 0
    printed = capsys.readouterr().out
    assert f"[nin] {jobs[1].name}: not used: {key}={value}, but " in printed, printed
    assert "(another dataset or model shape is never pooled)" in printed
    md = (sweep / "report.md").read_text()
    assert next(ln for ln in md.splitlines() if ln.startswith("| 0.0 |")).endswith("| 1 ok, 1 NOT USED |")


def test_paired_and_welch_statistics_match_scipy():
    from scipy import stats as sp

    x = {"1": 0.81, "2": 0.84, "3": 0.79, "4": 0.83}
    y = {"1": 0.78, "2": 0.80, "3": 0.78, "5": 0.70}  # seed 5 has no partner: left out of the pairs
    got = paired(x, y)
    ref = sp.ttest_rel([0.81, 0.84, 0.79], [0.78, 0.80, 0.78])
    d = [0.03, 0.04, 0.01]
    half = sp.t.ppf(0.975, 2) * statistics.stdev(d) / math.sqrt(3)
    assert got.p == pytest.approx(ref.pvalue) and got.diff == pytest.approx(statistics.fmean(d))
    assert (got.low, got.high) == pytest.approx((statistics.fmean(d) - half, statistics.fmean(d) + half))
    assert paired({"1": 0.8, "2": 0.9}, {"1": 0.7, "3": 0.6}).p is None  # one shared seed: no test
    assert welch(list(x.values()), list(y.values())).p == pytest.approx(
        sp.ttest_ind(list(x.values()), list(y.values()), equal_var=False).pvalue)


def test_seeds_needed_for_80_percent_power_matches_known_sample_sizes():
    """G*Power's (and statsmodels') t-test sample sizes for power 0.8, alpha 0.05 two-sided: two-sample d=1 -> 17
    and d=0.5 -> 64 per group; paired dz=0.5 -> 34 pairs."""
    assert seeds_needed(1.0, sds=(1.0, 1.0)) == 17 and seeds_needed(0.01, sds=(0.02, 0.02)) == 64
    assert seeds_needed(0.5, paired_sd=1.0) == 34 and seeds_needed(-0.5, paired_sd=1.0) == 34
    assert power(1.0, 17, sds=(1.0, 1.0)) >= 0.8 > power(1.0, 16, sds=(1.0, 1.0))
    assert seeds_needed(0.0, sds=(1.0, 1.0)) is None and seeds_needed(1e-6, paired_sd=1.0) is None  # > MAX_SEEDS
    assert seeds_for({"1": 0.8, "2": 0.9}, {"1": 0.7, "2": 0.75}, use_paired=False)[0] == seeds_needed(
        0.125, sds=(statistics.stdev([0.8, 0.9]), statistics.stdev([0.7, 0.75])))
    assert seeds_for({"1": 0.8, "2": 0.9}, {"1": 0.7, "2": 0.75}, True, min_effect=0.01)[0] == seeds_needed(
        0.01, paired_sd=statistics.stdev([0.1, 0.15]))


def test_still_improving_looks_at_the_last_fifth_of_the_epochs():
    assert still_improving([0.3, 0.5, 0.6, 0.7, 0.8]) is True
    assert still_improving([0.3, 0.8, 0.82, 0.81, 0.80]) is False  # the best came before the last 2 epochs
    assert still_improving([0.1] * 8 + [0.5, 0.4] + [0.3] * 10) is False  # 20 epochs: the last 4 look no better
    assert still_improving([0.1] * 16 + [0.5, 0.4, 0.3, 0.2]) is True
    assert still_improving([0.5]) is None


HELD = {"model.dropout": "0.0", "model.width": "0.25"}  # build_sweep: the values of the keys it does not sweep


def build_sweep(root: Path, key: str, settings: tuple[str, str], test_acc: dict[tuple[str, int], float],
                val_curves: dict[str, list[float]]) -> Path:
    """A sweep dir of `python train.py -m dataset=digits KEY=A,B seed=1,2,3 ...` in the real sweep's layout (job dir
    names, .hydra/, metrics.json keys, history.csv columns), with the given test/acc per (setting, seed) and
    val/acc per epoch per setting."""
    template = sorted(d for d in REAL_SWEEP.iterdir() if d.is_dir())[0]
    config0 = yaml.safe_load((template / ".hydra" / "config.yaml").read_text())
    metrics0 = json.loads((template / "metrics.json").read_text())
    sweep = root / "sweep"
    seeds = sorted({s for _, s in test_acc})
    for num, ((setting, seed), acc) in enumerate(sorted(test_acc.items())):
        curve = val_curves[setting]
        others = HELD | {key: setting}
        job = sweep / f"{num:03d}_{key}={setting},seed={seed}"  # a sweep job's dir: its swept keys
        (job / ".hydra").mkdir(parents=True)
        config = json.loads(json.dumps(config0))
        config["seed"], config["trainer"]["max_epochs"] = seed, len(curve)
        config["model"]["dropout"], config["model"]["width"] = (float(others[k]) for k in ("model.dropout",
                                                                                           "model.width"))
        (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(
            ["dataset=digits", f"{key}={setting}", f"seed={seed}", f"trainer.max_epochs={len(curve)}",
             *(f"{k}={v}" for k, v in others.items() if k != key), "logger=none"], sort_keys=False))
        params = metrics0["params"] * (4 if others["model.width"] == "0.5" else 1)
        (job / "metrics.json").write_text(json.dumps(metrics0 | {
            "seed": seed, "test/acc": acc, "val/acc_best": max(curve), "epochs": len(curve), "params": params}))
        with (job / "history.csv").open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["epoch", "step", "epoch_time_s", "lr", "train/loss", "train/acc", "val/loss", "val/acc",
                             "val/acc_best"])
            for e, val in enumerate(curve, start=1):
                train = min(1.0, val + 0.05 + 0.01 * seed)
                writer.writerow([e, 20 * e, 0.1, 0.1, 2.0 / e, train, 2.2 / e, val + 0.01 * seed, max(curve[:e])])
    task = ["dataset=digits", f"{key}={','.join(settings)}", f"seed={','.join(map(str, seeds))}",
            f"trainer.max_epochs={len(next(iter(val_curves.values())))}",
            *(f"{k}={v}" for k, v in HELD.items() if k != key), "logger=none"]
    multirun = yaml.safe_load((REAL_SWEEP / "multirun.yaml").read_text())
    multirun["hydra"]["overrides"]["task"] = task
    (sweep / "multirun.yaml").write_text(yaml.safe_dump(multirun, sort_keys=False))
    return sweep


ACC = {("0.0", 1): 0.81, ("0.0", 2): 0.86, ("0.0", 3): 0.78, ("0.5", 1): 0.78, ("0.5", 2): 0.82, ("0.5", 3): 0.77}
CURVES = {"0.0": [0.3, 0.8, 0.82, 0.81, 0.80], "0.5": [0.3, 0.5, 0.6, 0.7, 0.8]}


def test_two_settings_three_seeds_report_paired_columns_seeds_needed_convergence_and_plot(tmp_path, capsys):
    from scipy import stats as sp

    sweep = build_sweep(tmp_path, "model.dropout", ("0.0", "0.5"), ACC, CURVES)
    assert cli.main([str(sweep), "--baseline", "model.dropout=0.0"]) == 0
    with (sweep / "report.csv").open() as fh:
        rows = {r["model.dropout"]: r for r in csv.DictReader(fh)}
    x, y = [ACC["0.5", s] for s in (1, 2, 3)], [ACC["0.0", s] for s in (1, 2, 3)]
    ref = sp.ttest_rel(x, y)
    low, high = ref.confidence_interval(0.95)
    got = rows["0.5"]
    assert float(got["diff_paired"]) == pytest.approx(statistics.fmean(x) - statistics.fmean(y), rel=1e-5)
    assert float(got["p_paired"]) == pytest.approx(ref.pvalue, rel=1e-5)
    assert (float(got["ci_low_paired"]), float(got["ci_high_paired"])) == pytest.approx((low, high), rel=1e-5)
    assert float(got["p_welch"]) == pytest.approx(sp.ttest_ind(x, y, equal_var=False).pvalue, rel=1e-5)
    assert float(got["p_paired"]) < float(got["p_welch"])  # the seeds' shared start and data order cancel out
    needed = seeds_for(dict(zip("123", x, strict=True)), dict(zip("123", y, strict=True)), True)[0]
    assert needed is not None and int(got["seeds_needed"]) == needed
    assert (got["still_improving"], rows["0.0"]["still_improving"]) == ("true", "false")
    assert rows["0.0"]["diff_paired"] == rows["0.0"]["seeds_needed"] == ""  # the baseline
    md = (sweep / "report.md").read_text()
    header = next(ln for ln in md.splitlines() if ln.startswith("| model.dropout"))
    assert all(col in header for col in ("Δ paired", "95% CI paired", "p (paired)", "seeds needed", "still improving",
                                         "wall_time_s (this machine)"))
    improving = [ln for ln in md.splitlines() if "still improving: compare with care" in ln and ln.startswith("| 0")]
    assert [ln.split(" |")[0] for ln in improving] == ["| 0.5"]
    assert "- **Images**: 1,257 train / 180 validation / 360 test" in md
    assert "not compared between settings" in md and "Every fixed setting" in md and "model.width: 0.25" in md
    assert "Pairing is valid when" in md
    png = sweep / "curves_train_val.png"
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 5000 and str(png) in capsys.readouterr().out
    assert cli.main([str(sweep), "--baseline", "model.dropout=0.0", "--min-effect", "0.01"]) == 0
    with (sweep / "report.csv").open() as fh:
        at_effect = {r["model.dropout"]: r for r in csv.DictReader(fh)}["0.5"]["seeds_needed"]
    assert int(at_effect) == seeds_for(dict(zip("123", x, strict=True)), dict(zip("123", y, strict=True)), True,
                                       min_effect=0.01)[0]


def test_settings_of_another_model_shape_are_not_paired(tmp_path):
    sweep = build_sweep(tmp_path, "model.width", ("0.25", "0.5"),
                        {(w, s): a for (d, s), a in ACC.items() for w in [{"0.0": "0.25", "0.5": "0.5"}[d]]},
                        {"0.25": CURVES["0.0"], "0.5": CURVES["0.5"]})
    assert cli.main([str(sweep), "--baseline", "model.width=0.25"]) == 0
    with (sweep / "report.csv").open() as fh:
        wide = {r["model.width"]: r for r in csv.DictReader(fh)}["0.5"]
    assert wide["diff_paired"] == wide["p_paired"] == "" and wide["p_welch"] != ""
    assert wide["note_paired"].startswith("not paired: differs in model.width 0.5 vs 0.25")
    assert "- model.width=0.5: not paired: differs in model.width 0.5 vs 0.25" in (sweep / "report.md").read_text()


def test_min_effect_must_be_a_difference_in_accuracy(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main([str(tmp_path), "--min-effect", "0"])
    assert "--min-effect 0: give a difference in test/acc between 0 and 1" in capsys.readouterr().err


def test_seeds_needed_never_grows_as_the_effect_grows():
    """Fresh-eyes try: at an observed paired difference of 0.3074 (sd 0.05) seeds_needed said 6, at 0.2 it said 4,
    at 0.31 3: scipy's noncentral t gave NaN far in its lower tail and those n were skipped."""
    from nin_lightning.report.stats import power, seeds_needed

    needed = [seeds_needed(effect, paired_sd=0.05) for effect in (0.05, 0.1, 0.2, 0.3074, 0.31, 0.5)]
    assert needed == sorted(needed, reverse=True) and needed[3] <= 3, needed
    assert all(0.0 <= power(0.3074, n, paired_sd=0.05) <= 1.0 for n in range(2, 10))


def test_one_shared_seed_leaves_every_paired_column_blank():
    """Fresh-eyes try: with one seed per setting diff_paired showed that seed's difference, its CI blank."""
    from nin_lightning.report.stats import paired

    one = paired({"1": 0.5}, {"1": 0.4})
    assert (one.diff, one.low, one.high, one.p) == (None, None, None, None) and "too few shared seeds" in one.note


def renamed_sweep(sweep: Path, where: Path, old: str = "model.dropout", new: str = "model.width") -> Path:
    """A copy of SWEEP that swept NEW where it swept OLD (dir names, overrides, configs and multirun.yaml)."""
    shutil.copytree(sweep, where)
    for path in sorted(where.rglob("*"), key=lambda p: -len(p.parts)):
        if path.is_file() and path.suffix in (".yaml", ".json", ".csv"):
            path.write_text(path.read_text().replace(old, new).replace("dropout", new.split(".")[1]))
        if old in path.name:
            path.rename(path.with_name(path.name.replace(old, new)))
    return where


def test_adversarial_report_inputs_are_left_out_or_named(tmp_path, capsys):
    """Follow-up of issue 23's adversarial check: a huge integer or a deeply nested metrics.json crashed the whole
    report (OverflowError, RecursionError), a history.csv with a repeated epoch skewed the mean curves, and a
    garbled multirun.yaml gave a parser's error naming no file. Now each job is left out, naming why, or the file
    is named in one line."""
    sweep = make_sweep(tmp_path)
    jobs = sorted(p for p in sweep.iterdir() if p.name[0].isdigit())
    metrics = json.loads((jobs[0] / "metrics.json").read_text())
    (jobs[0] / "metrics.json").write_text(json.dumps(metrics).replace('"epochs": 2', '"epochs": 1' + "0" * 400))
    (jobs[1] / "metrics.json").write_text("[" * 100_000 + "]" * 100_000)
    history = (jobs[2] / "history.csv").read_text().splitlines()
    (jobs[2] / "history.csv").write_text("\n".join([*history, history[-1]]) + "\n")  # epoch 1 twice
    assert cli.main([str(sweep)]) == 0
    printed = capsys.readouterr().out
    assert f"{jobs[0].name}: not used: epochs is an integer of 1329 bits (too large)" in printed, printed
    assert f"{jobs[1].name}: {jobs[1] / 'metrics.json'} is unreadable (ValueError: nested too deeply)" in printed
    by_name = {j.name: j for j in read_sweep_dir(sweep)}
    assert "epoch 1 is repeated, missing before it or out of order" in by_name[jobs[2].name].error
    assert by_name[jobs[2].name].history == [] and by_name[jobs[2].name].ok  # its result counts, its curve does not
    (sweep / "multirun.yaml").write_bytes(b"\xff\xfe: : [")
    with pytest.raises(UserError, match=r"multirun\.yaml is unreadable \(UnicodeDecodeError\); restore it"):
        cli.main([str(sweep)])


def test_compare_writes_one_table_of_every_sweeps_keys_or_nothing(tmp_path, capsys):
    """Follow-up of issue 23's adversarial check: `--compare` of sweeps of different keys wrote report.csv rows
    whose cells sat under other columns (the header was the first sweep's); a bad later sweep left a partial
    report.csv beside the old report.md; two runs at once wrote every row twice; the same sweep twice and
    `--baseline KEY` without a value were taken without a word. Now: one header of every key, written whole."""
    a = make_sweep(tmp_path / "a")
    b = renamed_sweep(a, tmp_path / "b" / "width_sweep")
    out = tmp_path / "cmp"
    assert cli.main(["--compare", str(a), str(b), "--out", str(out)]) == 0
    with (out / "report.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0])[:4] == ["sweep", "model.dropout", "model.width", "n_seeds"]
    assert [(r["sweep"], r["model.dropout"], r["model.width"], r["n_seeds"]) for r in rows] == [
        (a.name, "0.0", "", "2"), (a.name, "0.5", "", "1"), (a.name, "0.7", "", "0"),
        ("width_sweep", "", "0.0", "2"), ("width_sweep", "", "0.5", "1"), ("width_sweep", "", "0.7", "0")]
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no jobs in it"):
        cli.main(["--compare", str(b), str(a), str(tmp_path / "empty"), "--out", str(out)])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing written: every sweep is read first
    with pytest.raises(UserError, match=f"--compare names {a} twice"):
        cli.main(["--compare", str(a), str(b), str(a)])
    capsys.readouterr()
    twice = ["--baseline", "model.dropout=0.0", "--baseline", "model.dropout=0.5"]
    for argv in (["--baseline", "model.dropout"], twice):
        with pytest.raises(SystemExit) as exit_info:
            cli.main([str(a), *argv])
        err = capsys.readouterr().err.strip().splitlines()
        assert exit_info.value.code == 2 and len(err) == 1 and "--baseline" in err[0], err
    (tmp_path / "blocked" / "report.csv").mkdir(parents=True)  # before: the plots and report.md, then a failure
    with pytest.raises(UserError, match=r"report\.csv: a directory is in its place"):
        cli.main([str(a), "--out", str(tmp_path / "blocked")])
    assert [p.name for p in (tmp_path / "blocked").iterdir()] == ["report.csv"]
    assert cli.main([str(a), "--out", str(tmp_path / "elsewhere")]) == 0  # a read-only sweep dir's report
    assert (tmp_path / "elsewhere" / "report.md").is_file() and not (a / "report.md").exists()


def test_a_wandb_name_w_and_b_refuses_is_one_line(tmp_path, capsys):
    """Follow-up of issue 23's adversarial check: `--wandb /` and `--wandb 'a b/c#d'` wrote a spec W&B refuses."""
    sweep = make_sweep(tmp_path)
    for name in ("/", "a b/c#d", "team/"):
        with pytest.raises(SystemExit) as exit_info:
            cli.main([str(sweep), "--wandb", name])
        err = capsys.readouterr().err.strip().splitlines()
        assert exit_info.value.code == 2 and len(err) == 1 and f"--wandb {name}: give ENTITY/PROJECT" in err[0], err
    assert not (sweep / "wandb_report.json").exists()
