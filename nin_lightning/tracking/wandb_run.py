"""W&B runs: the Tracker's, one per job, continued across resumes, and a command's on a trained run (`evaluate`,
`predict`, `export` with `--wandb MODE`); what they record (docs/tracking.md)."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import secrets
import shlex
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from nin_lightning import compat
from nin_lightning import metric_names as names
from nin_lightning.atomic_files import atomic_write
from nin_lightning.config import LoggerConfig
from nin_lightning.config.sweep import short_names
from nin_lightning.errors import one_line
from nin_lightning.rundir.layout import BEST_CKPT, WANDB_RUN_FILE, checkpoint_dir
from nin_lightning.rundir.start import wandb_identity
from nin_lightning.status import say
from nin_lightning.tracking.summary import SUMMARY_KEYS
from nin_lightning.tracking.wandb_env import run_place, wandb_mode

CHOICE_GROUPS = ("experiment", "dataset", "model", "optimizer", "scheduler", "trainer")
# Keys (dotted) that do not change what a run computes: kept out of the W&B config.
NOT_RESULT = ("logger", "verbose", "resume", "ckpt_path", "compile_cache_dir", "tags", "dataset.root",
              "dataset.download", "dataset.num_workers")
# define_metric's (name or glob, x-axis, summary); no x-axis: an axis itself, hidden. Explicit names come
# before the globs that also match them: W&B applies an explicit definition over a glob.
AXES: tuple[tuple[str, str | None, str | None], ...] = (
    (names.EPOCH, None, None),
    (names.GLOBAL_STEP, None, None),
    (names.LOSS_STEP, names.GLOBAL_STEP, None),  # one step's loss: a step metric among the train/* epoch ones
    (f"{names.LR_PREFIX}/*", names.GLOBAL_STEP, None),  # lr/pg0 ...: per-step schedules (warm-up, one-cycle)
    (names.EPOCH_LR, names.EPOCH, None),  # the LR each epoch trained with, as in history.csv
    # The best epoch is what a reader of an accuracy column wants; val/acc_best is a running max already.
    (names.acc(names.VAL), names.EPOCH, "max"),
    (names.acc5(names.VAL), names.EPOCH, "max"),
    (names.loss(names.VAL), names.EPOCH, "min"),
    (f"{names.TRAIN}/*", names.EPOCH, None),
    (f"{names.VAL}/*", names.EPOCH, None),
    (f"{names.TEST}/*", names.EPOCH, None),  # the test's one row holds `epoch` too (the epochs trained)
)


def _drop(config: dict[str, Any], dotted: str) -> Any:
    """Remove DOTTED (`model.dropout`) from the nested CONFIG; its value, or None when absent."""
    *parents, last = dotted.split(".")
    node: Any = config
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
    return node.pop(last, None) if isinstance(node, dict) else None


def run_config(plain: Mapping[str, Any], choices: Mapping[str, str], agent_keys: Iterable[str] = ()) -> dict[str, Any]:
    """PLAIN without NOT_RESULT, with Hydra's CHOICES, and each key a W&B agent swept once, flat as it set it."""
    config = copy.deepcopy(dict(plain))
    for key in NOT_RESULT:
        _drop(config, key)
    config["choices"] = {group: choices.get(group) for group in CHOICE_GROUPS}
    for key in agent_keys:
        value = _drop(config, key)
        if value is not None:
            config[key] = value
    return config


def artifact_name(run_id: str) -> str:
    """The model artifact of W&B run RUN_ID (Lightning's WandbLogger uses the same name)."""
    return f"model-{run_id}"


def model_artifact(run_id: str, path: Path, metadata: dict[str, Any]) -> Any:
    """A draft wandb.Artifact of type `model` holding the checkpoint PATH as `model.ckpt`."""
    import wandb

    artifact = wandb.Artifact(artifact_name(run_id), type="model", metadata=metadata)
    artifact.add_file(str(path), name="model.ckpt")
    return artifact


