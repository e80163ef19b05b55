"""The ablation report on made-up sweeps: a sweep dir, W&B's public API faked, and the real W&B client
(in a subprocess) against a closed port and a fake server for its one-line errors."""

from __future__ import annotations

import csv
import http.server
import json
import os
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
