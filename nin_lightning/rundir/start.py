"""Where a run starts: fresh, from a checkpoint, or not at all (docs/scale-and-resume.md): the one place resume
is decided. The checkpoint is read once, here; Lightning gets the same dict (`Start.checkpoint`)."""

from __future__ import annotations

import json
import re
import shlex
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nin_lightning.errors import UserError
from nin_lightning.rundir.history import check_epochs, read_history
from nin_lightning.rundir.layout import (
    BEST_CKPT,
    CHECKPOINT_DIR,
    CONFIG_KEY,
    HISTORY_FILE,
    HYDRA_DIR,
    LAST_CKPT,
    METRICS_FILE,
    OVERRIDES_FILE,
    WANDB_RUN_FILE,
    best_checkpoint,
    checkpoint_dir,
    last_checkpoint,
)
from nin_lightning.rundir.metrics import read_metrics

# These may differ between the original run and its resume: where the data lives, how it is loaded,
# evaluation-only and speed-only knobs. Everything else in `model` and `dataset` must match.
MAY_CHANGE = frozenset({"dataset.root", "dataset.download", "dataset.num_workers", "dataset.eval_batch_size",
                        "dataset.tta", "dataset.device_resident", "model.compile", "model.compile_backend",
                        "model.channels_last"})


@dataclass(frozen=True)
class Start:
    """The plan for this start of a run."""

    path: Path | None = None  # the checkpoint to start from; None: from scratch
    checkpoint: dict[str, Any] | None = field(default=None, repr=False)  # its content, read once
    continues: bool = False  # continues this run dir's own run (resume=auto, a requeue): same W&B run
    finished_metrics: dict[str, Any] | None = None  # a finished run's metrics.json: nothing to do
    note: str | None = None  # one line for the user about this start
    wandb: dict[str, Any] = field(default_factory=dict)  # the W&B run this run continues: id, group, name


