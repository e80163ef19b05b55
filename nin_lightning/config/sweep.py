"""A sweep's swept keys, and the names they give the sweep (`dropout-seed_<time>`: dir, W&B group) and its jobs."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

MULTIRUN_FILE = "multirun.yaml"  # Hydra's basic sweeper writes the sweep's config there before any job
UNSWEPT = "sweep"  # the name of a -m run that sweeps nothing (one value per key)


@functools.cache
def override_parser() -> Any:
    """Hydra's parser of command-line overrides (built once)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create()


def swept_keys(task: Iterable[str], params: Mapping[str, Any] | None = None) -> list[str]:
    """The keys a sweep varies, in command-line order: its sweep overrides and hydra.sweeper.params'."""
    keys = [o.key_or_group for o in override_parser().parse_overrides(list(task)) if o.is_sweep_override()]
    keys += [str(key).lstrip("+~") for key in (params or {})]
    return list(dict.fromkeys(keys))


def short_names(keys: Iterable[str]) -> list[str]:
    """model.dropout -> dropout (the full key where two keys end alike): for names and tags."""
    keys = list(keys)
    last = [key.rsplit(".", 1)[-1] for key in keys]
    return [short if last.count(short) == 1 else key for key, short in zip(keys, last, strict=True)]


def sweep_label(keys: Iterable[str]) -> str:
    """dropout-seed: a sweep dir's (and W&B group's) name before its time stamp."""
    return "-".join(short_names(keys)) or UNSWEPT


def read_multirun(sweep_dir: Path) -> tuple[list[str], dict[str, Any]] | None:
    """(the command line's overrides, hydra.sweeper.params) from SWEEP_DIR/multirun.yaml; None without one."""
    import yaml

    try:
        spec = yaml.safe_load((sweep_dir / MULTIRUN_FILE).read_text())
    except OSError:  # none yet, or a path the filesystem refuses (too long: named by cli/job_dirs.py)
        return None
    hydra = spec.get("hydra") if isinstance(spec, dict) else None
    if not isinstance(hydra, dict):
        return None
    task = [str(line) for line in (hydra.get("overrides") or {}).get("task") or []]
    return task, dict((hydra.get("sweeper") or {}).get("params") or {})


def sweep_dir_keys(sweep_dir: Path) -> list[str]:
    """The swept keys of the sweep in SWEEP_DIR ([] without a multirun.yaml, e.g. under the Optuna sweeper)."""
    spec = read_multirun(sweep_dir)
    return swept_keys(*spec) if spec else []


def sweep_name_resolver(task: Any) -> str:
    """`${nin.sweep_name:${hydra.overrides.task}}` (conf/train.yaml): the label of the sweep being launched. Cached,
    and Hydra copies the cache into each job's config: a job gets its sweep's name, not one of its own."""
    return sweep_label(swept_keys([str(line) for line in task]))


def job_label(task: Iterable[str], keys: Iterable[str], exclude: Iterable[str] = ()) -> str:
    """A sweep job's name (W&B run, dir `<number>_<label>`): its sorted overrides of KEYS less EXCLUDE (`seed=2`)."""
    swept, dropped = set(keys), set(exclude)
    lines = [o.input_line for o in override_parser().parse_overrides([str(t) for t in task])
             if o.key_or_group in swept and o.key_or_group not in dropped]
    return ",".join(sorted(str(line) for line in lines))


JOB_NUMBER_WIDTH = 3  # sweep job dirs 000_..., 001_...: they sort in job order up to 1,000 jobs


def job_dir_resolver(sweep_dir: Any, number: Any, task: Any, override_dirname: Any, exclude: Any) -> str:
    """`${nin.job_dir:...}` (conf/train.yaml's hydra.sweep.subdir): `007_model.dropout=0.5,seed=2`, the padded job
    number and job_label (all overrides without a multirun.yaml). An older sweep's dir, named by all overrides, is
    kept; so is, for a `resume=auto` relaunch listing the values in another order, the dir with the same label."""
    sweep, padded = Path(str(sweep_dir)), str(number).zfill(JOB_NUMBER_WIDTH)
    keys = sweep_dir_keys(sweep)
    label = job_label([str(t) for t in task], keys, [str(k) for k in exclude or ()]) if keys else str(override_dirname)
    older = f"{padded}_{override_dirname}"
    if label != str(override_dirname) and is_dir(sweep / older):
        return older
    relaunched = "resume=auto" in [str(t) for t in task]  # (a first launch that repeats a value keeps both jobs)
    if relaunched and label and not is_dir(sweep / f"{padded}_{label}"):  # its values in another order
        same = [d.name for d in _job_dirs(sweep) if d.name.split("_", 1)[-1] == label]
        if len(same) == 1:
            return same[0]
    return f"{padded}_{label}"


def _job_dirs(sweep: Path) -> list[Path]:
    """The job dirs already in SWEEP (`<number>_<label>`), none when it cannot be read."""
    try:
        return [d for d in sweep.iterdir() if d.is_dir() and d.name.split("_", 1)[0].isdigit()]
    except OSError:
        return []


def is_dir(path: Path) -> bool:
    """Path.is_dir, False for a path the filesystem refuses (too long: cli/job_dirs.py names it in one line)."""
    try:
        return path.is_dir()
    except OSError:
        return False


def register_resolvers() -> None:
    """nin.sweep_name and nin.job_dir, for conf/train.yaml."""
    from omegaconf import OmegaConf

    OmegaConf.register_new_resolver("nin.sweep_name", sweep_name_resolver, use_cache=True, replace=True)
    OmegaConf.register_new_resolver("nin.job_dir", job_dir_resolver, replace=True)
