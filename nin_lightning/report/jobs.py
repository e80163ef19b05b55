"""A sweep's jobs (job dirs, multirun.yaml) and which of their values the report may use (docs/tracking.md)."""
from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nin_lightning.config.sweep import MULTIRUN_FILE, override_parser, read_multirun, swept_keys
from nin_lightning.errors import UserError
from nin_lightning.rundir.history import read_history as read_history_rows
from nin_lightning.rundir.layout import HISTORY_FILE, HYDRA_DIR, LOG_FILE, METRICS_FILE
from nin_lightning.rundir.lock import is_locked
from nin_lightning.rundir.run_dir import RUNNING

METRICS = ("val/acc_best", "test/acc", "epochs", "wall_time_s")
SIZE = ("params", "macs")  # the model's parameters and multiply-accumulates per image (metrics.json)
DATA_SIZES = ("data/train_size", "data/val_size", "data/test_size")  # images per split (metrics.json)
HISTORY_KEYS = ("epoch", "step", "epoch_time_s", "lr", "train/loss", "train/acc", "val/loss", "val/acc",
                "val/acc_best")
ACCURACIES = frozenset({"val/acc_best", "test/acc", "val/acc", "train/acc"})
COUNTS = frozenset({"epochs", *SIZE, *DATA_SIZES})  # whole numbers
NEEDED = ("test/acc", "epochs", "wall_time_s")  # what every completed job records (and val/acc_best, with a val split)
OK, FAILED, INCOMPLETE = "completed", "failed", "incomplete"
REJECTED = "rejected"  # completed, but a value the report needs cannot be trusted: left out of the means
IGNORED = frozenset({"resume", "ckpt_path"})  # how a job was (re)started, never part of its setting
DEFAULT = "(default)"
_DIRNAME_SPLIT = re.compile(r",(?=[+~]*[A-Za-z_][\w./-]*=)")


@dataclass
class Job:
    """A job of a sweep: its swept settings, outcome, final metrics and learning curve."""

    name: str
    overrides: dict[str, str]
    status: str = INCOMPLETE
    metrics: dict[str, float | None] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    error: str | None = None
    changed: dict[str, str] = field(default_factory=dict)  # overrides changed since the launch: {key: "2 -> 4"}
    info: dict[str, str] = field(default_factory=dict)  # what the header sums up: dataset, max_epochs, code
    config: dict[str, Any] = field(default_factory=dict)  # the job's resolved config, flat (model.dropout: 0.5)

    @property
    def ok(self) -> bool:
        """True when the job completed (only those enter the means)."""
        return self.status == OK


def why_not(key: str, value: Any) -> str | None:
    """Why VALUE cannot stand for KEY ('is true (a bool, not a number)', 'is 1.5, outside [0, 1]'), or None."""
    if value is None:
        return "is missing"
    if isinstance(value, bool):
        return f"is {str(value).lower()} (a bool, not a number)"
    if isinstance(value, str):
        return f"is {value!r} (text, not a number)"
    if not isinstance(value, int | float):
        return f"is {value!r} ({type(value).__name__}, not a number)"
    if isinstance(value, int) and value.bit_length() > 1000:  # float(value) would overflow
        return f"is an integer of {value.bit_length()} bits (too large)"
    if not math.isfinite(value):
        return f"is {value} (not a finite number)"
    if key in ACCURACIES and not 0.0 <= value <= 1.0:
        return f"is {value:g}, outside [0, 1]"
    if key not in ACCURACIES and value < 0:
        return f"is {value:g}, below 0"
    if key in COUNTS and value != int(value):
        return f"is {value:g}, not a whole number"
    return None


def to_float(value: Any, key: str = "") -> float | None:
    """A finite number (in KEY's range) as a float; None for blanks, bools, text, NaN, inf and anything else."""
    return None if why_not(key, value) is not None else float(value)


def normalise_status(status: Any) -> str:
    """completed / failed stay; anything else (interrupted, preempted, running, none) is incomplete."""
    text = str(status or "").lower()
    if text in (OK, "finished"):
        return OK
    return FAILED if text in (FAILED, "crashed") else INCOMPLETE


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """{'model': {'dropout': 0.5}} -> {'model.dropout': 0.5} (keys starting with _ left out)."""
    out: dict[str, Any] = {}
    for key, value in (config.items() if isinstance(config, dict) else ()):
        if str(key).startswith("_"):
            continue
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def parse_overrides(lines: list[str]) -> dict[str, str]:
    """Override lines ('+x=1') -> {key: value} less IGNORED, normalised as overrides.yaml (`1e-4` -> `0.0001`)."""
    from hydra.errors import HydraException

    out: dict[str, str] = {}
    for line in map(str, lines):
        key, sep, value = line.partition("=")
        if not sep or key.lstrip("+~") in IGNORED:
            continue
        try:
            override = override_parser().parse_override(line)
        except HydraException:  # unparsable text stays as it is
            override = None
        if override is not None and not override.is_sweep_override():
            value = override.get_value_element_as_str()
        out[key.lstrip("+~")] = value
    return out


