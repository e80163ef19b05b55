"""The session's finished run (tests/conftest.py `trained_run`), which the tests that need a finished run, a
checkpoint or a run dir copy: it is what `python train.py SHARED_RUN` leaves, and training it in this process
leaves nothing of itself in the process."""

from __future__ import annotations

import json
import logging
import os
import random
import signal

import torch
import yaml

from tests.conftest import SHARED_RUN, _process_state_restored, read_metrics, snapshot
from tests.wandb_records import offline_runs


def test_the_shared_run_is_what_the_cli_leaves(trained_run):
    metrics = read_metrics(trained_run)
    assert metrics["status"] == "completed" and metrics["epochs"] == 3 and metrics["test/acc"] >= 0.85, metrics
    assert yaml.safe_load((trained_run / ".hydra" / "overrides.yaml").read_text()) == list(SHARED_RUN)
    assert yaml.safe_load((trained_run / ".hydra" / "config.yaml").read_text())["model"]["width"] == 0.5
    assert "mode: RUN" in (trained_run / ".hydra" / "hydra.yaml").read_text()
    assert {p.name for p in (trained_run / "checkpoints").iterdir()} >= {"best.ckpt", "last.ckpt"}
    assert "[nin] completed: test/acc=" in (trained_run / "train.log").read_text()
    (run,) = offline_runs(trained_run)  # W&B offline: no login in the environment it ran in
    identity = json.loads((trained_run / "wandb_run.json").read_text())
    assert run.run_id == identity["id"] and identity["dir"] == str(trained_run.resolve())
    assert run.name == "experiment=quickstart,model.width=0.5,trainer.max_epochs=3"  # the CLI's name for it


def test_a_run_copy_is_a_run_of_its_own(trained_run, run_copy):
    identity = json.loads((run_copy / "wandb_run.json").read_text())
    assert identity["dir"] == str(run_copy.resolve())
    original, copied = snapshot(trained_run), snapshot(run_copy)
    # every file as it was but wandb_run.json (and wandb/latest-run, a symlink in the original, copied as a dir)
    assert {k for k in original if copied.get(k) != original[k]} == {"wandb_run.json"}


def test_what_a_run_in_this_process_changes_is_put_back(tmp_path):
    env, cwd, sigterm = dict(os.environ), os.getcwd(), signal.getsignal(signal.SIGTERM)
    root = logging.getLogger()
    handlers, level, threads = list(root.handlers), root.level, torch.get_num_threads()
    python_rng, torch_rng = random.getstate(), torch.get_rng_state()
    with _process_state_restored():
        os.environ["MASTER_PORT"] = "12345"
        os.environ["PL_GLOBAL_SEED"] = "42"
        os.environ.pop("PATH", None)
        os.chdir(tmp_path)
        signal.signal(signal.SIGTERM, lambda *_: None)
        root.addHandler(logging.FileHandler(tmp_path / "x.log"))
        root.setLevel(logging.DEBUG)
        torch.set_num_threads(1)
        random.seed(0)
        torch.manual_seed(0)
    assert dict(os.environ) == env and os.getcwd() == cwd and signal.getsignal(signal.SIGTERM) == sigterm
    assert root.handlers == handlers and root.level == level and torch.get_num_threads() == threads
    assert random.getstate() == python_rng and torch.equal(torch.get_rng_state(), torch_rng)
