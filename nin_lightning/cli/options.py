"""Each config group's real options (not its `*_schema`, docs/configuration.md): what --help lists, what a choice is."""

from __future__ import annotations

import functools
import sys
from collections.abc import Mapping
from typing import Any

from nin_lightning.errors import UserError

SCHEMA_SUFFIX = "_schema"
HELP_RESOLVER = "nin.groups"
SHOWN_HYDRA_GROUPS = ("hydra/launcher", "hydra/sweeper")  # Hydra's groups a user of this project picks from
# The plugins' own launchers, which `local` and `slurm` build on (sweeps/README.md says why): not listed
UNLISTED = {"hydra/launcher": {"joblib", "submitit_local", "submitit_slurm"}}
HELP_FLAGS = {"--help", "-h"}  # Hydra's flags for the app's help (conf/hydra/help/nin.yaml)


def real_options(group: str) -> list[str]:
    """GROUP's options less the schemas, from Hydra's config loader ([] outside a Hydra app)."""
    from hydra.core.global_hydra import GlobalHydra

    if not GlobalHydra.instance().is_initialized():
        return []
    options = GlobalHydra.instance().config_loader().get_group_options(group)
    return sorted(o for o in options if not o.endswith(SCHEMA_SUFFIX))


@functools.cache
def groups_text() -> str:
    """`group: option, option, ...` per line: the app's groups, then the launchers and sweepers; made only when the
    help is asked for (listing them takes a good part of a second, and the template resolves at every compose)."""
    from hydra.core.global_hydra import GlobalHydra

    if not HELP_FLAGS & set(sys.argv[1:]) or not GlobalHydra.instance().is_initialized():
        return ""
    loader = GlobalHydra.instance().config_loader()
    groups = sorted(g for g in loader.list_groups("") if g != "hydra") + list(SHOWN_HYDRA_GROUPS)
    listed = {group: [o for o in real_options(group) if o not in UNLISTED.get(group, ())] for group in groups}
    return "\n".join(f"{group}: {', '.join(options)}" for group, options in listed.items())


def register_help() -> None:
    """The `${nin.groups:}` resolver of the help template (conf/hydra/help/nin.yaml)."""
    from omegaconf import OmegaConf

    OmegaConf.register_new_resolver(HELP_RESOLVER, groups_text, replace=True)


def refuse_schema_choices(choices: Mapping[str, Any]) -> None:
    """`GROUP=NAME_schema` names a typed schema, not an option: one line with the real options."""
    for group, option in choices.items():
        if option is not None and str(option).endswith(SCHEMA_SUFFIX):
            options = real_options(group)
            listed = f"; choose one of: {', '.join(options)}" if options else ""
            raise UserError(f"{group}={option}: {option} is the typed schema that the options of '{group}' "
                            f"build on, not an option{listed}")
