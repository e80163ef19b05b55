"""Results you can trust after a crash (issue 12): one owner per run dir, nothing stale, moved dirs resume.

Each test is a trial an adversarial user made (kill -9, SIGINT, a second process, a moved dir, corrupt
files) and runs the real CLI. They share the session's finished 3-epoch digits run (W&B offline, trained
in-process once: tests/conftest.py `trained_run`), copied per test.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest
import torch

from nin_lightning.rundir import is_locked
from tests.conftest import (
    SHARED_RUN,
    cli_env,
    copy_run,
    error_lines,
    history_epochs,
    read_metrics,
    snapshot,
    train_cmd,
    wait_for,
)
from tests.wandb_records import offline_runs

FAST = ["experiment=quickstart", "model.width=0.5", "trainer.enable_progress_bar=false"]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished_run(trained_run) -> Path:
    """A finished 3-epoch quickstart run with its W&B offline run: the session's (tests/conftest.py), which
    these tests only copy (copy_of)."""
    assert (*FAST, "trainer.max_epochs=3") == SHARED_RUN  # what these tests resume it with
    return trained_run


copy_of = copy_run  # a run of its own in WHERE, like RUN_DIR's (its wandb_run.json names WHERE as the dir that logs)


def run(tmp: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(train_cmd(*FAST, *args), cwd=tmp, env=cli_env(tmp), capture_output=True, text=True,
                          timeout=timeout)


def start(tmp: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(train_cmd(*FAST, *args), cwd=tmp, env=cli_env(tmp), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def epochs_done(run_dir: Path) -> int:
    try:
        return len(history_epochs(run_dir))
    except (OSError, KeyError, ValueError):
        return 0


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in error_lines(result.stderr) if ln.startswith("error:")]
    assert result.returncode != 0 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    return lines[0]


def test_a_killed_extension_of_a_finished_run_is_resumed_never_taken_for_finished(finished_run, tmp_path):
    """3 epochs done; `resume=auto trainer.max_epochs=10` killed -9 at epoch 5: metrics.json says `running` (not
    the old `completed`), the next `resume=auto` continues from last.ckpt to epoch 10, and the wall time adds
    up every segment, the killed one included. A checkpoint write killed midway leaves no temp file."""
    run_dir = copy_of(finished_run, tmp_path / "run")
    finished = read_metrics(run_dir)
    proc = start(tmp_path, "resume=auto", "trainer.max_epochs=10", f"hydra.run.dir={run_dir}")
    try:
        wait_for(lambda: epochs_done(run_dir) >= 5, 600, "epoch 5 of the extension")
        os.kill(proc.pid, signal.SIGSTOP)
        running = read_metrics(run_dir)
        assert running["status"] == "running" and running["pid"] == proc.pid and is_locked(run_dir)
        assert "test/acc" not in running  # the finished run's result is not reported as current
    finally:
        proc.kill()
        proc.communicate(timeout=60)
    assert read_metrics(run_dir)["status"] == "running" and not is_locked(run_dir)
    assert json.loads((run_dir / "metrics.previous.json").read_text()) == finished
    killed_wall = read_metrics(run_dir)["wall_time_s"]
    (run_dir / "checkpoints" / ".last.ckpt.x1y2.tmp").write_bytes(b"")  # a write that kill -9 cut short

    result = run(tmp_path, "resume=auto", "trainer.max_epochs=10", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "already finished" not in result.stdout
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "completed" and metrics["epochs"] == 10 and metrics["wall_time_s"] > killed_wall
    assert history_epochs(run_dir) == list(range(1, 11))
    assert not list((run_dir / "checkpoints").glob(".*.tmp"))


def test_a_moved_run_dir_resumes_and_tests_its_own_best_checkpoint(finished_run, tmp_path):
    """`mv RUN RUN_moved`, then `resume=auto`: the checkpoints' saved paths follow the dir (no 'dirpath has
    changed'), best.ckpt keeps its score, and the test phase scores the moved dir's best.ckpt."""
    old = copy_of(finished_run, tmp_path / "run")
    moved = old.rename(tmp_path / "run_moved")
    result = run(tmp_path, "resume=auto", "trainer.max_epochs=5", f"hydra.run.dir={moved}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "dirpath has changed" not in result.stdout + result.stderr and not old.exists()
    metrics = read_metrics(moved)
    best = torch.load(moved / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)
    [state] = [v for k, v in best["callbacks"].items() if k.startswith("ModelCheckpoint") and "val/acc" in k]
    assert Path(state["best_model_path"]).parent == moved / "checkpoints"
    assert float(state["best_model_score"]) == pytest.approx(metrics["val/acc_best"])
    assert metrics["status"] == "completed" and metrics["epochs"] == 5


def test_two_processes_never_train_one_run_dir(finished_run, tmp_path):
    """Two `resume=auto` into one run dir: the second gets one line naming the first's pid and host, and
    changes nothing; history.csv holds each epoch once, and there is one W&B run."""
    run_dir = copy_of(finished_run, tmp_path / "run")
    first = start(tmp_path, "resume=auto", "trainer.max_epochs=8", f"hydra.run.dir={run_dir}")
    try:
        wait_for(lambda: read_metrics(run_dir).get("status") == "running", 600, "the first process to start")
        os.kill(first.pid, signal.SIGSTOP)  # however long the second takes to start, the first still runs
        before = snapshot(run_dir)
        second = run(tmp_path, "resume=auto", "trainer.max_epochs=8", f"hydra.run.dir={run_dir}")
        line = one_error_line(second)
        assert f"process {first.pid} on host {socket.gethostname()}" in line and "hydra.run.dir" in line
        assert snapshot(run_dir) == before
        os.kill(first.pid, signal.SIGCONT)
        _, err = first.communicate(timeout=600)
    finally:
        first.kill()
    assert first.returncode == 0, err[-3000:]
    assert history_epochs(run_dir) == list(range(1, 9)) and read_metrics(run_dir)["epochs"] == 8
    runs = offline_runs(run_dir)
    assert len(runs) == 2 and len({r.run_id for r in runs}) == 1  # the fixture's start and the first process's


def test_a_killed_run_without_last_ckpt_is_never_overwritten_nor_silently_restarted(tmp_path):
    """`callbacks.save_last=false`, stopped by kill -9 or Ctrl-C after 2 epochs: a new run into its dir is
    refused, and so is `resume=auto` (there is no last.ckpt: never a silent restart from epoch 0)."""
    for how in (signal.SIGKILL, signal.SIGINT):
        run_dir = tmp_path / f"run_{how.name}"
        proc = start(tmp_path, "callbacks.save_last=false", "trainer.max_epochs=30", "logger=none",
                     f"hydra.run.dir={run_dir}")
        try:
            wait_for(lambda run_dir=run_dir: epochs_done(run_dir) >= 2, 600, "2 epochs")
            os.kill(proc.pid, how)
            proc.communicate(timeout=120)
        finally:
            proc.kill()
        before = snapshot(run_dir)
        assert (run_dir / "checkpoints" / "best.ckpt").exists() and not (run_dir / "checkpoints" / "last.ckpt").exists()
        again = run(tmp_path, "callbacks.save_last=false", "logger=none", f"hydra.run.dir={run_dir}")
        assert "already holds a run" in one_error_line(again) and snapshot(run_dir) == before
        resumed = run(tmp_path, "resume=auto", "logger=none", f"hydra.run.dir={run_dir}")
        assert "no checkpoints/last.ckpt to continue" in one_error_line(resumed) and snapshot(run_dir) == before


def test_corrupt_side_files_are_named_and_nothing_is_rewritten(finished_run, tmp_path):
    """A garbled wandb_run.json, a binary history.csv, a garbled .hydra/overrides.yaml: one line naming the
    file and the fix, every file as it was. A history.csv cut mid-row is resumed with whole rows only."""
    cases = {
        "wandb_run.json": (b"{\"id\": \"abc\", \"gro", []),
        "history.csv": (b"\x00\xff\xfe garbage \x00" * 20, []),
        ".hydra/overrides.yaml": (b"{{{ not: [yaml", ["model.dropout=0.3"]),
    }
    for name, (garbage, extra) in cases.items():
        run_dir = copy_of(finished_run, tmp_path / name.replace("/", "_"))
        (run_dir / name).write_bytes(garbage)
        before = snapshot(run_dir)
        result = run(tmp_path, "resume=auto", "trainer.max_epochs=4", *extra, f"hydra.run.dir={run_dir}")
        line = one_error_line(result)
        assert name.split("/")[-1] in line and snapshot(run_dir) == before, line
        assert "{{{" not in line  # a garbled overrides.yaml is not quoted as the run's original overrides
    for damage in ("truncated", "missing"):  # before: trained on, then failed in the test phase (or tested a
        run_dir = copy_of(finished_run, tmp_path / f"best_{damage}")  # later, worse epoch as the run's best)
        best = run_dir / "checkpoints" / "best.ckpt"
        if damage == "truncated":
            best.write_bytes(best.read_bytes()[: best.stat().st_size // 2])
        else:
            best.unlink()
        before = snapshot(run_dir)
        line = one_error_line(run(tmp_path, "resume=auto", "trainer.max_epochs=4", f"hydra.run.dir={run_dir}"))
        assert f"{best} is {damage}" in line and "--ckpt last" in line and snapshot(run_dir) == before, line
    run_dir = copy_of(finished_run, tmp_path / "cut")
    with (run_dir / "history.csv").open("a") as fh:  # the row of epoch 4, cut short by a crash (last.ckpt: epoch 3)
        fh.write("4,60,0.4")
    result = run(tmp_path, "resume=auto", "trainer.max_epochs=4", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = (run_dir / "history.csv").read_text().splitlines()
    assert history_epochs(run_dir) == [1, 2, 3, 4] and all(",," not in r and not r.endswith(",") for r in rows)



def test_a_history_with_a_gap_or_a_garbled_row_is_named_never_resumed_into(finished_run, tmp_path):
    """Follow-up of issue 23's adversarial check: a history.csv whose epoch-2 row was deleted, or garbled, was
    resumed silently (the bad row dropped, the gap kept, epochs 1, 3, 4). Now one line names the file and the
    epoch, before any write; the file as it was. A gap the user made by deleting the file is theirs to make."""
    for case in ("deleted row", "garbled row"):
        run_dir = copy_of(finished_run, tmp_path / case.replace(" ", "_"))
        header, *rows = (run_dir / "history.csv").read_text().splitlines()
        rows[1] = "2,oops" if case == "garbled row" else ""
        (run_dir / "history.csv").write_text("\n".join([header, *filter(None, rows)]) + "\n")
        before = snapshot(run_dir)
        line = one_error_line(run(tmp_path, "resume=auto", "trainer.max_epochs=4", f"hydra.run.dir={run_dir}"))
        wrong = "row 2 is not a whole row of an epoch" if case == "garbled row" else "epoch 2 is missing"
        assert f"{run_dir / 'history.csv'}: {wrong}" in line and "delete it to keep only the epochs" in line, line
        assert snapshot(run_dir) == before
    run_dir = copy_of(finished_run, tmp_path / "extra_column")  # a column of the user's: the resume rewrote the
    header, *rows = (run_dir / "history.csv").read_text().splitlines()  # file and failed, leaving its header
    (run_dir / "history.csv").write_text("\n".join([header + ",note", *(r + ",mine" for r in rows)]) + "\n")
    before = snapshot(run_dir)
    line = one_error_line(run(tmp_path, "resume=auto", "trainer.max_epochs=4", f"hydra.run.dir={run_dir}"))
    assert "history.csv has columns that train.py does not write (note)" in line and snapshot(run_dir) == before


def test_a_resume_that_would_leave_a_record_behind_or_mix_runs_is_refused(finished_run, tmp_path):
    """Follow-ups of issue 23's adversarial check, each a start plan (rundir/start.py) of the finished 3-epoch run:
    - history.csv without the row of its last epoch was taken for a checkpoint saved mid-epoch: a gap (1, 2, 4);
    - callbacks.save_last=false (or history=false) on a resume left last.ckpt (history.csv) at epoch 3 while the
      run went on to 5, and the next resume=auto trained epochs 4-5 again;
    - resume=auto with ckpt_path= another run's checkpoint, in a dir holding a run, replaced that run;
    - seed=7 on the finished run of seed 42 said `already finished` (a stopped run is refused);
    - a wandb_run.json whose dir is not a path gave a TypeError naming no file;
    - an empty metrics.json was rewritten, the earlier segments' wall_time_s lost."""
    from nin_lightning.errors import UserError
    from nin_lightning.rundir.layout import CONFIG_KEY
    from nin_lightning.rundir.start import plan_start

    saved = torch.load(finished_run / "checkpoints" / "last.ckpt", weights_only=False)[CONFIG_KEY]

    def plan(run_dir: Path, ckpt_path: str | None = None, **changes: object) -> object:
        """The start of `resume=auto trainer.max_epochs=5` (and CHANGES) in RUN_DIR."""
        return plan_start(run_dir, "auto", ckpt_path, saved | {"max_epochs": 5} | changes)

    cut = copy_of(finished_run, tmp_path / "cut")
    (cut / "history.csv").write_text("\n".join((cut / "history.csv").read_text().splitlines()[:-1]) + "\n")
    with pytest.raises(UserError, match=r"history\.csv: epoch 3 is missing, but the checkpoint holds 3 epochs"):
        plan(cut)
    for key, name in (("callbacks.save_last", "last.ckpt"), ("callbacks.history", "history.csv")):
        with pytest.raises(UserError, match=f"{key}=false: .*{name} would stay at epoch 3 while the run goes on"):
            plan(finished_run, **{key: False})
    other = copy_of(finished_run, tmp_path / "other")
    start = plan(finished_run, ckpt_path=str(other / "checkpoints" / "last.ckpt"))
    assert start.path == finished_run / "checkpoints" / "last.ckpt" and start.continues  # its own run goes on
    (other / "checkpoints" / "last.ckpt").unlink()  # a run without a last.ckpt: never started over from a file
    with pytest.raises(UserError, match="already holds a run"):
        plan(other, ckpt_path=str(finished_run / "checkpoints" / "last.ckpt"))
    with pytest.raises(UserError, match=r"seed=7: .* is the run of seed=42"):
        plan(finished_run, seed=7, max_epochs=3)
    odd = copy_of(finished_run, tmp_path / "odd")
    identity = json.loads((odd / "wandb_run.json").read_text())
    (odd / "wandb_run.json").write_text(json.dumps(identity | {"dir": 5}))
    with pytest.raises(UserError, match=r"wandb_run.json is unreadable \(ValueError: its dir is not a path\)"):
        plan(odd)
    (odd / "wandb_run.json").write_text(json.dumps(identity | {"dir": str(odd)}))
    (odd / "metrics.json").write_text("")  # its earlier wall_time_s would be lost without a word
    with pytest.raises(UserError, match=r"metrics\.json is unreadable \(empty, or not a JSON object\)"):
        plan(odd)
    assert plan(finished_run).path == finished_run / "checkpoints" / "last.ckpt"  # as it is: it goes on


