"""`train(cfg)`: one training job, from a composed config to metrics.json. Used by train.py and tests."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig

from nin_lightning import speed
from nin_lightning.callbacks import build_callbacks
from nin_lightning.checkpoints import last_checkpoint, resolve_start
from nin_lightning.config import TrainConfig, to_plain_dict, validate
from nin_lightning.console import print_config_tree
from nin_lightning.data import build_datamodule
from nin_lightning.distributed import LocalRanks, check_devices, cluster_plugins
from nin_lightning.errors import one_line
from nin_lightning.guards import AtomicCheckpointIO, FiniteLossGuard, warn_if_low_disk
from nin_lightning.models import NiN
from nin_lightning.module import NiNClassifier
from nin_lightning.preemption import PREEMPTED_EXIT, PreemptionCheckpoint, is_preemption
from nin_lightning.resume import RNGState, check_resume, requeued_resume, snapshot
from nin_lightning.tracking import Tracker, say, write_metrics

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
    callbacks = build_callbacks(conf.callbacks, conf.scheduler, run_dir, kwargs["enable_progress_bar"],
                                bool(loggers))
    callbacks += extra_callbacks or []
    callbacks += [FiniteLossGuard(), RNGState(), PreemptionCheckpoint(last_checkpoint(run_dir))]
    return L.Trainer(**kwargs, callbacks=callbacks, logger=loggers or False, default_root_dir=str(run_dir),
                     plugins=[AtomicCheckpointIO(), *cluster_plugins(conf)])


def load_data_early(datamodule: L.LightningDataModule) -> None:
    """Download (rank 0) and load the data before the Trainer exists, so data errors come first and alone."""
    if rank_zero_only.rank == 0:
        datamodule.prepare_data()
    datamodule.setup("fit")


def train(cfg: DictConfig, run_dir: Path | None = None, callbacks: list[Any] | None = None) -> float:
    """Train, test with the best checkpoint, write metrics.json; return val/acc_best (a sweeper's objective).

    `callbacks`: extra Lightning callbacks (benchmarks and tests use it to observe a run)."""
    started = time.perf_counter()
    conf = validate(cfg)
    check_devices(conf)  # trainer=gpu without a GPU etc.: one line, before any work
    hydra_dir, group, name = _hydra_job()
    run_dir = Path(run_dir or hydra_dir or "outputs/run")
    run_dir.mkdir(parents=True, exist_ok=True)
    start_ckpt = resolve_start(run_dir, requeued_resume(conf.resume, run_dir=run_dir), conf.ckpt_path)
    plain = to_plain_dict(cfg)
    if start_ckpt is not None:  # refuses a changed model/dataset; a finished run is left as it is
        finished = check_resume(start_ckpt, plain, run_dir, same_run=conf.ckpt_path is None)
        if finished is not None:
            return float(finished.get(OBJECTIVE) or 0.0)
    print_config_tree(plain)
    speed.configure(conf)  # precision, channels_last, compile, cudnn, fused optimizer, TTA: `auto` -> per device
    L.seed_everything(conf.seed, workers=True, verbose=False)

    warn_if_low_disk(run_dir, conf.callbacks.min_free_disk_gb)
    datamodule = build_datamodule(conf.dataset)
    load_data_early(datamodule)
    model = build_model(conf, snapshot(plain))
    tracker = Tracker(conf.logger, run_dir, plain, group, name or run_dir.name, conf.tags)
    metrics: dict[str, Any] = {"status": "failed", "seed": conf.seed}
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
        metrics["status"] = "interrupted" if trainer.interrupted else "completed"
        exit_code = 0 if metrics["status"] == "completed" else 1
    except BaseException as exc:
        metrics["error"] = one_line(exc)
        if is_preemption(exc):  # SIGTERM (Slurm requeue/preemption): last.ckpt is saved, exit non-zero
            metrics["status"], metrics["error"] = "preempted", "stopped by SIGTERM (preemption, requeue or kill)"
            metrics["epochs"] = trainer.current_epoch if trainer else None
            raise SystemExit(PREEMPTED_EXIT) from exc
        raise
    finally:
        metrics["wall_time_s"] = round(time.perf_counter() - started, 3)
        path = write_metrics(run_dir, metrics)
        ranks.close()
        try:
            if metrics["status"] == "preempted" and tracker.run is not None:
                tracker.run.mark_preempting()
            tracker.finish(exit_code)
        except Exception as exc:  # on SIGTERM, Slurm stops W&B's service process too
            if metrics["status"] != "preempted":
                raise
            say(f"W&B run not closed cleanly after the signal ({one_line(exc)}); it resumes with the job")
        say(f"{metrics['status']}: test/acc={metrics.get('test/acc')} -> {path}")
        for callback in trainer.callbacks if trainer else []:
            if isinstance(callback, PreemptionCheckpoint):
                callback.hand_over()  # submitit's time-out/preemption signal: it requeues the job now
    return float(metrics.get(OBJECTIVE, 0.0))