def snapshot(plain: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint remembers of its run (`nin_config`): what resume compares, and the seed."""
    return {"model": plain.get("model", {}), "dataset": plain.get("dataset", {}),
            "optimizer": plain.get("optimizer", {}).get("name"), "scheduler": plain.get("scheduler", {}).get("name"),
            "optimizer.exempt_bias_norm": plain.get("optimizer", {}).get("exempt_bias_norm"),
            "max_epochs": plain.get("trainer", {}).get("max_epochs"), "seed": plain.get("seed"),
            "callbacks.save_last": plain.get("callbacks", {}).get("save_last"),
            "callbacks.history": plain.get("callbacks", {}).get("history")}


def _flat(node: Any, prefix: str) -> dict[str, Any]:
    if not isinstance(node, dict):
        return {prefix: node}
    return {k: v for key, value in node.items() for k, v in _flat(value, f"{prefix}.{key}").items()}


def changed_keys(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """`key (old -> new)` for every key both sides have that differs, less those in MAY_CHANGE."""
    old = _flat(saved.get("model", {}), "model") | _flat(saved.get("dataset", {}), "dataset")
    new = _flat(now.get("model", {}), "model") | _flat(now.get("dataset", {}), "dataset")
    # by name: SGD's state does not load into AdamW, nor cosine's into plateau; nor 1 param group's into 2
    for group in ("optimizer", "scheduler", "optimizer.exempt_bias_norm"):
        if saved.get(group) is not None and now.get(group) is not None:
            old[group], new[group] = saved[group], now[group]
    keys = sorted(k for k in old.keys() & new.keys() if k not in MAY_CHANGE and old[k] != new[k])
    return [f"{k} ({old[k]!r} -> {new[k]!r})" for k in keys]


def saved_overrides(run_dir: Path) -> list[str] | None:
    """The overrides of the run's latest start (RUN_DIR/.hydra/overrides.yaml), or None when unreadable."""
    try:
        overrides = yaml.safe_load((run_dir / HYDRA_DIR / OVERRIDES_FILE).read_text()) or []
    except (OSError, ValueError, yaml.YAMLError):
        return None
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        return None
    return overrides


def original_overrides(run_dir: Path) -> str:
    """' (it was started with: a=1 b=2)' from RUN_DIR/.hydra/overrides.yaml, or ''."""
    path = run_dir / HYDRA_DIR / OVERRIDES_FILE
    overrides = saved_overrides(run_dir)
    if overrides is None:
        return f" ({path} is unreadable, so its original overrides are unknown)" if path.exists() else ""
    shown = [o for o in overrides if not o.startswith("resume=")]
    return f" (it was started with: {' '.join(shown) or 'no overrides'})"


def refuse_existing_run(run_dir: Path) -> None:
    """Stop (one line) when `run_dir` already holds a run: a new run must never overwrite it."""
    found = [n for n in (METRICS_FILE, HISTORY_FILE, WANDB_RUN_FILE) if (run_dir / n).exists()]
    found += [f"{CHECKPOINT_DIR}/{p.name}" for p in sorted(checkpoint_dir(run_dir).glob("*.ckpt"))]
    if found:
        raise UserError(f"{run_dir} already holds a run ({', '.join(found[:3])}); pass resume=auto to continue "
                        "it, or choose another hydra.run.dir")


def _check_config(ckpt: Path, checkpoint: dict[str, Any], now: dict[str, Any], run_dir: Path | None) -> str | None:
    """Refuse (UserError) a checkpoint whose model/dataset/optimizer/scheduler differ; a note if unknown."""
    saved = checkpoint.get(CONFIG_KEY)
    if saved is None:
        return f"{ckpt} does not record its model/dataset config; resuming without checking it"
    diff = changed_keys(saved, now)
    if diff:
        started = original_overrides(run_dir) if run_dir is not None else ""
        raise UserError(f"cannot resume from {ckpt}: the config changed: {', '.join(diff)}; resume with the "
                        f"original overrides{started}, or start a new run (another hydra.run.dir)")
    return None


def _finished(run_dir: Path, checkpoint: dict[str, Any], now: dict[str, Any]) -> Start | None:
    """Nothing to do when RUN_DIR's run completed with the same or a higher trainer.max_epochs."""
    metrics = read_metrics(run_dir)
    saved_max = (checkpoint.get(CONFIG_KEY) or {}).get("max_epochs")
    target = saved_max if saved_max is not None else int(checkpoint.get("epoch", -1)) + 1
    max_epochs = now["max_epochs"]
    if metrics.get("status") != "completed" or max_epochs is None or not 0 <= max_epochs <= target:
        return None
    acc = metrics.get("test/acc")
    shown = f"; test/acc={acc:.4f}" if isinstance(acc, float) else ""
    note = (f"{run_dir} already finished ({metrics.get('epochs')} epochs, status completed{shown}): nothing to do. "
            f"Raise trainer.max_epochs above {target} to train it further")
    return Start(finished_metrics=metrics, continues=True, note=note)


def wandb_identity(run_dir: Path) -> dict[str, Any]:
    """RUN_DIR/wandb_run.json: the W&B run a continued run logs into ({} when there is none)."""
    path = run_dir / WANDB_RUN_FILE
    if not path.exists():
        return {}
    try:
        identity = json.loads(path.read_text())
        if not isinstance(identity, dict) or not isinstance(identity.get("id"), str):
            raise ValueError("no W&B run id in it")
        if not isinstance(identity.get("dir", ""), str) or "\0" in identity.get("dir", ""):
            raise ValueError("its dir is not a path")
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} is unreadable ({type(exc).__name__}: {str(exc)[:80]}); delete it to continue "
                        "this run in a new W&B run, or restore it from a copy") from exc
    return identity


def check_not_a_copy(run_dir: Path, identity: dict[str, Any]) -> str | None:
    """Refuse to continue, in RUN_DIR (a copy), the W&B run that its original dir still continues (it would log
    the same epochs twice); a note when a moved dir continues it (wandb_run.json records the dir)."""
    home = Path(identity.get("dir") or run_dir)
    if home.resolve() == run_dir.resolve():
        return None
    if not (home / WANDB_RUN_FILE).is_file():
        return (f"W&B: this run dir was at {home}; it continues W&B run {identity['id']} here (a copy of it that "
                f"resumes too would log into the same W&B run: delete the copy's {WANDB_RUN_FILE} first)")
    try:
        same_run = json.loads((home / WANDB_RUN_FILE).read_text()).get("id") == identity["id"]
    except (OSError, ValueError, AttributeError):
        return None
    if same_run:
        raise UserError(f"{run_dir} is a copy of {home}, which continues the same W&B run ({identity['id']}): "
                        f"both would log into it; resume {home} instead, or delete {run_dir / WANDB_RUN_FILE} "
                        "to continue this copy as a new W&B run (or pass logger=none)")
    return None


def _saves_last(run_dir: Path) -> bool:
    """Whether the run in RUN_DIR was started with callbacks.save_last=true (its .hydra/config.yaml says)."""
    try:
        config = yaml.safe_load((run_dir / HYDRA_DIR / "config.yaml").read_text())
        return config["callbacks"]["save_last"] is True
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return False


def _load(path: Path) -> dict[str, Any]:
    from nin_lightning.rundir.checkpoint_io import load_checkpoint_file  # torch: only when there is one

    return load_checkpoint_file(path)