class ModelArtifacts(L.Callback):
    """Logs checkpoints to RUN as `logger.log_model` says; a Callback to know the epoch a checkpoint holds."""

    def __init__(self, run: Any, mode: bool | str) -> None:
        self.run, self.mode = run, mode
        self.epoch = 0  # the epoch (from 1) being trained: a checkpoint written now holds it

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epoch = trainer.current_epoch + 1

    def _log(self, path: Path, aliases: list[str], metadata: dict[str, Any]) -> None:
        self.run.log_artifact(model_artifact(self.run.id, path, {"epoch": self.epoch} | metadata), aliases=aliases)

    def saved(self, checkpoint_callback: Any) -> None:
        """`all`: CHECKPOINT_CALLBACK (a ModelCheckpoint with one fixed file name) has just written its file."""
        if self.mode != "all":
            return
        path = Path(checkpoint_callback.dirpath) / f"{checkpoint_callback.filename}{checkpoint_callback.FILE_EXTENSION}"
        best = checkpoint_callback.monitor is not None
        aliases = ["best", f"epoch-{self.epoch}"] if best else ["last"]
        score = checkpoint_callback.best_model_score if best else None
        self._log(path, aliases, {"monitor": checkpoint_callback.monitor,
                                  "score": None if score is None else float(score)})

    def final(self, best: Path, best_epoch: int | None) -> None:
        """`true`: at the end of a completed run, best.ckpt once, aliases `best` and its epoch."""
        if self.mode is True and best.is_file():
            self.epoch = best_epoch or self.epoch
            self._log(best, ["best", f"epoch-{self.epoch}"], {})


class OshSync(L.Callback):
    """wandb-osh (`logger.osh=true`): after each epoch, a command file in COMMAND_DIR asks to `wandb sync` RUN."""

    def __init__(self, run: Any, command_dir: Path | None) -> None:
        from wandb_osh.hooks import TriggerWandbSyncHook

        self.run_dir = Path(run.dir).parent  # run.dir is the run's files/ folder; wandb sync takes its parent
        self.hook = TriggerWandbSyncHook(command_dir) if command_dir else TriggerWandbSyncHook()

    def trigger(self) -> None:
        """Ask the login node to sync the run now (a command file; the syncer deletes it when done)."""
        self.hook(self.run_dir)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and not trainer.sanity_checking:  # after EpochHistory logged the epoch
            self.trigger()


def sync_command(run_dir: Path, run_id: str) -> str:
    """The shell command that uploads every offline segment of RUN_DIR's W&B run RUN_ID, and no other's (a copied
    run dir holds its original's segments too; quoted: dirs may hold spaces, or a sweep job name's `=` and `,`)."""
    return f"wandb sync {shlex.quote(str(run_dir / 'wandb'))}/offline-run-*-{shlex.quote(run_id)}"


def agent_run() -> dict[str, str]:
    """The W&B sweep agent's run for this process ({} outside one): log into it, or the sweep waits for it."""
    if not os.environ.get("WANDB_SWEEP_ID") or not os.environ.get("WANDB_RUN_ID"):
        return {}
    keys = {"sweep": "WANDB_SWEEP_ID", "id": "WANDB_RUN_ID", "project": "WANDB_PROJECT", "entity": "WANDB_ENTITY"}
    return {key: os.environ[var] for key, var in keys.items() if os.environ.get(var)}


def agent_params() -> list[str]:
    """The W&B sweep's parameter names (model.dropout, seed), from the file WANDB_SWEEP_PARAM_PATH names."""
    import yaml

    path = os.environ.get("WANDB_SWEEP_PARAM_PATH")
    try:
        params = yaml.safe_load(Path(path).read_text()) if path else None
    except (OSError, yaml.YAMLError):
        return []
    return [str(k) for k in params if not str(k).startswith(("_", "wandb_"))] if isinstance(params, dict) else []


