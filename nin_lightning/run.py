"""`train(cfg)`: one training job, from a composed config to metrics.json. Used by train.py and tests."""

from __future__ import annotations

import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig

from nin_lightning import speed
from nin_lightning.callbacks import build_callbacks
from nin_lightning.checkpoints import last_checkpoint, read_metrics
from nin_lightning.config import TrainConfig, to_plain_dict, validate
from nin_lightning.console import print_config_tree, say
from nin_lightning.data import build_datamodule
from nin_lightning.distributed import cluster_plugins
from nin_lightning.errors import one_line
from nin_lightning.guards import AtomicCheckpointIO, FiniteLossGuard, warn_if_low_disk
from nin_lightning.local_ranks import LocalRanks
from nin_lightning.models import NiN
from nin_lightning.module import NiNClassifier
from nin_lightning.paths import METRICS_FILE
from nin_lightning.preemption import PREEMPTED_EXIT, PreemptionCheckpoint
from nin_lightning.preflight import preflight
from nin_lightning.quiet import quiet_libraries
from nin_lightning.resume import RNGState, keep_previous_metrics, plan_start, snapshot
from nin_lightning.tracking import Tracker, write_metrics

OBJECTIVE = "val/acc_best"


def _hydra_job() -> tuple[Path | None, str | None, str | None]:
    """(output dir, W&B group, W&B run name) from Hydra's runtime config, if Hydra runs us."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None, None, None
    hc = HydraConfig.get()
    name = hc.job.override_dirname or None
    group = Path(hc.sweep.dir).name if hc.mode == RunMode.MULTIRUN else None
    return Path(hc.runtime.output_dir), group, name


def build_model(conf: TrainConfig, run_config: dict[str, Any] | None = None) -> NiNClassifier:
    m = conf.model
    net = NiN(m.num_classes, m.in_channels, m.preset, m.width, m.dropout, m.batch_norm, m.init, m.init_std,
              m.final_relu)
    # speed switches (speed.configure has turned each `auto` into true/false; unresolved means off)
    net = speed.prepare_model(net, channels_last=m.channels_last is True, compile=m.compile is True)
    return NiNClassifier(net, m.num_classes, conf.optimizer, conf.scheduler, m.label_smoothing, run_config,
                         tta=conf.dataset.tta is True, channels_last=m.channels_last is True)


def build_trainer(conf: TrainConfig, run_dir: Path, loggers: list[Any], extra_callbacks: list[Any] | None = None
                  ) -> L.Trainer:
    kwargs = asdict(speed.apply(conf, speed.resolve(conf)).trainer)  # no `auto` left (idempotent after configure)
    progress = ("bar" if sys.stdout.isatty() else "lines") if kwargs["enable_progress_bar"] else "none"
    kwargs["enable_progress_bar"] = progress == "bar"
    callbacks = build_callbacks(conf.callbacks, run_dir, progress, bool(loggers))
    callbacks += extra_callbacks or []
    callbacks += [FiniteLossGuard(), RNGState(), PreemptionCheckpoint(last_checkpoint(run_dir))]
    return L.Trainer(**kwargs, callbacks=callbacks, logger=loggers or False, default_root_dir=str(run_dir),
                     plugins=[AtomicCheckpointIO(), *cluster_plugins(conf)])


def load_data_early(datamodule: L.LightningDataModule) -> None:
    """Download and load the data before the Trainer exists, so data errors come first and alone.

    Local rank 0 of each node downloads (like Lightning's prepare_data_per_node); the node's other ranks,
    which Slurm or torchrun start at the same time, first wait for its files. No process group exists yet,
    so they poll the dataset's own files. Without a local rank in the environment: the global rank.
    """
    from nin_lightning.data.base import NiNDataModule, local_rank

    if local_rank(default=rank_zero_only.rank) == 0:
        datamodule.prepare_data()
    elif isinstance(datamodule, NiNDataModule) and datamodule.cfg.download:
        datamodule.wait_for_data()
    datamodule.setup("fit")


def _close_job(run_dir: Path, metrics: dict[str, Any], exit_code: int, ranks: LocalRanks, tracker: Tracker,
               trainer: L.Trainer | None) -> OSError | None:
    """Write metrics.json, stop child ranks, close the W&B run, let submitit requeue: each step always runs.

    Returns the error of writing metrics.json (a full disk, say) instead of raising it, so that it neither
    skips the steps after it nor hides the error that ended the run."""
    closing_error: OSError | None = None
    try:
        path = write_metrics(run_dir, metrics)
    except OSError as exc:
        closing_error, path = exc, run_dir / METRICS_FILE
        say(f"could not write {path}: {one_line(exc)}")
    ranks.close()
    try:
        if metrics["status"] == "preempted" and tracker.run is not None:
            tracker.run.mark_preempting()
        tracker.finish(exit_code)
    except Exception as exc:  # on SIGTERM, Slurm stops W&B's service process too
        if metrics["status"] != "preempted":
            raise
        say(f"W&B run not closed cleanly after the signal ({one_line(exc)}); it resumes with the job")
    acc = metrics.get("test/acc")
    say(f"{metrics['status']}: test/acc={'-' if acc is None else f'{float(acc):.4f}'} -> {path}")
    for callback in trainer.callbacks if trainer else []:
        if isinstance(callback, PreemptionCheckpoint):
            callback.hand_over()  # submitit's time-out/preemption signal: it requeues the job now
    return closing_error


def _preempted(trainer: L.Trainer | None, exc: BaseException) -> bool:
    """Whether the job stopped because of the preemption signal (SIGTERM or submitit's)."""
    callbacks = trainer.callbacks if trainer else []
    return any(isinstance(cb, PreemptionCheckpoint) and cb.explains(exc) for cb in callbacks)


def train(cfg: DictConfig, run_dir: Path | None = None, callbacks: list[Any] | None = None) -> float:
    """Train, test with the best checkpoint, write metrics.json; return val/acc_best (a sweeper's objective).

    `callbacks`: extra Lightning callbacks (benchmarks and tests use it to observe a run)."""
    started = time.perf_counter()
    quiet_libraries()
    conf = validate(cfg)
    preflight(conf)  # trainer=gpu without a GPU, missing data files etc.: one line, before any work
    hydra_dir, group, name = _hydra_job()
    run_dir = Path(run_dir or hydra_dir or "outputs/run")
    run_dir.mkdir(parents=True, exist_ok=True)
    plain = to_plain_dict(cfg)
    start_ckpt, finished = plan_start(conf.resume, conf.ckpt_path, plain, run_dir)
    if finished is not None:  # a finished run is left as it is
        return float(finished.get(OBJECTIVE) or 0.0)
    earlier_wall_s = 0.0  # wall_time_s counts every segment of a resumed run
    if start_ckpt is not None and conf.ckpt_path is None:
        earlier_wall_s = float(read_metrics(run_dir).get("wall_time_s") or 0.0)
        keep_previous_metrics(run_dir)  # an extended run's failure must not eat its earlier result
    print_config_tree(plain)
    plan = speed.configure(conf)  # precision, channels_last, compile, cudnn, fused optimizer, TTA: `auto` -> per device
    L.seed_everything(conf.seed, workers=True, verbose=False)

    warn_if_low_disk(run_dir, conf.callbacks.min_free_disk_gb)
    datamodule = build_datamodule(conf.dataset)
    load_data_early(datamodule)
    model = build_model(conf, snapshot(plain))
    chosen = plan.record()  # what each `auto` speed switch became: in the W&B config and metrics.json
    tracker = Tracker(conf.logger, run_dir, plain | {"speed": chosen}, group, name or run_dir.name, conf.tags)
    metrics: dict[str, Any] = {"status": "failed", "seed": conf.seed} | {f"speed/{k}": v for k, v in chosen.items()}
    exit_code = 1
    ranks = LocalRanks()
    trainer: L.Trainer | None = None
    try:
        ranks = LocalRanks.start(conf, run_dir)  # DDP under -m: this job's ranks, in this job's dir
        trainer = build_trainer(conf, run_dir, tracker.loggers, callbacks)
        trainer.fit(model, datamodule=datamodule, ckpt_path=str(start_ckpt) if start_ckpt else None)
        metrics.update({k: v for k, v in trainer.callback_metrics.items() if k.startswith("val/")})
        metrics["epochs"] = trainer.current_epoch
        metrics["global_step"] = trainer.global_step
        has_best = bool(trainer.checkpoint_callback and trainer.checkpoint_callback.best_model_path)
        results = trainer.test(model, datamodule=datamodule, ckpt_path="best" if has_best else None,
                               verbose=False)
        metrics.update(results[0] if results else {})
        metrics["status"], exit_code = "completed", 0
    except BaseException as exc:
        metrics["error"] = one_line(exc)
        metrics["epochs"] = trainer.current_epoch if trainer else 0
        ranks.stop_watching()
        if ranks.dead():  # a DDP rank of this job died (local_ranks.LocalRanks): the job failed, not the sweep
            metrics["error"] = ranks.failure
            raise RuntimeError(f"{ranks.failure}; its output is above") from exc
        preempted = _preempted(trainer, exc)
        if isinstance(exc, KeyboardInterrupt | SystemExit) and not preempted:  # Ctrl-C: Lightning exits 1
            metrics["status"], metrics["error"] = "interrupted", "stopped by the user (Ctrl-C) or a signal"
        if preempted:  # SIGTERM (Slurm requeue/preemption): last.ckpt is saved, exit non-zero
            metrics["status"], metrics["error"] = "preempted", "stopped by SIGTERM (preemption, requeue or kill)"
            raise SystemExit(PREEMPTED_EXIT) from exc
        raise
    finally:
        metrics["wall_time_s"] = round(earlier_wall_s + time.perf_counter() - started, 3)
        closing_error = _close_job(run_dir, metrics, exit_code, ranks, tracker, trainer)
    if closing_error is not None:  # the run itself went well, but its metrics.json could not be written
        raise closing_error
    return float(metrics.get(OBJECTIVE, 0.0))