def _check_continuable(run_dir: Path, checkpoint: dict[str, Any], now: dict[str, Any]) -> None:
    """Refuse a resume that would record a false result: fewer epochs than it holds, or a record it leaves behind
    (last.ckpt or history.csv kept at this epoch while the run goes on)."""
    done = int(checkpoint.get("epoch", -1)) + 1
    max_epochs = now.get("max_epochs")
    if max_epochs is not None and 0 <= max_epochs < done:
        raise UserError(f"trainer.max_epochs={max_epochs}: {last_checkpoint(run_dir)} holds {done} epochs already; "
                        f"resume with trainer.max_epochs >= {done}{original_overrides(run_dir)}")
    for key, path in (("callbacks.save_last", last_checkpoint(run_dir)), ("callbacks.history", run_dir / HISTORY_FILE)):
        if now.get(key) is False and path.exists():
            raise UserError(f"{key}=false: {path} would stay at epoch {done} while the run goes on (resume=auto "
                            f"would later go back to it); resume with {key}=true")


def _check_seed(run_dir: Path, checkpoint: dict[str, Any], now: dict[str, Any]) -> None:
    """Refuse to continue, or to call finished, the run of another seed."""
    saved_seed = (checkpoint.get(CONFIG_KEY) or {}).get("seed")
    if saved_seed is not None and now.get("seed") is not None and saved_seed != now["seed"]:
        raise UserError(f"seed={now['seed']}: {run_dir} is the run of seed={saved_seed}; resume it with "
                        f"seed={saved_seed}{original_overrides(run_dir)}, or start seed={now['seed']} in another "
                        "hydra.run.dir")


def _check_best(run_dir: Path, checkpoint: dict[str, Any]) -> None:
    """Refuse to train on when the best epoch's weights (its ModelCheckpoint state names a best.ckpt) are gone
    or unreadable: the run's test would fail, or score another epoch than `best_epoch` says."""
    states = (checkpoint.get("callbacks") or {}).values()
    if not any(isinstance(s, dict) and Path(str(s.get("best_model_path") or "")).name == BEST_CKPT for s in states):
        return
    best = best_checkpoint(run_dir)
    try:
        with zipfile.ZipFile(best) as archive:  # torch's format: a zip; testzip checks every member's CRC
            damaged = archive.testzip()  # the first member that fails, or None
        why = None if damaged is None else f"is truncated or corrupt ({damaged})"
    except FileNotFoundError:
        why = "is missing"
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        why = f"is truncated or corrupt ({type(exc).__name__})"
    if why is not None:
        raise UserError(f"{best} {why}: the best epoch's weights are lost, so this run cannot be tested; start it "
                        f"again in another hydra.run.dir (its last epoch: python -m nin_lightning.evaluate {run_dir} "
                        "--ckpt last)")


def may_start_again(run_dir: Path, history: list[dict[str, str]]) -> bool:
    """Whether resume=auto may start RUN_DIR, which has no last.ckpt, again from epoch 0: it has no results, or it
    saves last.ckpt and died before its first one (at most one epoch in its history, not completed)."""
    completed = read_metrics(run_dir).get("status") == "completed"
    first_epoch_only = len(history) <= 1 and _saves_last(run_dir)
    has_results = best_checkpoint(run_dir).exists() or bool(history) or completed
    return not has_results or (first_epoch_only and not completed)


def _continue(run_dir: Path, now: dict[str, Any]) -> Start:
    """resume=auto (or a requeue) in RUN_DIR."""
    last = last_checkpoint(run_dir)
    history = read_history(run_dir / HISTORY_FILE)  # an unreadable history.csv: one line, before any write
    if not last.is_file():
        if not may_start_again(run_dir, history):
            best = best_checkpoint(run_dir)
            fix = f", or pass ckpt_path={best} with a new run dir" if best.is_file() else ""
            raise UserError(f"resume=auto: {run_dir} holds a run but no {CHECKPOINT_DIR}/{LAST_CKPT} to continue "
                            f"from (callbacks.save_last=false?); start it again in another hydra.run.dir{fix}")
        # nothing to continue yet (stopped before its first epoch ended): a fresh start in the same W&B run
        return Start(continues=True, wandb=wandb_identity(run_dir))
    checkpoint = _load(last)
    metrics_file = run_dir / METRICS_FILE
    if metrics_file.exists() and not read_metrics(run_dir):  # written atomically: damaged by something else
        raise UserError(f"{metrics_file} is unreadable (empty, or not a JSON object); restore it, or delete it to "
                        "continue the run with its wall_time_s counted from now")
    note = _check_config(last, checkpoint, now, run_dir)
    _check_seed(run_dir, checkpoint, now)
    finished = _finished(run_dir, checkpoint, now)
    if finished is not None:
        return finished
    _check_continuable(run_dir, checkpoint, now)
    _check_best(run_dir, checkpoint)
    # Lightning's loop state: the epoch's last batch done, or a stop inside it (never in its last: agreement.py)
    batches = ((checkpoint.get("loops") or {}).get("fit_loop") or {}).get("epoch_loop.batch_progress") or {}
    at_end = batches.get("is_last_batch")
    check_epochs(run_dir / HISTORY_FILE, history, int(checkpoint.get("epoch", -1)) + 1,
                 mid_epoch=None if at_end is None else not at_end)
    resuming = (f"resuming from {LAST_CKPT} (epoch {int(checkpoint.get('epoch', -1)) + 1}, "
                f"step {checkpoint.get('global_step', '?')})")
    note = f"{note}; {resuming}" if note else resuming
    return Start(path=last, checkpoint=checkpoint, continues=True, note=note, wandb=wandb_identity(run_dir))


