"""`train(cfg, job)`: one training job, from a composed config to metrics.json, as a list of named steps
(docs/architecture.md). A notebook or a test calls it directly: `train(cfg, JobContext(run_dir=Path("runs/a")))`."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig

from nin_lightning import compat, metric_names, speed
from nin_lightning.callbacks import PreemptionCheckpoint, best_epoch, build_callbacks
from nin_lightning.cluster import slurm
from nin_lightning.cluster.limits import check_devices, check_memory, check_workers
from nin_lightning.cluster.local_ranks import LocalRanks
from nin_lightning.config import JobContext, TrainConfig, surprises, to_plain_dict, validate
from nin_lightning.data import build_datamodule, check_data_files
from nin_lightning.data.base import NiNDataModule
from nin_lightning.errors import add_next_step, one_line, user_error
from nin_lightning.models import NiN
from nin_lightning.module import NET_KEYS, NiNClassifier
from nin_lightning.rundir import RunDir, Start, check_not_a_copy, last_checkpoint, read_metrics, snapshot
from nin_lightning.rundir.checkpoint_io import AtomicCheckpointIO
from nin_lightning.rundir.closing import Ending, RunClosing, abandoned_if_refused, seed_of
from nin_lightning.rundir.disk import warn_if_low_disk
from nin_lightning.rundir.history import read_history
from nin_lightning.rundir.layout import BEST_CKPT, DEFAULT_RUN_DIR, HISTORY_FILE
from nin_lightning.rundir.start import resume_command
from nin_lightning.status import say, shown_path
from nin_lightning.tracking import Tracker, activations_per_image, code_version, model_cost
from nin_lightning.tracking.summary import code_and_size_keys

OBJECTIVE = metric_names.VAL_ACC_BEST  # what train() returns: the value a sweeper maximises


def build_model(conf: TrainConfig, plan: speed.SpeedPlan, run_config: dict[str, Any] | None = None,
                class_names: list[str] | None = None) -> NiNClassifier:
    """NiN's LightningModule with the plan's choices, all as plain values (which every checkpoint keeps)."""
    m = conf.model
    return NiNClassifier(**{key: getattr(m, key) for key in NET_KEYS}, label_smoothing=m.label_smoothing,
                         optimizer=asdict(conf.optimizer), scheduler=asdict(conf.scheduler), tta=plan.tta,
                         channels_last=plan.channels_last, compile=plan.compile,
                         compile_backend=plan.compile_backend, optimizer_impl=plan.optimizer_impl,
                         dataset=asdict(conf.dataset), class_names=class_names, run_config=run_config)


def _count(conf: TrainConfig, count: Callable[[NiN, tuple[int, int, int]], Any]) -> Any:
    """COUNT(net, input shape) of the configured model, built on the meta device (nothing allocated)."""
    with torch.device("meta"):
        net = NiN(**{key: getattr(conf.model, key) for key in NET_KEYS})
    return count(net, (conf.dataset.in_channels, conf.dataset.image_size, conf.dataset.image_size))


def model_size(conf: TrainConfig) -> dict[str, int]:
    """params and MACs per image of the configured model."""
    return _count(conf, model_cost)


def activations(conf: TrainConfig) -> int:
    """Values a training step keeps per image (tracking/summary.py)."""
    return _count(conf, activations_per_image)


def build_trainer(conf: TrainConfig, plan: speed.SpeedPlan, callbacks: list[Any], loggers: list[Any],
                  run_dir: Path, start: Start | None = None, strategy: Any = None, progress: str | None = None
                  ) -> L.Trainer:
    """The Trainer: the config's `trainer` keys, with the plan's precision and cuDNN benchmark."""
    kwargs = asdict(conf.trainer) | {"precision": plan.precision, "benchmark": plan.benchmark}
    kwargs["strategy"] = strategy or conf.trainer.strategy
    kwargs["enable_progress_bar"] = (progress or progress_mode(conf)) == "bar"  # as build_callbacks was told
    kwargs["enable_model_summary"] = False  # its FLOPs read 0 without an example input; model_line has the size
    kwargs["inference_mode"] = not plan.compile  # dynamo guards on the grad mode: a third mode, a third compile
    preloaded = (start.path, start.checkpoint) if start and start.path and start.checkpoint is not None else None
    checkpoint_io = AtomicCheckpointIO(preloaded, durable=lambda path: path.name != BEST_CKPT)  # fsynced at the end
    return L.Trainer(**kwargs, callbacks=callbacks, logger=loggers or False, default_root_dir=str(run_dir),
                     plugins=[checkpoint_io, *slurm.cluster_plugins(conf)])


def progress_mode(conf: TrainConfig) -> str:
    """`bar` on a terminal, `lines` (one per epoch) in logs and pipes, `none` when switched off."""
    if not conf.trainer.enable_progress_bar:
        return "none"
    return "bar" if sys.stdout.isatty() else "lines"


def warn_of_surprises(conf: TrainConfig) -> None:
    """Accepted, but likely not what was meant (milestones after the last epoch): one line each, at the start."""
    for line in surprises(conf):
        say(line)


def preflight(conf: TrainConfig, job: JobContext, size: dict[str, int]) -> int:
    """Everything that can fail before any work, one line each; returns the activations per image."""
    check_devices(conf, job)
    speed.check_backend(conf)
    check_workers(conf.dataset.num_workers)
    per_image = activations(conf)
    check_memory(conf, size["params"], per_image)
    check_data_files(conf.dataset)
    return per_image


def load_data_early(datamodule: NiNDataModule) -> NiNDataModule:
    """Load the data before anything is written, so data errors come first; local rank 0 of each node downloads
    or extracts (like Lightning's prepare_data_per_node) while the node's other ranks poll for its files."""
    if slurm.local_rank(default=slurm.process_rank()) == 0:
        datamodule.prepare_data()
    elif datamodule.cfg.download or datamodule.placed_archives():  # being downloaded or extracted by rank 0
        datamodule.wait_for_data()
    datamodule.setup("fit")
    return datamodule


def announce(job: JobContext, run_dir: Path, datamodule: NiNDataModule, conf: TrainConfig,
             size: dict[str, int]) -> None:
    """The facts that matter, once the run begins: what was asked for and where it goes, the data, the model."""
    say(f"run: {' '.join(job.overrides) or '(defaults, no overrides)'} -> {shown_path(run_dir)}")
    say(datamodule.describe())
    if (note := datamodule.split_note()) is not None:  # validation at least as large as training
        say(note)
    say(model_line(conf, size))


def model_line(conf: TrainConfig, size: dict[str, int]) -> str:
    """`model: NiN (...): N parameters, M multiply-adds per image` (Lightning's summary says FLOPs 0: it is off)."""
    m = conf.model
    kind = f"{m.preset} widths x{m.width:g}, {'BatchNorm' if m.batch_norm else 'no BatchNorm'}, dropout {m.dropout:g}"
    params, macs = (f"{n / 1e6:.3g} M" if n >= 1_000_000 else f"{n:,}" for n in (size["params"], size["macs"]))
    return f"model: NiN ({kind}): {params} parameters, {macs} multiply-adds per image"


def plan_start(run: RunDir, conf: TrainConfig, plain: dict[str, Any]) -> Start:
    """Where this start of the run begins (rundir/start.py decides); a requeued Slurm job says so."""
    restarts = slurm.restart_count()
    start = run.plan(conf.resume, conf.ckpt_path, snapshot(plain), restarts)
    moved = check_not_a_copy(run.path, start.wandb) if start.wandb and conf.logger.name == "wandb" else None
    if moved:
        say(moved)
    if restarts:
        say(slurm.restart_note(restarts, run.path, last_checkpoint(run.path).is_file()))
    if start.note:
        say(start.note)
    return start


def plan_speed(conf: TrainConfig, datamodule: NiNDataModule) -> speed.SpeedPlan:
    """Every `auto` speed switch for this device (a compile tried once here); the data follow its choices."""
    plan = speed.resolve(conf, data_bytes=datamodule.nbytes())
    if plan.compile:
        speed.use_compile_cache(conf.compile_cache_dir)
        plan = speed.check_compile(plan)
    datamodule.use_plan(device_resident=plan.device_resident, static_shapes=plan.compile)
    return plan


def train(cfg: DictConfig, job: JobContext | None = None, callbacks: list[Any] | None = None,
          conf: TrainConfig | None = None) -> float:
    """Train, test with the best checkpoint, write metrics.json; return val/acc_best (a sweeper's objective).

    `callbacks`: extra Lightning callbacks (to observe a run). `conf`: `cfg` validated already (by the CLI)."""
    job = job or JobContext()
    with abandoned_if_refused(job, slurm.process_rank() == 0, seed_of(cfg)) as claimed:  # nothing written yet
        conf = conf or validate(cfg)
        plain = to_plain_dict(cfg)
        warn_of_surprises(conf)
        size = model_size(conf)
        per_image = preflight(conf, job, size)
        run = claimed.run = RunDir.claim(job.run_dir or DEFAULT_RUN_DIR, owner=slurm.process_rank() == 0)
        start = plan_start(run, conf, plain)
        if start.finished_metrics is not None:  # a finished run is left as it is
            run.release()
            return float(start.finished_metrics.get(OBJECTIVE) or 0.0)
        datamodule = load_data_early(build_datamodule(conf.dataset))
        check_memory(conf, size["params"], per_image, datamodule.nbytes())
        plan = plan_speed(conf, datamodule)
    # in metrics.json from the start on
    at_start = {"seed": conf.seed, **{f"speed/{k}": v for k, v in plan.record().items()},
            **code_and_size_keys(code_version(), size), **datamodule.sizes()}
    with RunClosing(run, at_start, keep_refused=job.multirun, made=job.made) as closing:  # ends it, whatever happens
        run.begin(start, job.hydra_files, at_start)
        announce(job, run.path, datamodule, conf, size)
        speed.announce(plan)
        warn_if_low_disk(run.path, conf.callbacks.min_free_disk_gb)
        L.seed_everything(conf.seed, workers=True, verbose=False)
        preemption = watch_preemption(run, closing)
        with preemption.watching():  # SIGTERM outside the fit's epochs: preempted at once, with a line
            model = build_model(conf, plan, snapshot(plain), datamodule.class_names)
            tracker = open_tracker(conf, job, run, start, plan, plain, preemption, closing)
            ranks = start_ranks(conf, job, closing)
            trainer: L.Trainer | None = None
            closing.judge(lambda exc: rank_died(trainer, ranks, closing))
            trainer = build_trainer(conf, plan, [*build_callbacks(conf.callbacks, run, progress_mode(conf),
                                                                  bool(tracker.loggers), preemption),
                                                 *tracker.callbacks, *(callbacks or [])],
                                    tracker.loggers, run.path, start, strategy=ranks.strategy(conf))
            compiled_before = compat.dynamo_counts() if plan.compile else (0, 0)
            closing.fitting()
            trainer.fit(model, datamodule=datamodule, ckpt_path=str(start.path) if start.path else None)
            metrics = val_metrics(trainer, run.path) | {"epochs": trainer.current_epoch,
                                                        "global_step": trainer.global_step,
                                                        metric_names.BEST_EPOCH: best_epoch(trainer)}
            has_best = bool(trainer.checkpoint_callback and trainer.checkpoint_callback.best_model_path)
            results = trainer.test(model, datamodule=datamodule, ckpt_path="best" if has_best else None, verbose=False)
        closing.completed(metrics | (results[0] if results else {}) | compiled(plan, compiled_before))
    return float(closing.metrics.get(OBJECTIVE, 0.0))


def watch_preemption(run: RunDir, closing: RunClosing) -> PreemptionCheckpoint:
    """SIGTERM ends the run preempted (exit 143); at the close, the command that continues it, then the requeue."""
    closing.metrics["epochs"] = 0  # until the Trainer counts them
    preemption = PreemptionCheckpoint(last_checkpoint(run.path))
    closing.on_close(lambda _: preemption.hand_over())  # closed last: submitit requeues the job now
    closing.on_close(_say_next_step)  # before it: the command that continues the run
    closing.judge(preemption.ending)
    return preemption


def open_tracker(conf: TrainConfig, job: JobContext, run: RunDir, start: Start, plan: speed.SpeedPlan,
                 plain: dict[str, Any], preemption: PreemptionCheckpoint, closing: RunClosing) -> Tracker:
    """The W&B run (or none), tagged with a sweep's swept keys, finished with the run's result at the close."""
    tags = list(dict.fromkeys([*conf.tags, *job.swept]))
    tracker = Tracker(conf.logger, run.path, plain | {"speed": plan.record(), "code": code_version()}, job.group,
                      job.name or run.path.name, tags, excuse=preemption.excuses, identity=start.wandb,
                      choices=job.choices)
    closing.on_close(lambda c: _finish_tracker(tracker, c))
    return tracker


def start_ranks(conf: TrainConfig, job: JobContext, closing: RunClosing) -> LocalRanks:
    """DDP under -m: this job's ranks, in this job's dir; stopped at the close."""
    ranks = LocalRanks.start(conf, job)
    closing.on_close(lambda c: ranks.close(timeout_s=120.0 if c.exit_code == 0 else 30.0))
    return ranks


def rank_died(trainer: L.Trainer | None, ranks: LocalRanks, closing: RunClosing) -> Ending | None:
    """How far the run got; a DDP rank of this job that died failed the job."""
    closing.metrics["epochs"] = trainer.current_epoch if trainer else 0
    ranks.stop_watching()
    if trainer is not None:  # a single DDP run's other ranks must not outlive a rank 0 that failed
        ranks.adopt(compat.lightning_child_ranks(trainer))
    failure = ranks.dead()
    return Ending("failed", failure, RuntimeError(f"{failure}; its output is above")) if failure else None


def compiled(plan: speed.SpeedPlan, before: tuple[int, int]) -> dict[str, int]:
    """What really compiled in fit + test: one graph per mode (train, eval), no breaks."""
    if not plan.compile:
        return {}
    graphs, breaks = (now - then for now, then in zip(compat.dynamo_counts(), before, strict=True))
    return {"speed/compiled_graphs": graphs, "speed/graph_breaks": breaks}


def _finish_tracker(tracker: Tracker, closing: RunClosing) -> None:
    """Close the W&B run with the run's result (after SIGTERM, W&B's service may be gone: it resumes with the job)."""
    try:
        if closing.status == "preempted" and tracker.wandb_run is not None:
            tracker.wandb_run.mark_preempting()
        tracker.finish(closing.exit_code, read_metrics(run_path) if (run_path := closing.written) else closing.metrics)
    except Exception as exc:
        if closing.status != "preempted":
            raise
        say(f"W&B run not closed cleanly after the signal ({one_line(exc)}); it resumes with the job")


def val_metrics(trainer: L.Trainer, run_dir: Path) -> dict[str, Any]:
    """The val/ values of the last validated epoch and the best val/acc (from history.csv if the fit logged none)."""
    found = {k: v for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    if metric_names.VAL_ACC_BEST in found:
        return found
    rows = [r for r in read_history(run_dir / HISTORY_FILE) if r.get(metric_names.acc(metric_names.VAL))]
    if not rows:
        return found
    last = {k: float(v) for k, v in rows[-1].items() if k.startswith("val/") and v}
    best = max(float(r[metric_names.acc(metric_names.VAL)]) for r in rows)
    return last | {metric_names.VAL_ACC_BEST: best} | found


def _say_next_step(closing: RunClosing) -> None:
    """The last console line: the command that continues a stopped run (not after a UserError: it names its fix)."""
    run_dir = closing.run.path
    hint = resume_command(run_dir, closing.status, shown_path(run_dir), requeued=slurm.slurm_tasks() is not None)
    if hint is not None and closing.status != "failed":
        say(hint)
    elif hint is not None and (failure := closing.raising) is not None and user_error(failure) is None:
        add_next_step(failure, hint)


__all__ = ["OBJECTIVE", "build_model", "build_trainer", "load_data_early", "train"]