def parse_override_dirname(name: str) -> dict[str, str]:
    """Hydra's override_dirname ('model.dropout=0.5,tags=[a,b],seed=2', our W&B run names) -> {key: value}, or {}."""
    pairs = [part.partition("=") for part in _DIRNAME_SPLIT.split(name or "")]
    if not all(sep for _, sep, _ in pairs):
        return {}
    return parse_overrides([f"{key}={value}" for key, _, value in pairs])


@dataclass(frozen=True)
class SweepSpec:
    """What a sweep's multirun.yaml says: the swept keys, and the other overrides, common to all its jobs."""

    swept: frozenset[str]
    fixed: dict[str, str]


def read_spec(sweep_dir: Path) -> SweepSpec | None:
    """Swept keys: sweep overrides of the command line (a,b / range() / interval() ...) and hydra.sweeper.params."""
    try:
        multirun = read_multirun(sweep_dir)
    except (ValueError, yaml.YAMLError) as exc:  # UnicodeDecodeError is a ValueError
        raise UserError(f"{sweep_dir / MULTIRUN_FILE} is unreadable ({type(exc).__name__}); restore it, or delete "
                        "it to report every override of each job as its setting") from exc
    if multirun is None:
        return None
    swept = set(swept_keys(*multirun))
    return SweepSpec(frozenset(swept), {k: v for k, v in parse_overrides(multirun[0]).items() if k not in swept})


def setting_of(job_dir: Path, now: dict[str, str], spec: SweepSpec | None) -> tuple[dict[str, str], dict[str, str]]:
    """(launched setting, overrides changed since): from the dir name, as a resume by hand rewrites overrides.yaml."""
    head, _, rest = job_dir.name.partition("_")
    launched = parse_override_dirname(rest) if head.isdigit() else {}
    if spec is None:  # no multirun.yaml: every override is part of the setting; only the dir name to compare with
        setting = launched or now
        keys = set(launched)
    else:
        setting = {k: v for k, v in (now | launched).items() if k in spec.swept}
        keys = set(spec.fixed) | set(setting) | set(now)
    expected = (spec.fixed if spec else {}) | setting
    changed = {k: f"{expected.get(k, DEFAULT)} -> {now.get(k, DEFAULT)}" for k in sorted(keys)
               if expected.get(k) != now.get(k)}
    return dict(setting), changed


def read_history(path: Path) -> list[dict[str, float]]:
    """history.csv -> a dict per epoch (each row has a whole-number epoch), in-range numbers, blanks dropped; a
    ValueError when its epochs do not follow each other (a repeated or reordered row would skew the mean curves)."""
    rows = read_history_rows(path)
    epochs = [int(row["epoch"]) for row in rows]
    if epochs != list(range(epochs[0], epochs[0] + len(epochs)) if epochs else []):
        wrong = next(e for i, e in enumerate(epochs) if e != epochs[0] + i)
        raise ValueError(f"epoch {wrong} is repeated, missing before it or out of order")
    return [{key: value for key in HISTORY_KEYS if (value := _parse(row.get(key), key)) is not None} for row in rows]


def _parse(text: Any, key: str) -> float | None:
    try:
        return to_float(float(text), key)
    except (TypeError, ValueError):  # a blank or missing cell, text
        return None


def _read_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text()) if path.is_file() else None