class TolerantWandbLogger(WandbLogger):
    """Lightning's WandbLogger, except that a failed write `excuse` explains (the preemption signal, which stops
    W&B's service too) loses only those rows; a saved checkpoint goes to `artifacts`, which names it by epoch."""

    def __init__(self, excuse: Callable[[BaseException], bool] | None = None,
                 artifacts: ModelArtifacts | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.excuse = excuse
        self.artifacts = artifacts

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        if self.artifacts is not None:
            self.artifacts.saved(checkpoint_callback)

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        try:
            super().log_metrics(metrics, step)
        except Exception as exc:
            if self.excuse is None or not self.excuse(exc):
                raise


class Tracker:
    """The job's loggers and the W&B run's lifecycle: init before fit, finish (with exit code) after the job;
    `excuse`: whether a failed W&B write is explained by the preemption signal (callbacks/preemption.py)."""

    def __init__(self, cfg: LoggerConfig, run_dir: Path, config: dict[str, Any], group: str | None,
                 name: str | None, tags: list[str], excuse: Callable[[BaseException], bool] | None = None,
                 identity: dict[str, Any] | None = None, choices: dict[str, str] | None = None) -> None:
        self.cfg, self.run_dir = cfg, run_dir
        self.wandb_run: Any = None
        self.loggers: list[Logger] = []
        self.callbacks: list[Any] = []  # Lightning callbacks the tracker needs (artifacts, wandb-osh's trigger)
        self.osh: OshSync | None = None
        self.artifacts: ModelArtifacts | None = None
        if cfg.name == "csv":
            self.loggers = [CSVLogger(save_dir=str(run_dir), name="csv")]
        elif cfg.name == "wandb" and rank_zero_only.rank != 0:
            # Other DDP ranks get a logger whose experiment is a no-op: no empty W&B runs.
            self.loggers = [WandbLogger(save_dir=str(run_dir))]
        if cfg.name != "wandb" or rank_zero_only.rank != 0:
            return
        import wandb

        mode = wandb_mode(self.cfg)
        # A resumed job continues its W&B run: same id, and the group and name it started with (the resume
        # command's overrides do not make it another job). Under a W&B agent, the agent's run and project.
        saved, agent = identity or {}, agent_run()  # IDENTITY: the W&B run a continued run logs into
        run_id = agent.get("id") or saved.get("id") or secrets.token_hex(4)
        if saved.get("id") and run_id != saved["id"]:
            say(f"W&B agent run {run_id} continues this run dir (its W&B run was {saved['id']})")
        if agent:  # the sweep's runs form a group (the report's --group), tagged with its parameters
            group = group or f"sweep-{agent['sweep']}"
            tags = list(dict.fromkeys([*tags, *short_names(agent_params())]))
        group, name = saved.get("group", self.cfg.group or group), saved.get("name", name)
        resumed = bool(saved.get("id")) and not agent  # a resumed run stays where it began, named and tagged as then
        place = run_place(self.cfg, tags, name, saved if resumed else agent)
        if resumed:
            place = dataclasses.replace(place, name=saved.get("name") or place.name,
                                        tags=tuple(saved.get("tags") or place.tags))

        def init(mode: str) -> Any:
            return wandb.init(
                project=place.project, entity=place.entity, group=group, job_type=place.job_type, name=place.name,
                tags=list(place.tags), config=run_config(config, choices or {}, agent_params() if agent else ()),
                dir=str(self.run_dir), id=run_id, resume="allow", mode=mode,
                settings=wandb.Settings(init_timeout=self.cfg.init_timeout_s, silent=True, console="off",
                                        reinit="finish_previous", **compat.wandb_flush_often(wandb.Settings)),
            )

        try:
            self.wandb_run = init(mode)
        except Exception as exc:  # a server that takes the connection but does not answer (init_timeout_s)
            if mode != "online":
                raise
            say(f"W&B server did not answer ({type(exc).__name__}: {' '.join(str(exc).split())[:120]}): logging "
                "offline instead (sync later with `wandb sync`)")
            wandb.teardown()  # the service still holds the run that never started; offline starts it afresh
            mode = "offline"
            self.wandb_run = init(mode)
        for metric, step_metric, summary in AXES:  # a `metric` record each, in the run's file
            hidden = True if step_metric is None else None
            self.wandb_run.define_metric(metric, step_metric=step_metric, summary=summary, hidden=hidden)
        identity = {"id": run_id, "group": group, "name": place.name, "dir": str(self.run_dir.resolve()),
                    "project": place.project, "entity": place.entity, "tags": list(place.tags)}
        identity |= {"sweep": agent["sweep"]} if agent else {}  # "dir": a copy of the run dir is told apart
        if mode != "disabled":  # a disabled run has no W&B identity to continue (its entity reads "dummy")
            atomic_write(self.run_dir / WANDB_RUN_FILE, json.dumps(identity) + "\n")
        self.artifacts = ModelArtifacts(self.wandb_run, self.cfg.log_model)
        self.loggers = [TolerantWandbLogger(excuse=excuse, artifacts=self.artifacts, experiment=self.wandb_run)]
        if self.cfg.osh and mode == "offline":
            self.osh = OshSync(self.wandb_run, Path(self.cfg.osh_dir) if self.cfg.osh_dir else None)
            self.callbacks.append(self.osh)
        self.callbacks.append(self.artifacts)
        if mode == "offline":
            say(f"W&B offline run in {self.wandb_run.dir.rsplit('/files', 1)[0]}; upload it later with "
                f"`{sync_command(self.run_dir, run_id)}`")
        elif mode == "online":
            say(f"W&B run: {self.wandb_run.url}")

    def finish(self, exit_code: int, metrics: dict[str, Any] | None = None) -> None:
        """Close the W&B run (failed when exit_code != 0); METRICS (metrics.json) become its summary (SUMMARY_KEYS)."""
        if self.wandb_run is None:
            return
        if metrics:
            self.wandb_run.summary.update({k: metrics[k] for k in SUMMARY_KEYS if metrics.get(k) is not None})
        if self.artifacts is not None and (metrics or {}).get("status") == "completed":
            try:
                self.artifacts.final(checkpoint_dir(self.run_dir) / BEST_CKPT, metrics.get("best_epoch"))
            except Exception as exc:  # the run's result stands; the artifact is missing, and said so
                say(f"could not log best.ckpt as a W&B model artifact: {one_line(exc)}")
        import wandb

        self.wandb_run.finish(exit_code=exit_code)
        self.wandb_run = None
        # finish() only asks W&B's service to close the run's files; teardown waits until it has, so
        # the .wandb file is whole when this returns (for a sync, a reader, the next job in this process)
        wandb.teardown()
        if self.osh is not None:  # the finished run's last rows and summary
            self.osh.trigger()


def log_command_run(command: str, mode: str, run_dir: Path, ckpt: str, ckpt_path: Path, out_dir: Path,
                    config: dict[str, Any], summary: dict[str, Any]) -> Any:
    """Log COMMAND's run (MODE: auto | online | offline) into OUT_DIR/wandb/, in the training run's project and
    group, with SUMMARY and the model CKPT_PATH (CKPT of RUN_DIR) as its input; returns its offline dir or URL."""
    import wandb

    trained = wandb_identity(run_dir)
    train_id = trained.get("id") or run_dir.resolve().name
    cfg = LoggerConfig(name="wandb", mode=mode)
    resolved = wandb_mode(cfg)
    place = run_place(cfg, [command], f"{trained.get('name') or run_dir.name} {command}", trained, command)
    artifact = f"{artifact_name(train_id)}:{ckpt}"
    out_dir.mkdir(parents=True, exist_ok=True)
    run = wandb.init(project=place.project, entity=place.entity, group=trained.get("group"), job_type=place.job_type,
                     name=place.name, tags=list(place.tags),
                     config={**config, "model_artifact": artifact, "trained_run": train_id, "ckpt": ckpt},
                     dir=str(out_dir), mode=resolved,
                     settings=wandb.Settings(silent=True, console="off", reinit="finish_previous"))
    # The SDK refuses use_artifact offline ("Cannot use artifact when in offline mode"): the config names it.
    if resolved == "online":  # the same file as the training run logged: the same artifact version
        run.use_artifact(model_artifact(train_id, ckpt_path, {"ckpt": ckpt}), aliases=[ckpt])
    run.summary.update(summary)
    where = run.url if resolved == "online" else str(Path(run.dir).parent)
    run.finish()
    wandb.teardown()  # the run's file is whole when this returns (as in Tracker.finish)
    if resolved == "offline":
        say(f"W&B offline {command} run in {where}; its input {artifact} is named in its config (W&B draws the "
            f"lineage for online runs only); upload it with `wandb sync {where}`")
    elif resolved == "online":
        say(f"W&B {command} run: {where}")
    return where
