"""W&B runs that chart right, sweeps that compare, and the reports, tested on the real files runs write.

One 2x2 digits sweep through the real CLI (`python train.py -m ... model.dropout=0.0,0.5 seed=1,2`) feeds
most tests: its offline `.wandb` files are decoded (tests/wandb_records.py: run, config, history, metric
and summary records), its sweep dir goes through `python -m nin_lightning.report`. A W&B agent's run is
started with wandb's own Agent (tests/agent_run.py), stopped by SIGTERM and resumed. Those tests are
marked slow; the pure ones (statistics, names, schemas) run in the quick suite too.
"""

from __future__ import annotations

import csv
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from nin_lightning import metric_names as names
from nin_lightning.errors import UserError
from tests.conftest import ROOT, cli_env, read_metrics
from tests.wandb_records import offline_runs

SWEEP_ARGS = ("-m", "experiment=quickstart", "model.dropout=0.0,0.5", "seed=1,2", "trainer.max_epochs=3",
              "logger.log_model=all")
EPOCHS = 3


def _run(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _history(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "history.csv").open() as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A 2x2 digits sweep (dropout 0.0, 0.5 x seeds 1, 2; 3 epochs), offline W&B with wandb-osh triggers."""
    tmp = tmp_path_factory.mktemp("sweep")
    env = cli_env(tmp)
    osh_dir = tmp / "osh"  # relative on the command line: the value is part of each job's dir name
    out = _run([sys.executable, str(ROOT / "train.py"), *SWEEP_ARGS, "logger.osh=true", "logger.osh_dir=osh"], env, tmp)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    (sweep_dir,) = (tmp / "outputs" / "sweeps").iterdir()
    jobs = sorted((d for d in sweep_dir.iterdir() if (d / ".hydra").is_dir()), key=lambda d: int(d.name.split("_")[0]))
    runs = {}
    for job in jobs:
        (runs[job],) = offline_runs(job)
    return SimpleNamespace(tmp=tmp, env=env, dir=sweep_dir, jobs=jobs, runs=runs, osh_dir=osh_dir, stdout=out.stdout)


@pytest.mark.slow
def test_jobs_learned(sweep):
    accs = {job.name: read_metrics(job)["test/acc"] for job in sweep.jobs}
    assert len(accs) == 4 and all(read_metrics(job)["status"] == "completed" for job in sweep.jobs)
    assert all(acc > 0.6 for acc in accs.values()), accs  # 10 classes: chance is 0.1
    assert min(acc for name, acc in accs.items() if "dropout=0.0" in name) > 0.85, accs


@pytest.mark.slow
def test_adhoc_sweep_is_named_grouped_and_tagged_by_its_swept_keys(sweep):
    assert re.fullmatch(r"dropout-seed_\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d-\d{6}", sweep.dir.name), sweep.dir.name
    for job, run in sweep.runs.items():
        assert run.group == sweep.dir.name  # a sweep's dir name is its W&B group
        assert run.name == job.name.split("_", 1)[1] and run.job_type == "train"
        # the swept keys only (before: every override, experiment=quickstart,...,trainer.max_epochs=3)
        assert [part.split("=")[0] for part in run.name.split(",")] == ["model.dropout", "seed"], run.name
        assert {"dropout", "seed", "quickstart"} <= set(run.tags), run.tags  # the swept keys, and the recipe's


@pytest.mark.slow
def test_epoch_metrics_chart_against_epoch_and_step_metrics_against_the_global_step(sweep):
    for run in sweep.runs.values():
        defs = run.metrics
        assert defs[names.EPOCH].hidden and defs[names.GLOBAL_STEP].hidden
        assert defs["val/acc"].step_metric == names.EPOCH and defs["val/acc"].summary == {"max"}
        assert defs["val/loss"].step_metric == names.EPOCH and defs["val/loss"].summary == {"min"}
        for glob in ("train/*", "val/*", "test/*"):
            assert defs[glob].glob and defs[glob].step_metric == names.EPOCH
        assert defs[names.LOSS_STEP].step_metric == names.GLOBAL_STEP and not defs[names.LOSS_STEP].glob
        assert defs["lr/*"].glob and defs["lr/*"].step_metric == names.GLOBAL_STEP
        # every row carries the axis its metrics are charted on
        keys = {key for row in run.history for key in row}
        assert "lr/pg0" in keys and not any(k.startswith("lr-") for k in keys), keys
        for row in run.history:
            if any(k.startswith(("val/", "test/", "train/acc")) or k == "train/loss" for k in row):
                assert isinstance(row.get(names.EPOCH), int), row
            if names.LOSS_STEP in row or "lr/pg0" in row:
                assert isinstance(row.get(names.GLOBAL_STEP), int), row


@pytest.mark.slow
def test_one_epoch_numbering_in_console_history_wandb_and_metrics(sweep):
    for job, run in sweep.runs.items():
        rows = _history(job)
        assert [int(r["epoch"]) for r in rows] == list(range(1, EPOCHS + 1))
        epoch_rows = [r for r in run.history if "val/acc" in r]
        assert [r[names.EPOCH] for r in epoch_rows] == list(range(1, EPOCHS + 1))
        log = (job / "train.log").read_text()
        assert [int(m) for m in re.findall(rf"\] - epoch (\d+)/{EPOCHS}:", log)] == list(range(1, EPOCHS + 1))
        metrics = read_metrics(job)
        assert metrics["epochs"] == EPOCHS
        # best.ckpt's epoch: the first epoch that reached the best val/acc (callbacks.monitor, mode max)
        accs = [float(r["val/acc"]) for r in rows]
        assert metrics[names.BEST_EPOCH] == accs.index(max(accs)) + 1


@pytest.mark.slow
def test_summary_holds_the_runs_result_size_and_code_version(sweep, compose_cfg):
    from nin_lightning.config import validate
    from nin_lightning.run import model_size

    git = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    status = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                            capture_output=True, text=True)
    size = model_size(validate(compose_cfg("experiment=quickstart")))
    assert size["params"] > 100_000 and size["macs"] > size["params"]  # convolutions reuse weights per pixel
    for job, run in sweep.runs.items():
        metrics, summary = read_metrics(job), run.summary
        for key in ("wall_time_s", "epochs", names.BEST_EPOCH, "params", "macs", "test/acc", "val/acc_best"):
            assert summary[key] == pytest.approx(metrics[key]), key
        assert summary["status"] == metrics["status"] == "completed" and run.exit_code == 0
        assert {"params": metrics["params"], "macs": metrics["macs"]} == size
        # the images of each split (the report's header): digits' 1797 images, none lost, a validation split
        assert sum(metrics[f"data/{split}_size"] for split in ("train", "val", "test")) == 1797
        assert min(metrics["data/val_size"], metrics["data/test_size"]) > 0
        assert summary["val/acc"] == {"max": pytest.approx(max(float(r["val/acc"]) for r in _history(job)))}
        if git.returncode == 0:  # a checkout (CI's fresh clone too): the commit that ran, and whether it was edited
            commit = git.stdout.strip()
            assert metrics["code/commit"] == summary["code/commit"] == run.config["code"]["commit"] == commit
            assert metrics["code/dirty"] is run.config["code"]["dirty"] is bool(status.stdout.strip())


@pytest.mark.slow
def test_lr_is_the_lr_each_epoch_trained_with_under_one_key_for_every_optimizer(run_cli, tmp_path):
    """A multistep schedule that cuts 0.01 -> 0.001 after epoch 1: epoch 1 trained at 0.01, epoch 2 at 0.001
    (history.csv used to show the LR after the epoch's scheduler step, 0.001 and 0.0001); AdamW's LR is
    lr/pg0 in W&B, as SGD's (not lr-AdamW)."""
    run_dir = tmp_path / "run"
    out = run_cli("optimizer=adamw", "optimizer.lr=0.01", "scheduler=multistep", "scheduler.milestones=[1]",
                  "trainer.max_epochs=2", "trainer.limit_train_batches=4", "trainer.log_every_n_steps=1",
                  "model.width=0.25", f"hydra.run.dir={run_dir}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert [float(r["lr"]) for r in _history(run_dir)] == pytest.approx([0.01, 0.001])
    (run,) = offline_runs(run_dir)
    lrs = [(row[names.GLOBAL_STEP], row["lr/pg0"]) for row in run.history if "lr/pg0" in row]
    assert lrs == [(step, pytest.approx(0.01 if step < 4 else 0.001)) for step in range(8)], lrs
    assert not any(k.startswith("lr-") for row in run.history for k in row)


@pytest.mark.slow
def test_log_model_all_logs_every_checkpoint_as_it_is_written(sweep):
    """logger.log_model=all: best.ckpt each time it improves (aliases best and its epoch), last.ckpt after
    every epoch (alias last), as artifacts of type model named after the run."""
    for job, run in sweep.runs.items():
        accs = [float(r["val/acc"]) for r in _history(job)]
        improved = [e for e in range(1, EPOCHS + 1) if accs[e - 1] > max(accs[:e - 1], default=-1.0)]
        assert {(a.name, a.type) for a in run.artifacts} == {(f"model-{run.run_id}", "model")}
        best = [a for a in run.artifacts if "best" in a.aliases]
        assert [a.metadata["epoch"] for a in best] == improved and all(f"epoch-{e}" in a.aliases for a, e in
                                                                      zip(best, improved, strict=True))
        assert [a.metadata["epoch"] for a in run.artifacts if "last" in a.aliases] == list(range(1, EPOCHS + 1))


@pytest.mark.slow
def test_wandb_osh_is_asked_to_sync_every_offline_run(sweep):
    commands = {Path(f.read_text()) for f in sweep.osh_dir.glob("*.command")}
    assert commands == {next((job / "wandb").glob("offline-run-*")).resolve() for job in sweep.jobs}


# ----------------------------------------------------------------------------------------- the reports
def _report(sweep: SimpleNamespace, *args: str) -> subprocess.CompletedProcess[str]:
    return _run([sys.executable, "-m", "nin_lightning.report", *args], {**sweep.env, "PYTHONPATH": str(ROOT)},
                sweep.tmp, timeout=300)


@pytest.mark.slow
def test_local_report_gives_the_difference_to_the_baseline_with_ci_and_p_value(sweep):
    from scipy import stats

    out = _report(sweep, str(sweep.dir), "--baseline", "model.dropout=0.5")
    assert out.returncode == 0, out.stderr[-2000:]
    md = (sweep.dir / "report.md").read_text()
    assert "- **Baseline**: model.dropout=0.5 (--baseline)" in md and "dataset digits" in md
    assert "`experiment=quickstart`" in md and f"max epochs {EPOCHS}" in md
    header = next(line for line in md.splitlines() if line.startswith("| model.dropout"))
    assert all(col in header for col in ("Δ test/acc", "95% CI", "p (Welch)", "params", "macs")), header
    assert "few seeds (n=2 vs 2)" in md
    acc = {d: [read_metrics(j)["test/acc"] for j in sweep.jobs if f"dropout={d}," in j.name] for d in ("0.0", "0.5")}
    expected = stats.ttest_ind(acc["0.0"], acc["0.5"], equal_var=False)
    with (sweep.dir / "report.csv").open() as fh:
        rows = {r["model.dropout"]: r for r in csv.DictReader(fh)}
    assert rows["0.5"]["is_baseline"] == "1" and rows["0.0"]["is_baseline"] == "0"
    diff = statistics.fmean(acc["0.0"]) - statistics.fmean(acc["0.5"])
    assert float(rows["0.0"]["test/acc_diff"]) == pytest.approx(diff, rel=1e-5)
    assert float(rows["0.0"]["p_welch"]) == pytest.approx(expected.pvalue, rel=1e-5)
    low, high = expected.confidence_interval(0.95)
    assert (float(rows["0.0"]["ci_low"]), float(rows["0.0"]["ci_high"])) == pytest.approx((low, high), rel=1e-5)
    assert int(rows["0.0"]["params"]) == read_metrics(sweep.jobs[0])["params"]
    # the same seeds share a start (dropout changes no shape): paired by seed, against scipy's paired t-test
    by_seed = {d: {read_metrics(j)["seed"]: read_metrics(j)["test/acc"] for j in sweep.jobs
                   if f"dropout={d}," in j.name} for d in ("0.0", "0.5")}
    rel = stats.ttest_rel([by_seed["0.0"][s] for s in (1, 2)], [by_seed["0.5"][s] for s in (1, 2)])
    assert float(rows["0.0"]["p_paired"]) == pytest.approx(rel.pvalue, rel=1e-5)
    assert float(rows["0.0"]["diff_paired"]) == pytest.approx(diff, rel=1e-5)
    sizes = read_metrics(sweep.jobs[0])
    assert f"- **Images**: {sizes['data/train_size']:,} train / {sizes['data/val_size']:,} validation" in md


@pytest.mark.slow
def test_report_of_several_sweeps_side_by_side(sweep, tmp_path):
    copy = tmp_path / "dropout_copy"
    subprocess.run(["cp", "-r", str(sweep.dir), str(copy)], check=True)
    out = _report(sweep, "--compare", str(sweep.dir), str(copy), "--out", str(tmp_path / "cmp"))
    assert out.returncode == 0, out.stderr[-2000:]
    md = (tmp_path / "cmp" / "report.md").read_text()
    assert f"## {sweep.dir.name}" in md and "## dropout_copy" in md
    summary = [ln for ln in md.splitlines() if ln.startswith((f"| {sweep.dir.name} |", "| dropout_copy |"))]
    assert len(summary) == 2 and all("model.dropout=0.0" in ln for ln in summary), summary
    with (tmp_path / "cmp" / "report.csv").open() as fh:
        assert sorted(r["sweep"] for r in csv.DictReader(fh)) == sorted([sweep.dir.name, "dropout_copy"] * 2)


@pytest.mark.slow
def test_wandb_report_spec_for_the_sweep_group(sweep):
    from nin_lightning.report.jobs import flatten
    from nin_lightning.report.wandb_report import to_report

    out = _report(sweep, str(sweep.dir), "--wandb", "me/nin-lightning")
    assert out.returncode == 0, out.stderr[-2000:]
    spec = json.loads((sweep.dir / "wandb_report.json").read_text())
    assert (spec["entity"], spec["project"]) == ("me", "nin-lightning")
    assert spec["filters"] == {"group": sweep.dir.name} == {"group": next(iter(sweep.runs.values())).group}
    kinds = [p["kind"] for p in spec["panels"]]
    assert kinds == ["parallel_coordinates", "line", "line", "bar", "runs_table"], kinds
    parallel, loss, line, bar, table = spec["panels"]
    assert parallel["columns"] == ["config:model.dropout", "config:seed", "summary:test/acc"]
    assert (loss["x"], loss["y"]) == ("epoch", ["val/loss"])
    assert (line["x"], line["y"], line["groupby"], line["aggregate"], line["range"]) == (
        "epoch", ["train/acc", "val/acc"], "config:model.dropout", "mean", "stddev")
    assert (bar["metrics"], bar["groupby"], bar["aggregate"], bar["range"]) == (
        ["test/acc"], ["config:model.dropout"], "mean", "stddev")
    assert {"config:model.dropout", "config:seed", "summary:test/acc", "summary:status"} <= set(table["columns"])
    # every column names what the offline runs really hold: config keys, summary keys, history keys
    for run in sweep.runs.values():
        config = flatten(run.config)
        for column in {*parallel["columns"], *table["columns"], line["groupby"], *bar["groupby"]}:
            section, key = column.split(":", 1)
            holder = {"config": config, "summary": run.summary, "run": {"displayName": run.name}}[section]
            assert key in holder, column
        assert any(line["x"] in row and set(line["y"]) <= set(row) for row in run.history)
        assert any(loss["x"] in row and set(loss["y"]) <= set(row) for row in run.history)
    # the wandb-workspaces report that --publish saves, built offline from the spec
    import wandb_workspaces.reports.v2 as wr

    report = to_report(spec)
    grid, bars = report.blocks[1], report.blocks[2]
    assert [type(p) for p in grid.panels] == [wr.ParallelCoordinatesPlot, wr.LinePlot, wr.LinePlot]
    assert grid.panels[1].x == "epoch" and grid.panels[1].groupby == wr.Config("model.dropout")
    assert bars.runsets[0].groupby == ["config.model.dropout"] and isinstance(bars.panels[0], wr.BarPlot)
    assert all(sweep.dir.name in str(rs.filters) for rs in (*grid.runsets, *bars.runsets))


@pytest.mark.slow
def test_publishing_without_a_login_is_one_line_and_writes_nothing(sweep, tmp_path):
    before = {p.name: p.read_bytes() for p in sweep.dir.iterdir() if p.is_file()}
    env = {k: v for k, v in sweep.env.items() if k != "WANDB_API_KEY"} | {"HOME": str(tmp_path)}
    out = _run([sys.executable, "-m", "nin_lightning.report", str(sweep.dir), "--wandb", "me/nin-lightning",
                "--publish"], env | {"PYTHONPATH": str(ROOT)}, sweep.tmp, timeout=120)
    assert out.returncode == 2 and out.stdout == "", out.stderr[-2000:]
    assert out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.startswith("error: W&B: --publish needs a login; run `wandb login`"), out.stderr
    assert {p.name: p.read_bytes() for p in sweep.dir.iterdir() if p.is_file()} == before


@pytest.mark.slow
def test_bad_baseline_is_one_line(sweep):
    for arg, words in (("model.width=2", "not a swept key"), ("model.dropout=0.3", "matches no setting")):
        out = _report(sweep, str(sweep.dir), "--baseline", arg)
        assert out.returncode == 2 and out.stderr.count("\n") == 1 and words in out.stderr, out.stderr


# ----------------------------------------------------------------------------------- W&B sweeps, agent
SWEEPS = ROOT / "sweeps"


def _number(text: str) -> int | float | str:
    """'1' -> 1, '1e-4' -> 0.0001, 'cosine' -> 'cosine' (a Hydra sweep value, as W&B's YAML holds it)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def test_sweep_yamls_follow_wandbs_schema_and_the_hydra_grids():
    """W&B's sweep-config schema: the `sweeps` engine's sweeps/config/schema.json (sweeps 0.3.0, MIT), kept in
    tests/data because the package itself needs numpy<2. The W&B grids sweep what conf/sweep/ sweeps."""
    import jsonschema

    schema = json.loads((ROOT / "tests" / "data" / "wandb_sweep_schema.json").read_text())
    files = sorted(SWEEPS.glob("*.yaml"))
    assert {f.stem for f in files} >= {"width", "dropout", "weight_decay", "lr_schedule", "dataset_seed", "paper",
                                       "bayes_dropout_wd"}
    for path in files:
        config = yaml.safe_load(path.read_text())
        jsonschema.validate(config, schema)
        assert config["program"] == "train.py" and config["project"] == "nin-lightning"
        assert config["command"][:4] == ["${env}", "${interpreter}", "${program}", "${args_no_hyphens}"]
        assert "resume=auto" in config["command"], path
        hydra_grid = ROOT / "conf" / "sweep" / path.name
        if config["method"] == "grid":
            params = yaml.safe_load(hydra_grid.read_text())["hydra"]["sweeper"]["params"]
            hydra_values = {k: [_number(v) for v in str(vs).split(",")] for k, vs in params.items()}
            assert {k: p["values"] for k, p in config["parameters"].items()} == hydra_values, path
    bayes = yaml.safe_load((SWEEPS / "bayes_dropout_wd.yaml").read_text())
    assert bayes["method"] == "bayes" and bayes["metric"] == {"name": "val/acc_best", "goal": "maximize"}
    with pytest.raises(jsonschema.ValidationError):  # the schema does reject a broken config
        jsonschema.validate({**bayes, "method": "bayesian"}, schema)


@pytest.mark.slow
def test_a_run_started_by_the_wandb_agent_uses_its_ids_and_resumes(tmp_path):
    """The agent's command and environment (wandb's Agent), a SIGTERM after 2 epochs (the agent's `stop`),
    then the agent's `resume` of the same run: one run dir, one W&B run id, every epoch, axes that continue."""
    env = cli_env(tmp_path) | {"WANDB_SWEEP_ID": "sw2x2abc", "WANDB_PROJECT": "nin-agent", "WANDB_ENTITY": "me",
                               "WANDB_DIR": str(tmp_path), "PYTHONPATH": str(ROOT),
                               "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}  # the agent's `python`
    params = json.dumps({"model.dropout": 0.0, "seed": 1, "experiment": "quickstart", "trainer.max_epochs": 4})
    agent = [sys.executable, str(ROOT / "tests" / "agent_run.py"), str(SWEEPS / "dropout.yaml"), "run5ag7", params]
    first = _run([*agent, "run", "--stop-after-epochs", "2"], env, ROOT)  # program: train.py, from the repo root
    assert first.returncode == 0, first.stderr[-3000:]
    assert json.loads(first.stdout.splitlines()[-1])["exit_code"] == 143, first.stderr[-3000:]  # preempted
    run_dir = tmp_path / "outputs" / "wandb_sweeps" / "sw2x2abc" / "run5ag7"
    identity = {"id": "run5ag7", "sweep": "sw2x2abc", "group": "sweep-sw2x2abc", "name": None,
                "dir": str(run_dir.resolve()),  # the dir that logs into it (a copy is told apart)
                "project": "nin-agent", "entity": "me", "tags": None}  # the agent's project, where its run lives
    assert json.loads((run_dir / "wandb_run.json").read_text()) | {"name": None, "tags": None} == identity
    assert read_metrics(run_dir)["status"] == "preempted"
    second = _run([*agent, "resume"], env, ROOT)
    assert second.returncode == 0, second.stderr[-3000:]
    assert json.loads(second.stdout.splitlines()[-1])["exit_code"] == 0, second.stderr[-3000:]
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "completed" and metrics["epochs"] == 4 and metrics["test/acc"] > 0.85
    assert [int(r["epoch"]) for r in _history(run_dir)] == [1, 2, 3, 4]
    assert json.loads((run_dir / "wandb_run.json").read_text()) | {"name": None, "tags": None} == identity
    segments = offline_runs(run_dir)
    assert len(segments) == 2
    for segment in segments:
        assert (segment.run_id, segment.sweep_id, segment.group) == ("run5ag7", "sw2x2abc", "sweep-sw2x2abc")
        assert {"dropout", "seed"} <= set(segment.tags) and segment.config["model.dropout"] == 0.0
        assert "dropout" not in segment.config["model"]  # each swept key once (the agent's flat key)
    assert [s.exit_code for s in segments] == [1, 0]
    # the resumed segment continues the axes it plots on (W&B's own _step restarts; no chart uses it)
    first_rows, second_rows = ([r for r in s.history if names.GLOBAL_STEP in r] for s in segments)
    last_epoch = max(r[names.EPOCH] for r in first_rows if "val/acc" in r)
    assert min(r[names.EPOCH] for r in second_rows if "val/acc" in r) == last_epoch + 1
    last_step = max(r[names.GLOBAL_STEP] for r in first_rows if "val/acc" in r)
    assert min(r[names.GLOBAL_STEP] for r in second_rows) > last_step
    assert segments[1].summary["status"] == "completed" and segments[1].summary["epochs"] == 4


# ----------------------------------------------------------------------------------------- small parts
def test_code_version_of_a_checkout_clean_and_dirty(tmp_path):
    from nin_lightning.tracking.summary import git_state

    assert git_state(tmp_path) == {}  # not a checkout
    git = ["git", "-C", str(tmp_path), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "a.py").write_text("x = 1\n")
    subprocess.run([*git, "add", "a.py"], check=True)
    subprocess.run([*git, "commit", "-qm", "a"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    (tmp_path / "outputs").mkdir()
    (tmp_path / "outputs" / "run.log").write_text("untracked: not a change of the code\n")
    assert git_state(tmp_path) == {"commit": head, "dirty": False}
    (tmp_path / "a.py").write_text("x = 2\n")
    assert git_state(tmp_path) == {"commit": head, "dirty": True}
    (tmp_path / "sub").mkdir()
    assert git_state(tmp_path / "sub") == {}  # inside a checkout, but not its top


def test_sweep_names_from_swept_keys():
    from nin_lightning.config.sweep import short_names, sweep_label, swept_keys

    task = ["experiment=quickstart", "model.dropout=0.0,0.5", "seed=range(1,4)", "optimizer.lr=0.1",
            "scheduler=cosine,onecycle"]
    assert swept_keys(task) == ["model.dropout", "seed", "scheduler"]
    assert sweep_label(swept_keys(task)) == "dropout-seed-scheduler"
    assert short_names(["model.width", "dataset.width", "seed"]) == ["model.width", "dataset.width", "seed"]
    assert sweep_label([]) == "sweep"


def test_welch_difference_against_the_formula():
    from scipy.stats import t

    from nin_lightning.report.stats import welch

    a, b = [0.91, 0.93, 0.92, 0.95], [0.88, 0.90, 0.87]
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))  # Welch-Satterthwaite
    diff, se = statistics.fmean(a) - statistics.fmean(b), (va + vb) ** 0.5
    result = welch(a, b)
    assert result.diff == pytest.approx(diff)
    assert (result.low, result.high) == pytest.approx((diff - t.ppf(0.975, df) * se, diff + t.ppf(0.975, df) * se))
    assert result.p == pytest.approx(2 * t.sf(diff / se, df)) and result.note == ""
    assert welch([0.9], b).p is None and "too few seeds" in welch([0.9], b).note
    assert welch([0.9, 0.9], [0.9, 0.9]).p is None


def test_baseline_is_picked_by_value_or_best():
    from nin_lightning.report.jobs import Job
    from nin_lightning.report.table import aggregate, pick_baseline

    jobs = [Job(f"j{i}", {"model.dropout": d, "seed": str(s)}, "completed", {"test/acc": acc})
            for i, (d, s, acc) in enumerate([("0.0", 1, 0.9), ("0.0", 2, 0.8), ("0.5", 1, 0.95), ("0.5", 2, 0.9)])]
    rows = aggregate(jobs, ["model.dropout"])
    assert pick_baseline(rows, None).setting == {"model.dropout": "0.5"}  # the best mean test/acc
    assert pick_baseline(rows, {"model.dropout": "0.0"}).setting == {"model.dropout": "0.0"}
    with pytest.raises(UserError, match="not a swept key"):
        pick_baseline(rows, {"model.width": "2"})
