"""W&B as its SDK and its users expect (issue 21): a `wandb login` counts, WANDB_* variables are honoured,
runs are named by their swept keys, a config a user can filter on, history.csv's metric names, model
artifacts, evaluate/predict/export runs that use them, an Optuna search that maximises, and the published
report as W&B's API receives it.

One real run through the CLI (a `wandb login` netrc for the SDK's own host, W&B variables set, offline
because there is no network here) feeds the tests that decode its `.wandb` file; the rest are in-process.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from nin_lightning.errors import UserError
from tests.conftest import ROOT, cli_env, read_metrics
from tests.wandb_records import offline_runs, read_offline_run

SDK_DEFAULT_HOST = "api.forge.coreweave.com"  # wandb 0.31's Settings().base_url, where `wandb login` saves its key
ENV = {"WANDB_PROJECT": "envproj", "WANDB_ENTITY": "envteam", "WANDB_TAGS": "from-env,second",
       "WANDB_JOB_TYPE": "envjob", "WANDB_NAME": "my-run", "WANDB_NOTES": "notes from the environment"}


def _python(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def logged_in_run(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """`python train.py` with a netrc for the SDK's default host (what `wandb login` writes), the WANDB_*
    variables of ENV, `logger.job_type=cfgjob` (the config wins over WANDB_JOB_TYPE) and log_model=true;
    then `evaluate --wandb offline` on it."""
    tmp = tmp_path_factory.mktemp("wandb")
    env = cli_env(tmp) | ENV
    netrc = tmp / "home" / ".netrc"
    netrc.write_text(f"machine {SDK_DEFAULT_HOST}\n  login user\n  password {'k' * 40}\n")
    netrc.chmod(0o600)
    run_dir = tmp / "run"
    out = _python([str(ROOT / "train.py"), "experiment=quickstart", "trainer.max_epochs=4", "model.width=0.5",
                   "logger.job_type=cfgjob", "logger.log_model=true", "verbose=false", f"hydra.run.dir={run_dir}"],
                  env, tmp)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    (run,) = offline_runs(run_dir)
    evaluated = _python(["-m", "nin_lightning.evaluate", str(run_dir), "--wandb", "offline"],
                        env | {"PYTHONPATH": str(ROOT)}, tmp)
    assert evaluated.returncode == 0, (evaluated.stdout + evaluated.stderr)[-3000:]
    (evaluation,) = [read_offline_run(f) for f in run_dir.glob("eval/best_test/wandb/offline-run-*/run-*.wandb")]
    return SimpleNamespace(dir=run_dir, stdout=out.stdout, run=run, evaluation=evaluation, eval_stdout=evaluated.stdout)


@pytest.mark.slow
def test_a_wandb_login_for_the_sdks_host_is_seen_and_an_unreachable_server_falls_back_in_one_line(logged_in_run):
    """Before: only a netrc entry for api.wandb.ai counted, so this run went offline without a word."""
    lines = [ln for ln in logged_in_run.stdout.splitlines() if "unreachable" in ln]
    assert lines == [f"[nin] W&B server https://{SDK_DEFAULT_HOST} unreachable: logging offline instead (sync later "
                     "with `wandb sync`)"], logged_in_run.stdout[-2000:]
    assert read_metrics(logged_in_run.dir)["status"] == "completed" and logged_in_run.run.exit_code == 0


@pytest.mark.slow
def test_wandb_variables_apply_and_the_config_wins_over_them(logged_in_run):
    run = logged_in_run.run
    assert (run.project, run.name, run.notes) == ("envproj", "my-run", "notes from the environment")
    assert run.job_type == "cfgjob"  # logger.job_type=cfgjob beats WANDB_JOB_TYPE=envjob
    assert {"from-env", "second", "quickstart"} <= set(run.tags), run.tags  # merged with the config's tags


@pytest.mark.slow
def test_the_run_config_has_hydras_choices_and_no_settings_that_do_not_change_the_result(logged_in_run):
    config = logged_in_run.run.config
    assert config["choices"] == {"experiment": "quickstart", "dataset": "digits", "model": "nin",  # as quickstart chose
                                 "optimizer": "sgd", "scheduler": "onecycle", "trainer": "cpu"}
    assert not {"logger", "verbose", "resume", "ckpt_path", "compile_cache_dir", "tags"} & set(config), sorted(config)
    assert "root" not in config["dataset"] and config["model"]["width"] == 0.5


@pytest.mark.slow
def test_wandb_history_uses_history_csvs_names(logged_in_run):
    epochs = [row for row in logged_in_run.run.history if "val/acc" in row]
    assert len(epochs) == 4
    for row in epochs:
        assert {"train/loss", "train/acc", "val/loss", "val/acc", "val/acc_best", "lr", "epoch"} <= set(row), row
    keys = {key for row in logged_in_run.run.history for key in row}
    assert "train/loss_epoch" not in keys and "train/loss_step" in keys  # the step loss has a name of its own
    import csv

    with (logged_in_run.dir / "history.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    for row, logged in zip(rows, epochs, strict=True):
        assert float(row["train/loss"]) == pytest.approx(logged["train/loss"]) and float(row["lr"]) == logged["lr"]


@pytest.mark.slow
def test_log_model_true_logs_best_ckpt_once_with_its_epoch(logged_in_run):
    metrics = read_metrics(logged_in_run.dir)
    (artifact,) = logged_in_run.run.artifacts
    assert (artifact.name, artifact.type, artifact.files) == (f"model-{logged_in_run.run.run_id}", "model",
                                                              ["model.ckpt"])
    assert {"best", f"epoch-{metrics['best_epoch']}"} <= set(artifact.aliases), artifact.aliases


@pytest.mark.slow
def test_evaluate_logs_a_run_of_its_own_job_type_naming_the_model_artifact(logged_in_run):
    ev, run = logged_in_run.evaluation, logged_in_run.run
    assert (ev.job_type, ev.project, ev.group) == ("evaluate", run.project, run.group)
    assert ev.config["model_artifact"] == f"model-{run.run_id}:best" and ev.config["trained_run"] == run.run_id
    assert ev.summary["test/acc"] == pytest.approx(read_metrics(logged_in_run.dir)["test/acc"])
    assert "lineage for online runs only" in logged_in_run.eval_stdout


@pytest.mark.slow
def test_predict_and_export_log_runs_of_their_job_type(logged_in_run, monkeypatch, tmp_path):
    """In-process (the commands' main), offline: each a W&B run of its own job type naming the model."""
    from PIL import Image

    from nin_lightning import export, predict

    monkeypatch.setenv("HOME", str(tmp_path))
    for var in ENV:
        monkeypatch.delenv(var, raising=False)
    Image.new("L", (8, 8), 128).save(tmp_path / "digit.png")
    assert predict.main([str(logged_in_run.dir), str(tmp_path / "digit.png"), "--wandb", "offline",
                         "--out", str(tmp_path / "p" / "pred.csv")]) == 0
    assert export.main([str(logged_in_run.dir), "--wandb", "offline", "--out", str(tmp_path / "e" / "m.onnx")]) == 0
    for folder, job_type, key in (("p", "predict", "images"), ("e", "export", "max_abs_diff")):
        (run,) = [read_offline_run(f) for f in (tmp_path / folder).glob("wandb/offline-run-*/run-*.wandb")]
        assert (run.job_type, run.project) == (job_type, logged_in_run.run.project)
        assert run.config["model_artifact"] == f"model-{logged_in_run.run.run_id}:best" and key in run.summary


TINY = ("experiment=quickstart", "model.width=0.25", "trainer.enable_progress_bar=false")


@pytest.mark.slow
def test_a_resumed_run_stays_in_its_project_with_its_name_and_tags(tmp_path):
    """Adversarial round: the first segment took WANDB_PROJECT/NAME/TAGS; a resume from a shell without them
    logged the same run id into `nin-lightning` under another name (two W&B runs of one id after a sync)."""
    run_dir, env = tmp_path / "run", cli_env(tmp_path)
    first = _python([str(ROOT / "train.py"), *TINY, "trainer.max_epochs=2", f"hydra.run.dir={run_dir}"],
                    env | {"WANDB_PROJECT": "p1", "WANDB_NAME": "firstname", "WANDB_TAGS": "envtag"}, tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    second = _python([str(ROOT / "train.py"), *TINY, "trainer.max_epochs=3", "resume=auto",
                      f"hydra.run.dir={run_dir}"], env, tmp_path)
    assert second.returncode == 0, second.stderr[-2000:]
    segments = offline_runs(run_dir)
    assert len(segments) == 2 and len({s.run_id for s in segments}) == 1
    for segment in segments:
        assert (segment.project, segment.name) == ("p1", "firstname") and "envtag" in segment.tags, segment


@pytest.mark.slow
def test_a_server_that_takes_the_connection_but_never_answers_means_offline(tmp_path):
    """Adversarial round: a listener that never replies killed the run after init_timeout_s with CommError
    (metrics.json left `running`); now one line, and the run logs offline."""
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: [accepted.append(server.accept()[0]) for _ in range(8)], daemon=True).start()
    env = cli_env(tmp_path) | {"WANDB_BASE_URL": f"http://127.0.0.1:{server.getsockname()[1]}",
                               "WANDB_API_KEY": "k" * 40}
    run_dir = tmp_path / "run"
    out = _python([str(ROOT / "train.py"), *TINY, "trainer.max_epochs=1", "logger.mode=online",
                   "logger.init_timeout_s=5", f"hydra.run.dir={run_dir}"], env, tmp_path)
    server.close()
    assert out.returncode == 0, (out.stdout + out.stderr)[-2000:]
    assert sum("W&B server did not answer" in ln for ln in out.stdout.splitlines()) == 1, out.stdout[-2000:]
    assert read_metrics(run_dir)["status"] == "completed" and list((run_dir / "wandb").glob("offline-run-*"))


@pytest.mark.slow
def test_wandb_mode_disabled_leaves_no_wandb_identity(tmp_path):
    """Adversarial round: a disabled run wrote wandb_run.json with entity `dummy`, which evaluate --wandb took."""
    run_dir = tmp_path / "run"
    out = _python([str(ROOT / "train.py"), *TINY, "trainer.max_epochs=1", f"hydra.run.dir={run_dir}"],
                  cli_env(tmp_path) | {"WANDB_MODE": "disabled"}, tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert read_metrics(run_dir)["status"] == "completed" and not (run_dir / "wandb_run.json").exists()


# ----------------------------------------------------------------------------------------- in-process
def test_the_sdks_aliases_of_wandb_mode_are_taken(monkeypatch):
    from nin_lightning.config import LoggerConfig
    from nin_lightning.tracking.wandb_env import wandb_mode

    monkeypatch.setenv("WANDB_MODE", "dryrun")  # the SDK's other name for offline
    assert wandb_mode(LoggerConfig(name="wandb")) == "offline"


def test_run_place_takes_the_config_then_the_environment_then_the_defaults(monkeypatch):
    from nin_lightning.config import LoggerConfig
    from nin_lightning.tracking.wandb_env import run_place

    for var in (*ENV, "WANDB_NAME"):
        monkeypatch.delenv(var, raising=False)
    place = run_place(LoggerConfig(name="wandb"), ["a"], "model.dropout=0.5,seed=2")
    assert (place.project, place.entity, place.job_type, place.name, place.tags) == (
        "nin-lightning", None, "train", "model.dropout=0.5,seed=2", ("a",))
    for var, value in ENV.items():
        monkeypatch.setenv(var, value)
    place = run_place(LoggerConfig(name="wandb"), ["a"], "x")
    assert (place.project, place.entity, place.job_type, place.name) == ("envproj", "envteam", "envjob", "my-run")
    assert place.tags == ("a", "from-env", "second")
    place = run_place(LoggerConfig(name="wandb", project="p", entity="e", job_type="j"), [], "x")
    assert (place.project, place.entity, place.job_type) == ("p", "e", "j")
    agent = run_place(LoggerConfig(name="wandb", project="p"), [], "x", agent={"project": "ap", "entity": "ae"})
    assert (agent.project, agent.entity) == ("ap", "ae")  # the agent's run exists under its project


@pytest.mark.parametrize(("override", "env", "words"), [
    ("logger.project=a/b", {}, "logger.project='a/b': W&B refuses it"),
    ("logger.entity='team?1'", {}, "logger.entity='team?1': W&B refuses it"),
    ("logger.project=" + "p" * 129, {}, "at most 128 characters"),
    ("tags=[" + "t" * 65 + "]", {}, "tags: the tag"),
    ("tags=['']", {}, "tags: the tag '' has 0 characters; W&B takes 1 to 64; drop the empty tag"),  # was: shorten it
    (None, {"WANDB_PROJECT": "x:y"}, "WANDB_PROJECT='x:y': W&B refuses it"),
    (None, {"WANDB_TAGS": "ok," + "t" * 70}, "WANDB_TAGS: the tag"),
    (None, {"WANDB_TAGS": "a,,b"}, "WANDB_TAGS='a,,b' has an empty tag"),  # before: the SDK's ValidationError
    (None, {"WANDB_MODE": "bogus"}, "WANDB_MODE='bogus': W&B takes online"),  # after the run dir said running
])
def test_names_wandb_would_refuse_are_refused_with_the_config(compose_cfg, monkeypatch, override, env, words):
    """Before: W&B refused them in wandb.init, after the run dir said `running` (issue 22, item 2)."""
    from nin_lightning.config import validate

    for var, value in env.items():
        monkeypatch.setenv(var, value)
    with pytest.raises(UserError, match=r"W&B|tags|TAGS") as caught:
        validate(compose_cfg(*([override] if override else [])))
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_a_w_and_b_agents_keys_appear_once_and_noise_stays_out():
    from nin_lightning.tracking.wandb_run import run_config

    plain = {"model": {"dropout": 0.5, "width": 1.0}, "seed": 2, "logger": {"project": "p"}, "verbose": True,
             "resume": "auto", "dataset": {"name": "digits", "root": "/data", "download": False}, "tags": ["a"]}
    config = run_config(plain, {"experiment": "quickstart", "dataset": "digits"}, ["model.dropout", "seed"])
    assert config["model.dropout"] == 0.5 and config["seed"] == 2 and "dropout" not in config["model"]
    assert config["choices"]["experiment"] == "quickstart" and config["choices"]["trainer"] is None
    assert config["dataset"] == {"name": "digits"} and not {"logger", "verbose", "resume", "tags"} & set(config)
    assert plain["model"]["dropout"] == 0.5  # the job's own config is not changed


def test_a_sweep_job_is_named_by_its_swept_keys_only():
    from nin_lightning.config.sweep import job_label

    task = ["experiment=fast_mnist", "dataset=mnist", "model.dropout=0.5", "seed=2", "trainer.max_epochs=3",
            "dataset.val_size=2000", "logger=none"]
    assert job_label(task, ["model.dropout", "seed"]) == "model.dropout=0.5,seed=2"
    assert job_label(task, ["dataset", "seed", "logger"], exclude=["logger"]) == "dataset=mnist,seed=2"


def test_a_sweep_job_dir_is_its_number_and_swept_keys_and_an_older_sweeps_dir_is_kept(tmp_path):
    from nin_lightning.config.sweep import job_dir_resolver

    task = ["experiment=quickstart", "model.dropout=0.5", "seed=2", "trainer.max_epochs=3"]
    dirname = "experiment=quickstart,model.dropout=0.5,seed=2,trainer.max_epochs=3"  # Hydra's override_dirname
    assert job_dir_resolver(tmp_path, 3, task, dirname, []) == f"003_{dirname}"  # no multirun.yaml (Optuna)
    (tmp_path / "multirun.yaml").write_text("hydra:\n  overrides:\n    task: [experiment=quickstart, "
                                            "'model.dropout=0.0,0.5', 'seed=1,2', trainer.max_epochs=3]\n")
    assert job_dir_resolver(tmp_path, 3, task, dirname, []) == "003_model.dropout=0.5,seed=2"
    (tmp_path / f"003_{dirname}").mkdir()  # the same job of this sweep, launched before job dirs were renamed
    assert job_dir_resolver(tmp_path, 3, task, dirname, []) == f"003_{dirname}"  # resume=auto continues it
    # relaunched with the values in another order (seed=2,1): the job is number 1 now, and continues in its dir
    (tmp_path / f"003_{dirname}").rmdir()
    (tmp_path / "003_model.dropout=0.5,seed=2").mkdir()
    relaunch = [*task, "resume=auto"]
    assert job_dir_resolver(tmp_path, 1, relaunch, dirname, []) == "003_model.dropout=0.5,seed=2"  # before: 001_
    other = ["experiment=quickstart", "model.dropout=0.0", "seed=1", "trainer.max_epochs=3", "resume=auto"]
    assert job_dir_resolver(tmp_path, 2, other, dirname, []) == "002_model.dropout=0.0,seed=1"  # a new one
    # a first launch that repeats a value (seed=2,2) keeps both jobs, each in its own dir
    assert job_dir_resolver(tmp_path, 1, task, dirname, []) == "001_model.dropout=0.5,seed=2"


def test_an_ad_hoc_optuna_search_maximises_val_acc_best(tmp_path):
    """Before: `hydra/sweeper=optuna` without the ready preset minimised the objective train.py returns."""
    out = subprocess.run([sys.executable, str(ROOT / "train.py"), "hydra/sweeper=optuna", "--cfg", "hydra"],
                         cwd=tmp_path, env=cli_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "    direction: maximize" in out.stdout.splitlines() and "hydra_optuna_sweeper" in out.stdout


def test_the_published_report_as_wandbs_api_receives_it(monkeypatch):
    """The Report that --publish saves, converted as `Report.save()` converts it for W&B's API (the one server
    look-up it makes on the way, the project's internal id, is answered here: there is no server)."""
    import wandb_workspaces.reports.v2.interface as interface

    from nin_lightning.compat import report_spec
    from nin_lightning.report.wandb_report import build_spec, to_report

    monkeypatch.setattr(interface, "_get_api", lambda: None)
    monkeypatch.setattr(interface, "execute_graphql", lambda api, query, values: {"project": {"internalId": "P1"}})
    swept = ["model.dropout", "optimizer.weight_decay", "experiment", "seed"]
    config_keys = {"model.dropout", "optimizer.weight_decay", "seed", "choices.experiment"}
    spec = build_spec("me", "proj", "g1", swept, config_keys)
    sent = report_spec(to_report(spec))
    grids = [block["metadata"]["panelBankSectionConfig"]["panels"] for block in sent["blocks"]
             if block["type"] == "panel-grid"]
    panels = grids[0]
    (parallel,) = [p["config"] for p in panels if p["viewType"] == "Parallel Coordinates Plot"]
    assert [c["accessor"] for c in parallel["columns"]] == [  # every swept key, seed included
        "config:model.value.dropout", "config:optimizer.value.weight_decay", "config:choices.value.experiment",
        "config:seed.value", "summary:test/acc"]
    lines = {(tuple(p["config"]["metrics"]), p["config"]["groupBy"]) for p in panels
             if p["viewType"] == "Run History Line Plot" and p["config"]["xAxis"] == "epoch"}
    groups = ("model.value.dropout", "optimizer.value.weight_decay", "choices.value.experiment")
    assert lines == {(curve, g) for g in groups for curve in (("val/loss",), ("train/acc", "val/acc"))}
    assert all(p["config"]["groupAgg"] == "mean" and p["config"]["groupArea"] == "stddev" for p in panels[1:])
    assert [p["viewType"] for p in grids[1]] == ["Bar Chart"]