def plan_start(run_dir: Path, resume: str, ckpt_path: str | None, now: dict[str, Any], restarts: int = 0,
               owner: bool = True) -> Start:
    """The start of the run in RUN_DIR (`now`: `snapshot()` of the config); a one-line UserError for every start
    that would lose or mix results, except on another DDP rank (`owner=False`), which may find rank 0's files."""
    if restarts > 0:
        resume = "auto"  # a requeued job always continues from its run dir's last.ckpt
    if resume == "auto" and last_checkpoint(run_dir).is_file():
        return _continue(run_dir, now)  # its own run goes on (ckpt_path, if any, is where that run started)
    if ckpt_path is not None:
        path = Path(ckpt_path).expanduser()
        if not path.is_file():
            raise UserError(f"ckpt_path={ckpt_path}: no such file; pass an existing .ckpt, or drop ckpt_path")
        if owner:  # a run here that resume=auto cannot continue (no last.ckpt) is never started over
            refuse_existing_run(run_dir)
        checkpoint = _load(path)
        return Start(path=path, checkpoint=checkpoint, note=_check_config(path, checkpoint, now, None))
    if resume == "auto":
        return _continue(run_dir, now)
    if owner:
        refuse_existing_run(run_dir)
    return Start()


# A stopped run that resume=auto continues (a completed one has nothing left to do)
CONTINUABLE = ("interrupted", "preempted", "failed")
# Not repeated: the command sets both itself, and ckpt_path would start again from that file, not continue
DROPPED = ("resume=", "hydra.run.dir=", "ckpt_path=")


def _sweep_job(run_dir: Path) -> bool:
    """Whether RUN_DIR is a job of a `-m` sweep (.hydra/hydra.yaml says MULTIRUN): the sweep's command continues it."""
    try:
        text = (run_dir / HYDRA_DIR / "hydra.yaml").read_text()
    except OSError:
        return False
    return any(line.strip() == "mode: MULTIRUN" for line in text.splitlines())


def _starts_again(run_dir: Path) -> bool:
    """Whether resume=auto starts RUN_DIR (no last.ckpt yet: stopped in its first epoch) again, or refuses."""
    try:
        return may_start_again(run_dir, read_history(run_dir / HISTORY_FILE))
    except UserError:  # an unreadable history.csv: resume=auto says so itself
        return False


def resume_command(run_dir: Path, status: str, shown_dir: str, requeued: bool = False) -> str | None:
    """`to continue: python train.py <its overrides> resume=auto hydra.run.dir=SHOWN_DIR` for a stopped run that
    resume=auto continues; None for a sweep's job, a run without train.py, or a preempted one Slurm `requeued`."""
    if status not in CONTINUABLE or (status == "preempted" and requeued):
        return None
    if not last_checkpoint(run_dir).is_file() and (status == "failed" or not _starts_again(run_dir)):
        return None
    overrides = saved_overrides(run_dir)
    if overrides is None or _sweep_job(run_dir):
        return None
    kept = [o for o in overrides if not o.lstrip("+~").startswith(DROPPED)]
    run_dir_override = f"hydra.run.dir={hydra_value(shown_dir)}"
    return f"to continue: {shlex.join(['python', 'train.py', *kept, 'resume=auto', run_dir_override])}"


_HYDRA_PLAIN = re.compile(r"[A-Za-z0-9_/\-+.$%*@?|~ ]+")  # characters Hydra's override grammar reads unquoted


def hydra_value(text: str) -> str:
    """TEXT as the value of a Hydra override: as it is where Hydra reads it so, else quoted (`=`, `,`, `é`...)."""
    if _HYDRA_PLAIN.fullmatch(text) and text == text.strip():
        return text
    return f"'{text}'" if "'" not in text else f'"{text}"'

