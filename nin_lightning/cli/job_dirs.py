"""A sweep's job dir names, checked against the filesystem's limits before any is made (else one stops the sweep)."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from nin_lightning.config.sweep import is_dir, override_parser
from nin_lightning.errors import UserError

# Bytes a run writes below its dir at most (wandb/offline-run-<time>-<id>/files/wandb-metadata.json, a temp file)
RUN_FILES_RESERVE = 100
EXCLUDE_KEY = "hydra.job.config.override_dirname.exclude_keys"


def job_overrides(config: DictConfig) -> list[list[str]]:
    """Every job's overrides, in the basic sweeper's order (its Cartesian product of discrete sweeps)."""
    params = OmegaConf.to_container(OmegaConf.select(config, "hydra.sweeper.params") or OmegaConf.create({}))
    lines = [f"{key}={value}" for key, value in (params or {}).items()] + list(config.hydra.overrides.task)
    choices: dict[str, list[str]] = {}
    for override in override_parser().parse_overrides(lines):
        key = override.get_key_element()
        if not override.is_sweep_override():
            choices[key] = [f"{key}={override.get_value_element_as_str()}"]
        elif override.is_discrete_sweep():
            choices[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
    return [list(job) for job in itertools.product(*choices.values())]


def override_dirname(config: DictConfig, overrides: list[str]) -> str:
    """hydra.job.override_dirname of a job with OVERRIDES (as Hydra's config loader computes it)."""
    spec = config.hydra.job.config.override_dirname
    exclude = set(spec.exclude_keys)
    lines = sorted(o.input_line for o in override_parser().parse_overrides(overrides) if o.key_or_group not in exclude)
    return str(spec.item_sep).join(lines).replace("=", str(spec.kv_sep))


def _limit(path: Path, name: str, default: int) -> int:
    """The filesystem's limit NAME where PATH would be made (at its deepest dir that exists)."""
    existing = next((p for p in [path, *path.parents] if is_dir(p)), Path("/"))
    try:
        return int(os.pathconf(existing, name))
    except (OSError, ValueError, AttributeError):
        return default


def check_job_dirs(config: DictConfig) -> None:
    """Refuse the sweep, in one line, when a job's dir (as its launcher will name it) is too long for the filesystem."""
    sweep_dir = Path(str(config.hydra.sweep.dir))  # the sweeper makes it from the sweep's own config
    job = config.copy()
    OmegaConf.copy_cache(from_config=config, to_config=job)
    try:
        jobs = job_overrides(config)
    except Exception:  # a sweep Hydra expands with its config loader (glob over a group): its sweeper says
        return
    for num, overrides in enumerate(jobs):
        with read_write(job), open_dict(job):
            job.hydra.job.num, job.hydra.job.id = num, f"job_id_for_{num}"
            job.hydra.job.override_dirname = override_dirname(config, overrides)
            job.hydra.overrides.task = overrides
        folder = (sweep_dir / str(job.hydra.sweep.subdir)).absolute()
        name_max, path_max = _limit(folder, "PC_NAME_MAX", 255), _limit(folder, "PC_PATH_MAX", 4096)
        long_name = next((part for part in folder.parts if len(part.encode()) > name_max), None)
        too_long = len(str(folder).encode()) + RUN_FILES_RESERVE > path_max
        if long_name is None and not too_long:
            continue
        longest = max(overrides, key=len, default="").split("=", 1)[0]
        fix = (f"leave long keys out of job dir names (add {longest} to {EXCLUDE_KEY} in conf/train.yaml, or "
               f"override the whole list: {EXCLUDE_KEY}=[...,{longest}]), or give them shorter values")
        if long_name is not None:
            raise UserError(f"job #{num}'s dir name is {len(long_name.encode())} bytes, over the filesystem's "
                            f"{name_max} per name ({long_name[:60]}...); nothing was run: {fix}")
        raise UserError(f"job #{num}'s dir is a path of {len(str(folder).encode())} bytes, over the filesystem's "
                        f"{path_max} with room for the run's files ({str(folder)[:60]}...); nothing was run: pass a "
                        f"shorter hydra.sweep.dir, or {fix}")
