"""What the console says: --help with the real options only, a schema refused as an option, a quiet run
that still states the facts (overrides, run dir, data, model size, device), and no silent surprises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, cli_env, error_lines, read_metrics

QUICK_S = 120  # a hang detector: these commands take a few seconds


def _train(tmp: Path, *args: str, timeout: float = QUICK_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=tmp, env=cli_env(tmp),
                          capture_output=True, text=True, timeout=timeout)


def test_help_lists_each_groups_real_options_only(tmp_path):
    result = _train(tmp_path, "--help")
    assert result.returncode == 0, result.stderr[-2000:]
    groups = dict(line.split(": ", 1) for line in result.stdout.splitlines()
                  if ": " in line and line.split(": ", 1)[0] in ("dataset", "scheduler", "optimizer", "trainer",
                                                                   "hydra/launcher"))
    assert groups["dataset"] == "cifar10, cifar100, digits, mnist, svhn"
    assert groups["optimizer"] == "adamw, sgd"
    assert {"dry", "local", "slurm"} <= set(groups["hydra/launcher"].split(", "))
    assert "_schema" not in result.stdout
    assert "verbose: false" in result.stdout  # the config, with the console switch


@pytest.mark.parametrize("choice", ["dataset=dataset_schema", "scheduler=cosine_schema"])
def test_a_schema_chosen_as_an_option_is_one_line_and_leaves_no_run_dir(tmp_path, choice):
    """dataset_schema failed with a message about a missing mandatory value; cosine_schema even trained."""
    result = _train(tmp_path, choice, "logger=none")
    assert result.returncode == 2
    (line,) = error_lines(result.stderr)
    group = choice.split("=")[0]
    assert line.startswith(f"error: {choice}: ") and "not an option" in line and "choose one of:" in line
    assert "_schema" not in line.split("choose one of:")[1] and "Traceback" not in result.stderr
    assert ("cifar10, cifar100" if group == "dataset" else "constant, cosine,") in line
    runs = tmp_path / "outputs" / "runs"
    assert not runs.exists() or not any(runs.iterdir())


@pytest.fixture(scope="module")
def quiet_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess[str], Path]:
    """A short real run (a pipe, not a terminal) whose multistep milestones lie partly past its last epoch."""
    tmp = tmp_path_factory.mktemp("quiet")
    run_dir = tmp / "outputs" / "runs" / "quiet"
    result = _train(tmp, "experiment=quickstart", "scheduler=multistep", "scheduler.milestones=[3,6]",
                    "trainer.max_epochs=4", "logger=csv", "trainer.log_every_n_steps=50", f"hydra.run.dir={run_dir}",
                    timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result, run_dir


@pytest.mark.slow
def test_a_run_prints_the_facts_and_not_the_config_tree(quiet_run):
    result, run_dir = quiet_run
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "completed" and metrics["test/acc"] >= 0.8  # it learned
    out = result.stdout.splitlines()
    facts = [line for line in out if line.startswith("[nin] ")]
    assert ("[nin] run: experiment=quickstart scheduler=multistep scheduler.milestones=[3,6] trainer.max_epochs=4 "
            "logger=csv trainer.log_every_n_steps=50 -> outputs/runs/quiet"
            ) in facts  # the overrides; the run dir, relative to the working dir
    assert any(line.startswith("[nin] data: digits: 1,257 train / 180 val / 360 test images of 1x8x8, 10 classes")
               for line in facts)
    (model,) = [line for line in facts if line.startswith("[nin] model: NiN")]
    assert "350,388 parameters" in model and "4.14 M multiply-adds per image" in model
    assert any(line.startswith("[nin] speed (cpu): precision=") for line in facts)
    assert not any("FLOPs" in line or "├" in line or "GPU available" in line for line in out)
    assert len(out) <= 12 + 4, result.stdout  # the facts, one line per epoch, the result
    log = (run_dir / "train.log").read_text()
    assert "GPU available" in log and "[nin] model: NiN" in log  # the log keeps Lightning's lines too


@pytest.mark.slow
def test_lightnings_warnings_go_to_train_log_with_the_key_to_change(quiet_run):
    """Lightning's "number of training batches (20) is smaller than the logging interval
    Trainer(log_every_n_steps=50)" reached the quiet console, in Python API words. Now train.log has it, with
    the config key."""
    result, run_dir = quiet_run
    assert "logging interval" not in result.stdout + result.stderr
    (line,) = [ln for ln in (run_dir / "train.log").read_text().splitlines() if "logging interval" in ln]
    assert "trainer.log_every_n_steps=50" in line and "change it with trainer.log_every_n_steps=N" in line, line
    assert "Trainer(" not in line


def test_a_split_that_validates_more_than_it_trains_is_a_line_at_the_start(compose_cfg, tmp_path, caplog):
    """dataset.val_size=0.6 on digits: 575 train / 862 val images, said in one line after the data line."""
    from nin_lightning.config import JobContext, validate
    from nin_lightning.data import build_datamodule
    from nin_lightning.run import announce, model_size

    conf = validate(compose_cfg("dataset.val_size=0.6"))
    datamodule = build_datamodule(conf.dataset)
    datamodule.setup("fit")
    caplog.set_level("INFO", logger="nin_lightning")
    announce(JobContext(), tmp_path, datamodule, conf, model_size(conf))
    lines = list(caplog.messages)
    assert lines[1].startswith("[nin] data: digits: 575 train / 862 val")
    assert lines[2].startswith("[nin] dataset.val_size=0.6 gives validation 862 images and training only 575"), lines
    balanced = validate(compose_cfg())
    datamodule = build_datamodule(balanced.dataset)
    datamodule.setup("fit")
    caplog.clear()
    announce(JobContext(), tmp_path, datamodule, balanced, model_size(balanced))
    assert len(caplog.messages) == 3 and not any("gives validation" in line for line in caplog.messages)


@pytest.mark.slow
def test_milestones_past_the_last_epoch_are_warned_at_the_start(quiet_run):
    result, run_dir = quiet_run
    warning = ("[nin] warning: scheduler.milestones=[3, 6]: 6 is not below trainer.max_epochs=4, so the LR never "
               "changes there")
    lines = result.stdout.splitlines()
    (index,) = [i for i, line in enumerate(lines) if line.startswith(warning)]
    assert index < min(i for i, line in enumerate(lines) if line.startswith("epoch "))  # before training
    assert warning in (run_dir / "train.log").read_text()


def test_verbose_prints_the_config_tree(tmp_path):
    """verbose=true: the full config on the console (here a run that then stops at its data, at once)."""
    result = _train(tmp_path, "verbose=true", "dataset=mnist", f"dataset.root={tmp_path / 'none'}", "logger=none")
    assert result.returncode == 2
    assert "├── dataset" in result.stdout and "│   ├── name: 'mnist'" in result.stdout
    quiet = _train(tmp_path, "dataset=mnist", f"dataset.root={tmp_path / 'none'}", "logger=none")
    assert quiet.returncode == 2 and "├" not in quiet.stdout
