"""A W&B run for a command on a trained run (`evaluate`, `predict`, `export` with `--wandb MODE`; docs/tracking.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nin_lightning.config import LoggerConfig
from nin_lightning.rundir.start import wandb_identity
from nin_lightning.status import say
from nin_lightning.tracking.wandb_env import run_place, wandb_mode
from nin_lightning.tracking.wandb_run import artifact_name, model_artifact


def log_command_run(command: str, mode: str, run_dir: Path, ckpt: str, ckpt_path: Path, out_dir: Path,
                    config: dict[str, Any], summary: dict[str, Any]) -> Any:
    """Log COMMAND's run (MODE: auto | online | offline) into OUT_DIR/wandb/, in the training run's project and
    group, with SUMMARY and the model CKPT_PATH (CKPT of RUN_DIR) as its input; returns its offline dir or URL."""
    import wandb

    trained = wandb_identity(run_dir)
    train_id = trained.get("id") or run_dir.resolve().name
    cfg = LoggerConfig(name="wandb", mode=mode)
    resolved = wandb_mode(cfg)
    place = run_place(cfg, [command], f"{trained.get('name') or run_dir.name} {command}", job_type=command)
    artifact = f"{artifact_name(train_id)}:{ckpt}"
    out_dir.mkdir(parents=True, exist_ok=True)
    run = wandb.init(project=trained.get("project") or place.project, entity=trained.get("entity") or place.entity,
                     group=trained.get("group"), job_type=place.job_type, name=place.name, tags=list(place.tags),
                     config={**config, "model_artifact": artifact, "trained_run": train_id, "ckpt": ckpt},
                     dir=str(out_dir), mode=resolved,
                     settings=wandb.Settings(silent=True, console="off", reinit="finish_previous"))
    # The SDK refuses use_artifact offline ("Cannot use artifact when in offline mode"): the config names it.
    if resolved == "online":  # the same file as the training run logged: the same artifact version
        run.use_artifact(model_artifact(train_id, ckpt_path, {"ckpt": ckpt}), aliases=[ckpt])
    run.summary.update(summary)
    where = run.url if resolved == "online" else str(Path(run.dir).parent)
    run.finish()
    wandb.teardown()  # the run's file is whole when this returns (tracking/wandb_run.py)
    if resolved == "offline":
        say(f"W&B offline {command} run in {where}; its input {artifact} is named in its config (W&B draws the "
            f"lineage for online runs only); upload it with `wandb sync {where}`")
    elif resolved == "online":
        say(f"W&B {command} run: {where}")
    return where