@pytest.mark.parametrize(("epochs", "wrong"), [
    ([1, 2, 2, 3], "epoch 2 is repeated or out of order"), ([2, 1, 3], "epoch 1 is out of order"),
    ([1], "epoch 2 is missing"), ([], "epoch 1 is missing"), ([1, 2, 3, 3], "epoch 3 is repeated or out of order"),
    ([1, 2], None), ([1, 2, 3, 4, 5], None),  # a checkpoint saved mid-epoch 3; rows after the checkpoint's epochs
])
def test_the_epochs_a_resume_appends_to_must_be_whole(tmp_path, epochs, wrong):
    from nin_lightning.errors import UserError
    from nin_lightning.rundir.history import check_epochs

    path = tmp_path / "history.csv"
    path.write_text("epoch\n")
    rows = [{"epoch": str(e)} for e in epochs]
    if wrong is None:
        check_epochs(path, rows, done=3)
    else:
        with pytest.raises(UserError, match=f"{wrong}, but the checkpoint holds 3 epochs"):
            check_epochs(path, rows, done=3)
    check_epochs(tmp_path / "deleted.csv", rows, done=3)  # no file: nothing to keep whole


GRID = ["model.dropout=0.0,0.5", "seed=1,2"]


def sweep(tmp: Path, sweep_dir: Path, *args: str) -> list[str]:
    return train_cmd("-m", *GRID, *FAST, "trainer.max_epochs=3", "logger=none", f"hydra.sweep.dir={sweep_dir}", *args)


