"""One-line errors on the command line (Hydra's and OmegaConf's read too); a traceback only with HYDRA_FULL_ERROR=1."""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

from nin_lightning.errors import UserError, did_you_mean, next_steps, one_line

# Set by `one_line_errors`, so that child processes (DDP ranks, launcher workers) print one-line errors too.
_MARKER = "NIN_ONE_LINE_ERRORS"
# What a value of the wrong type should look like, by the type OmegaConf expected.
_TYPE_FIX = {int: "a whole number, e.g. {key}=10", float: "a number, e.g. {key}=0.5",
             bool: "true or false, e.g. {key}=true"}


def _chain(exc: BaseException) -> list[BaseException]:
    out = [exc]
    while (link := out[-1].__cause__ or out[-1].__context__) is not None and link not in out:
        out.append(link)
    return out


def _missing_option(exc: BaseException) -> str | None:
    """Hydra's MissingConfigException for `group=option`: the group's real options (not our *_schema)."""
    from hydra.errors import MissingConfigException

    if not isinstance(exc, MissingConfigException) or not exc.missing_cfg_file or exc.options is None:
        return None
    group, _, option = exc.missing_cfg_file.rpartition("/")
    choices = sorted(o for o in exc.options if not o.endswith("_schema"))
    return (f"{group}={option}: no such option in group '{group}'; choose one of: {', '.join(choices)}"
            f"{did_you_mean(option, choices)}")


def _bad_key_or_value(exc: BaseException) -> str | None:
    """OmegaConf's error behind a failed override: an unknown key, or a value of the wrong type."""
    from dataclasses import is_dataclass
    from typing import get_type_hints

    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

    from nin_lightning.config import unknown_key

    omega = next((e for e in _chain(exc) if isinstance(e, OmegaConfBaseException) and e.full_key), None)
    if omega is None:
        return None
    key = str(omega.full_key)
    if isinstance(omega, ConfigKeyError | ConfigAttributeError):
        return unknown_key(key)
    reason = (omega.msg or str(omega)).strip().splitlines()[0].strip()  # the rest repeats full_key and types
    schema = omega.object_type  # the dataclass whose field's annotated type OmegaConf tried to convert to
    hints = get_type_hints(schema) if isinstance(schema, type) and is_dataclass(schema) else {}
    fix = _TYPE_FIX.get(hints.get(omega.key))
    return f"{key}: {reason}" + (f"; give {fix.format(key=key)}" if fix else "")


def _dead_job(exc: BaseException) -> str | None:
    """submitit's UncompletedJobError (a job killed, or out of memory): its first line names the job and folder."""
    if type(exc).__name__ != "UncompletedJobError":
        return None
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    match = re.search(r"Job (\S+) .*?with path (\S+)", first)
    job, where = (match.group(1), Path(match.group(2)).parent) if match else ("?", "the sweep dir's .submitit/")
    return (f"sweep job {job} died before it returned a result (killed, or out of memory?); its log is in "
            f"{where}; re-run the same sweep command with resume=auto to continue it")


def _job_error(exc: BaseException) -> str | None:
    """submitit's FailedJobError (a job's own process): its `error: ...` line, else its last `SomeError: ...`."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if len(lines) < 3:
        return None
    ours = [ln.removeprefix("error: ") for ln in lines if ln.startswith("error: ")]
    raised = [ln for ln in lines if re.match(r"^[\w.]+(Error|Exception|Interrupt): ", ln)]
    if ours or not raised:
        return ours[-1] if ours else None
    return f"{raised[-1]} (a job's process failed: {type(exc).__name__}; its log is in the sweep dir's .submitit/)"


def _bad_override(override: str, reason: str) -> str:
    """Hydra's parse error of OVERRIDE; a value holding `=` (a sweep job's dir name) needs Hydra's quotes."""
    key, _, value = override.partition("=")
    fix = "fix the override's syntax"
    if "=" in value and not value.startswith(("'", '"', "[", "{")):
        fix = f"quote its value for Hydra inside the shell's quotes: {key}=\"'{value}'\""
    return f"{override}: {reason}; {fix}"


def explain(exc: BaseException) -> str:
    """Any exception as one line that names the culprit and, where known, the fix."""
    from hydra.errors import OverrideParseException

    if isinstance(exc, UserError):
        return one_line(exc)
    if isinstance(exc, OverrideParseException):
        return _bad_override(exc.override, " ".join(exc.message.split()))
    return _missing_option(exc) or _bad_key_or_value(exc) or _dead_job(exc) or _job_error(exc) or one_line(exc)


def fail(message: str, code: int = 2, then: Sequence[str] = ()) -> NoReturn:
    """Print `error: message` on one line to stderr, then the lines THEN (what to do now), and exit."""
    sys.stderr.write(f"error: {message}\n" + "".join(f"{line}\n" for line in then))
    sys.stderr.flush()
    sys.exit(code)


def wants_traceback() -> bool:
    """True when the user set HYDRA_FULL_ERROR=1 (not us, for our own child processes)."""
    return os.environ.get("HYDRA_FULL_ERROR") == "1" and _MARKER not in os.environ


class _DropHydraJobLine:
    """stderr proxy that drops Hydra's 'Error executing job with overrides' line (ours says more)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        return len(text) if text.startswith("Error executing job with overrides") else self._stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def _hydra_reraises() -> Iterator[None]:
    """While the job runs: Hydra re-raises (so we see the exception), children print one line (the marker), and
    Hydra's own job line is dropped; all undone afterwards."""
    saved_env = {k: os.environ.get(k) for k in ("HYDRA_FULL_ERROR", _MARKER)}
    os.environ.update({"HYDRA_FULL_ERROR": "1", _MARKER: "1"})
    try:
        with contextlib.redirect_stderr(_DropHydraJobLine(sys.stderr)):
            yield
    finally:
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def one_line_errors(main: Callable[[], Any]) -> Any:
    """Run `main`; any exception as one line and a non-zero exit (2: the user's mistake) unless HYDRA_FULL_ERROR=1."""
    if wants_traceback():
        return main()
    try:
        with _hydra_reraises():
            return main()
    except KeyboardInterrupt:
        fail("interrupted", code=130)
    except Exception as exc:
        fail(explain(exc), code=2 if _is_user_error(exc) else 1, then=next_steps(exc))


def _is_user_error(exc: BaseException) -> bool:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    return any(isinstance(e, UserError | HydraException | OmegaConfBaseException) for e in _chain(exc))