def _read_metrics(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError as exc:
        raise ValueError("not JSON") from exc
    except RecursionError as exc:
        raise ValueError("nested too deeply") from exc
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return data


def vet_job(status: str, error: str | None, raw: Mapping[str, Any], flat_config: dict[str, Any]
            ) -> tuple[str, str | None, dict[str, float | None]]:
    """(status, error, metrics): a completed job with a value unusable or missing (NEEDED) is REJECTED, saying why."""
    needed = (*NEEDED, *(() if str(flat_config.get("dataset.val_size")) in ("0", "0.0") else ("val/acc_best",)))
    metrics: dict[str, float | None] = {}
    problems = []
    for key in (*METRICS, *SIZE, *DATA_SIZES):
        problem = why_not(key, raw.get(key))
        metrics[key] = float(raw[key]) if problem is None else None
        if problem is not None and (raw.get(key) is not None or (status == OK and key in needed)):
            problems.append(f"{key} {problem}")
    if not problems:
        return status, error, metrics
    why = "; ".join(problems)
    if status == OK:
        return REJECTED, f"not used: {why}", metrics
    return status, f"{error}; {why}" if error else why, metrics


def new_job(name: str, overrides: dict[str, str], seed: Any, status: str, error: str | None,
            raw: Mapping[str, Any], flat_config: dict[str, Any], history: list[dict[str, float]],
            changed: dict[str, str] | None = None) -> Job:
    """A Job from what a job dir or a W&B run recorded (RAW: metrics.json's keys), its metrics vetted (`vet_job`)."""
    if "seed" not in overrides and seed is not None:
        overrides["seed"] = str(seed)
    status, error, metrics = vet_job(status, error, raw, flat_config)
    # the facts the report's header states once when every job shares them
    sizes = [metrics.get(k) for k in DATA_SIZES]
    images = " / ".join(f"{n:,.0f} {split}" for n, split in zip(sizes, ("train", "validation", "test"), strict=True)
                        ) if all(n is not None for n in sizes) else None
    commit = raw.get("code/commit")
    code = f"{str(commit)[:7]}{'+dirty' if str(raw.get('code/dirty')).lower() == 'true' else ''}" if commit else None
    info = {"dataset": flat_config.get("dataset.name"), "images": images,
            "max_epochs": flat_config.get("trainer.max_epochs"), "code": code}
    return Job(name=name, overrides=overrides, status=status, metrics=metrics, history=history, error=error,
               changed=changed or {}, info={k: str(v) for k, v in info.items() if v is not None}, config=flat_config)


def _status(job_dir: Path, raw: dict[str, Any]) -> tuple[str, str | None]:
    """(status, error): metrics.json's, a job that died while running, or a failure only train.log tells."""
    status, error = normalise_status(raw.get("status")), raw.get("error")
    if raw.get("status") == RUNNING:
        where = f"process {raw.get('pid')} on host {raw.get('host')}"
        alive = is_locked(job_dir)
        error = f"running ({where})" if alive else f"stopped while running ({where}); resume it with resume=auto"
    elif not raw:  # no metrics.json: the last `error:` line of train.log, if the job failed before writing it
        try:
            lines = [ln for ln in (job_dir / LOG_FILE).read_text(errors="replace").splitlines() if "error: " in ln]
        except OSError:
            lines = []
        error = lines[-1].split("error: ", 1)[1].strip() if lines else None
        status = FAILED if error else status
    return status, error


def read_job(job_dir: Path, spec: SweepSpec | None = None) -> Job:
    """A job dir -> Job: incomplete without metrics.json (failed if train.log has the error); names unreadable files."""
    problems = []
    readers = {"overrides": (f"{HYDRA_DIR}/overrides.yaml", _read_yaml),
               "config": (f"{HYDRA_DIR}/config.yaml", _read_yaml),
               "metrics": (METRICS_FILE, _read_metrics), "history": (HISTORY_FILE, read_history)}
    got: dict[str, Any] = {}
    for what, (name, read) in readers.items():
        try:
            got[what] = read(job_dir / name)
        except (OSError, ValueError, UserError, yaml.YAMLError) as exc:
            why = " ".join(str(exc).split())[:200]  # one line: a YAML error spans several
            problems.append(f"{job_dir / name} is unreadable ({type(exc).__name__}: {why})")
            got[what] = None
    lines = got["overrides"] if isinstance(got["overrides"], list) else []
    overrides, changed = setting_of(job_dir, parse_overrides(lines), spec)
    flat, raw = flatten(got["config"]), got["metrics"] or {}
    job = new_job(job_dir.name, overrides, raw.get("seed", flat.get("seed")), *_status(job_dir, raw), raw, flat,
                  got["history"] or [], changed)
    if problems:
        job.status = REJECTED if got["metrics"] is None else job.status  # a metrics.json there, but unreadable
        job.error = "; ".join(problems + ([job.error] if job.error else []))
    return job


def distinct(jobs: list[Job]) -> tuple[list[Job], list[str]]:
    """Each (setting, seed) once (a sweep run twice, a copied dir): the last completed, else the last; a note each."""
    chosen: dict[tuple[tuple[str, str], ...], Job] = {}
    notes = []
    for job in jobs:
        key = tuple(sorted(job.overrides.items()))
        kept = chosen.get(key)
        if kept is not None:
            loser = kept if job.ok or not kept.ok else job
            notes.append(f"`{loser.name}` repeats `{(job if loser is kept else kept).name}`: counted once")
            if loser is job:
                continue
        chosen[key] = job
    return [j for j in jobs if any(j is c for c in chosen.values())], notes


def _job_order(path: Path) -> tuple[int, str]:
    head = path.name.split("_", 1)[0]
    return (int(head) if head.isdigit() else 1 << 30, path.name)


def common_overrides(sweep_dir: Path) -> dict[str, str]:
    """The command line's overrides that every job of the sweep shares ({} without a multirun.yaml)."""
    spec = read_spec(sweep_dir)
    return dict(spec.fixed) if spec else {}


def read_sweep_dir(sweep_dir: Path) -> list[Job]:
    """Every job of a sweep dir; raises UserError when there is none."""
    hint = "give a sweep dir (hydra.sweep.dir of `python train.py -m ...`, e.g. outputs/sweeps/dropout_<timestamp>)"
    if not sweep_dir.is_dir():
        raise UserError(f"{sweep_dir}: no such directory; {hint}")
    dirs = sorted((p for p in sweep_dir.iterdir() if p.is_dir() and (p / HYDRA_DIR).is_dir()), key=_job_order)
    if not dirs and (sweep_dir / HYDRA_DIR).is_dir():
        raise UserError(f"{sweep_dir}: one job's dir, not a sweep dir; give its parent, {sweep_dir.parent}")
    if not dirs:
        raise UserError(f"{sweep_dir}: no jobs in it (sub-directories with a .hydra/ folder); {hint}")
    spec = read_spec(sweep_dir)
    return [read_job(d, spec) for d in dirs]