def job_dirs(sweep_dir: Path) -> list[Path]:
    if not sweep_dir.is_dir():
        return []
    return sorted(p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def test_a_sweep_relaunched_with_resume_auto_continues_each_job_in_its_own_dir(tmp_path):
    """A 2x2 sweep killed -9 in its third job, relaunched with the same command plus `resume=auto`: finished jobs
    are left alone, the dead one resumes, the missing one starts; the dir names hold no `resume`, so nothing is
    trained twice, and the report counts 2 seeds per setting. Relaunched once more: nothing to do, exit 0, and
    a summary line that says so."""
    sweep_dir = tmp_path / "sweep"
    env = cli_env(tmp_path)
    proc = subprocess.Popen(sweep(tmp_path, sweep_dir), cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: len(job_dirs(sweep_dir)) >= 3 and epochs_done(job_dirs(sweep_dir)[2]) >= 1, 900,
                 "the third job's first epoch")
        proc.kill()  # the whole sweep (Hydra's basic launcher runs its jobs in this process)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    done = {d.name: snapshot(d) for d in job_dirs(sweep_dir)[:2]}
    assert [read_metrics(d)["status"] for d in job_dirs(sweep_dir)[:3]] == ["completed", "completed", "running"]
    for attempt in range(2):
        result = subprocess.run(sweep(tmp_path, sweep_dir, "resume=auto"), cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"[nin] sweep: 4 jobs (4 completed) in {sweep_dir}" in result.stdout, result.stdout[-2000:]
        dirs = job_dirs(sweep_dir)
        assert [d.name[:4] for d in dirs] == ["000_", "001_", "002_", "003_"]
        assert not any("resume" in d.name for d in dirs)
        assert {d.name: snapshot(d) for d in dirs[:2]} == done  # finished: left as they were
        assert all(history_epochs(d) == [1, 2, 3] and read_metrics(d)["status"] == "completed" for d in dirs)
        assert result.stdout.count("already finished") == (2 if attempt == 0 else 4)
    # relaunched with the values in another order: each job finds its dir under its old number (before: four new
    # dirs, 000_model.dropout=0.5,seed=2 ..., trained again next to the finished ones)
    reordered = [{"model.dropout=0.0,0.5": "model.dropout=0.5,0.0", "seed=1,2": "seed=2,1"}.get(a, a)
                 for a in sweep(tmp_path, sweep_dir, "resume=auto")]
    result = subprocess.run(reordered, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0 and result.stdout.count("already finished") == 4, result.stdout[-2000:]
    assert [d.name for d in job_dirs(sweep_dir)] == [d.name for d in dirs]
    report = subprocess.run([*train_cmd()[:1], "-m", "nin_lightning.report", str(sweep_dir)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr[-2000:]
    rows = list(csv.DictReader((sweep_dir / "report.csv").read_text().splitlines()))
    assert [(r["model.dropout"], r["n_seeds"], r["n_jobs"]) for r in rows] == [("0.0", "2", "2"), ("0.5", "2", "2")]


def test_the_report_counts_a_repeated_setting_and_seed_once(tmp_path):
    """Two job dirs of one (setting, seed), e.g. a sweep launched twice into new dirs: one run, said so."""
    from nin_lightning.report.cli import main

    sweep_dir = tmp_path / "sweep"
    result = subprocess.run(train_cmd("-m", "model.dropout=0.0", "seed=1", *FAST, "trainer.max_epochs=1",
                                      "logger=none", f"hydra.sweep.dir={sweep_dir}"),
                            cwd=tmp_path, env=cli_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    [job] = job_dirs(sweep_dir)
    shutil.copytree(job, sweep_dir / ("001_" + job.name.split("_", 1)[1]))
    main([str(sweep_dir)])
    report = (sweep_dir / "report.md").read_text()
    assert "### Duplicates" in report and "counted once" in report
    [row] = csv.DictReader((sweep_dir / "report.csv").read_text().splitlines())
    assert (row["n_seeds"], row["n_jobs"]) == ("1", "1")


def test_two_identical_sweeps_into_one_sweep_dir_never_train_a_job_twice(tmp_path):
    """The same `-m ... resume=auto` twice at once into one sweep dir: the job the first one is training is
    refused to the second (one line naming its holder); each job is trained once, by one of them."""
    sweep_dir = tmp_path / "sweep"
    env = cli_env(tmp_path)
    cmd = train_cmd("-m", "seed=1,2", *FAST, "trainer.max_epochs=3", "logger=none", "resume=auto",
                    f"hydra.sweep.dir={sweep_dir}")
    first = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: bool(job_dirs(sweep_dir)) and read_metrics(job_dirs(sweep_dir)[0]).get("status") == "running"
                 if job_dirs(sweep_dir) and (job_dirs(sweep_dir)[0] / "metrics.json").exists() else False, 900,
                 "the first sweep's first job to start")
        os.kill(first.pid, signal.SIGSTOP)
        second = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        os.kill(first.pid, signal.SIGCONT)
        out, err = first.communicate(timeout=900)
    finally:
        first.kill()
    assert f"is in use by process {first.pid}" in one_error_line(second)
    assert "(1 completed, 1 incomplete)" in second.stdout  # it trained the job the first had not reached yet
    assert first.returncode == 0 and "already finished" in out, err[-3000:]  # ...which the first then left alone
    dirs = job_dirs(sweep_dir)
    assert len(dirs) == 2 and all(history_epochs(d) == [1, 2, 3] for d in dirs)
    assert all(read_metrics(d)["status"] == "completed" for d in dirs)


def test_a_run_killed_before_its_first_last_ckpt_starts_again(finished_run, tmp_path):
    """Killed between its first history row and its first last.ckpt (save_last=true): `resume=auto` starts it
    again (under an epoch lost); with two epochs in its history it would lose more: refused, nothing changed."""
    for rows, refused in ((1, False), (2, True)):
        run_dir = copy_of(finished_run, tmp_path / f"rows{rows}")
        (run_dir / "checkpoints" / "last.ckpt").unlink()
        (run_dir / "metrics.json").write_text(json.dumps({"status": "running", "epochs": 0}))
        lines = (run_dir / "history.csv").read_text().splitlines()
        (run_dir / "history.csv").write_text("\n".join(lines[: 1 + rows]) + "\n")
        before = snapshot(run_dir)
        result = run(tmp_path, "resume=auto", "trainer.max_epochs=3", "logger=none", f"hydra.run.dir={run_dir}")
        if refused:
            assert "no checkpoints/last.ckpt to continue" in one_error_line(result) and snapshot(run_dir) == before
        else:
            assert result.returncode == 0, result.stderr[-3000:]
            assert history_epochs(run_dir) == [1, 2, 3] and read_metrics(run_dir)["status"] == "completed"


def test_a_copied_run_dir_never_logs_into_its_originals_wandb_run(finished_run, tmp_path):
    """`cp -r RUN RUN_copy`, then `resume=auto` in the copy: both would continue one W&B run, logging the same
    epochs twice into it; refused in one line, nothing changed. Without the copy's wandb_run.json it continues
    as a new W&B run, and the original still continues its own."""
    original = copy_of(finished_run, tmp_path / "run")
    copy = tmp_path / "run_copy"
    shutil.copytree(original, copy)
    before = snapshot(copy)
    result = run(tmp_path, "resume=auto", "trainer.max_epochs=4", f"hydra.run.dir={copy}")
    assert f"is a copy of {original}" in one_error_line(result) and snapshot(copy) == before
    first_id = json.loads((original / "wandb_run.json").read_text())["id"]
    (copy / "wandb_run.json").unlink()
    for run_dir in (copy, original):
        result = run(tmp_path, "resume=auto", "trainer.max_epochs=4", f"hydra.run.dir={run_dir}")
        assert result.returncode == 0, result.stderr[-3000:]
        assert history_epochs(run_dir) == [1, 2, 3, 4] and read_metrics(run_dir)["status"] == "completed"
    copy_id = json.loads((copy / "wandb_run.json").read_text())["id"]
    assert json.loads((original / "wandb_run.json").read_text())["id"] == first_id != copy_id


def test_a_finished_extension_is_finished(finished_run, tmp_path):
    """3 epochs, then `resume=auto trainer.max_epochs=4` completes: the next identical command finds it finished
    (one line, exit 0, nothing rewritten). Before, the checkpoint kept the first segment's max_epochs (3), so
    the run was taken for unfinished: resumed, re-tested and its files rewritten, every time."""
    run_dir = copy_of(finished_run, tmp_path / "run")
    args = ("resume=auto", "trainer.max_epochs=4", f"hydra.run.dir={run_dir}")
    assert run(tmp_path, *args).returncode == 0
    before = snapshot(run_dir)
    result = run(tmp_path, *args)
    assert result.returncode == 0 and "already finished (4 epochs" in result.stdout, result.stdout[-2000:]
    assert snapshot(run_dir) == before


def test_a_run_stopped_in_its_test_phase_resumes_with_its_val_results(finished_run, tmp_path):
    """Ctrl-C (or kill -9) during the test phase leaves last.ckpt after the last epoch and metrics.json
    `interrupted`: `resume=auto` only tests, and metrics.json keeps val/acc, val/loss and val/acc_best (before,
    they were dropped: the fit trained nothing, so logged nothing, and a sweeper's objective became 0)."""
    run_dir = copy_of(finished_run, tmp_path / "run")
    done = read_metrics(run_dir)
    (run_dir / "metrics.json").write_text(json.dumps({"status": "interrupted", "epochs": 3}))
    result = run(tmp_path, "resume=auto", "trainer.max_epochs=3", "logger=none", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "completed" and history_epochs(run_dir) == [1, 2, 3]
    for key in ("val/acc", "val/loss", "val/acc_best"):
        assert metrics[key] == pytest.approx(done[key], rel=1e-6), key


def test_a_start_from_another_runs_checkpoint_tests_its_own_best_epoch(finished_run, tmp_path):
    """`ckpt_path=` another run's checkpoint, in a new run dir, whose epochs never beat the other run's best
    (here: a best score of 1.0): before, no best.ckpt was ever written and the run failed after training
    ("cannot write or read RUN/checkpoints/best.ckpt"); now its best is among its own epochs."""
    saved = torch.load(finished_run / "checkpoints" / "last.ckpt", weights_only=True)
    [state] = [v for k, v in saved["callbacks"].items() if "val/acc" in k]
    state["kth_value"] = state["best_model_score"] = torch.tensor(1.0)
    state["best_k_models"] = {path: torch.tensor(1.0) for path in state["best_k_models"]}
    torch.save(saved, tmp_path / "unbeatable.ckpt")
    run_dir = tmp_path / "fine_tune"
    result = run(tmp_path, "trainer.max_epochs=4", "logger=none", f"ckpt_path={tmp_path / 'unbeatable.ckpt'}",
                 f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "completed" and metrics["best_epoch"] == 4 and metrics["test/acc"] > 0.5
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()


def test_a_resume_that_would_record_a_false_result_is_refused(finished_run, tmp_path):
    """A killed run (last.ckpt after epoch 3) resumed with fewer epochs than it holds, or with another seed
    (its RNG states come from the checkpoint, so the 'seed 7' result would be seed 42's): one line each,
    nothing changed. Before, both finished as `completed` with a false epochs count or seed."""
    run_dir = copy_of(finished_run, tmp_path / "run")
    (run_dir / "metrics.json").write_text(json.dumps({"status": "running", "epochs": 3}))
    before = snapshot(run_dir)
    for args, expected, why in ((["trainer.max_epochs=2"], "trainer.max_epochs=2: ", "holds 3 epochs already"),
                                (["trainer.max_epochs=5", "seed=7"], "seed=7: ", "run of seed=42"),
                                # another grouping of the parameters: before, a ValueError from torch after the
                                # run was marked running (a completed run then said `failed`)
                                (["trainer.max_epochs=5", "optimizer.exempt_bias_norm=true"], "cannot resume from",
                                 "optimizer.exempt_bias_norm (False -> True)")):
        line = one_error_line(run(tmp_path, "resume=auto", *args, f"hydra.run.dir={run_dir}"))
        assert line.startswith(f"error: {expected}") and why in line, line
        assert snapshot(run_dir) == before
