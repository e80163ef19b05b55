"""One-line errors for bad input; a traceback only with HYDRA_FULL_ERROR=1."""

from __future__ import annotations

import difflib
import logging
import os
import re
import sys
from collections.abc import Callable, Iterable
from typing import Any, NoReturn

# Set by `one_line_errors` in the parent process, so that child processes (DDP ranks,
# launcher workers) keep printing one-line errors instead of tracebacks.
_MARKER = "NIN_ONE_LINE_ERRORS"


class UserError(Exception):
    """A mistake in the user's input or environment: shown as one line, without a traceback."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean X?)' when a close match exists, else ''."""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {match[0]}?)" if match else ""


def _full_key(text: str) -> str | None:
    found = re.search(r"full_key:\s*(\S+)", text)
    return found.group(1) if found else None


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0].strip() if text.strip() else ""


def _missing_option(text: str) -> str | None:
    """Hydra's 'Could not find group/option' with the list of choices, as one line."""
    found = re.search(r"Could not (?:find|load) '([^']+)/([^'/]+)'", text)
    if not found:
        return None
    group, option = found.groups()
    choices = [c for c in re.findall(r"^\t(\S+)$", text, flags=re.M) if not c.endswith("_schema")]
    hint = f"; choose one of: {', '.join(choices)}" if choices else ""
    return f"{group}={option}: no such option in group '{group}'{hint}{did_you_mean(option, choices)}"


def _override_error(exc: BaseException) -> str | None:
    """Hydra's 'Could not override' / 'Could not append' errors and OmegaConf key/type errors."""
    text = str(exc)
    cause = exc.__cause__ or exc.__context__
    cause_text = str(cause) if cause is not None else ""
    key = _full_key(cause_text) or _full_key(text)
    override = re.search(r"Could not override '([^']+)'", text)
    if override:
        key = override.group(1)
    if key is None:
        return None
    combined = f"{text}\n{cause_text}"
    if "not in struct" in combined or "not in '" in combined or "Key '" in _first_line(cause_text):
        from nin_lightning.config import known_keys

        return (
            f"{key}: unknown config key{did_you_mean(key, known_keys())}; "
            "check the spelling (python train.py --cfg job lists every key)"
        )
    reason = _first_line(cause_text) or _first_line(text)
    return f"{key}: {reason}{_type_fix(key, reason)}"


def _type_fix(key: str, reason: str) -> str:
    """The fix for a value of the wrong type, from OmegaConf's reason."""
    for pattern, fix in ((r"converted to Integer", "a whole number, e.g. {key}=10"),
                         (r"converted to Float", "a number, e.g. {key}=0.5"),
                         (r"not a valid bool", "true or false, e.g. {key}=true")):
        if re.search(pattern, reason):
            return "; give " + fix.format(key=key)
    return ""


def one_line(exc: BaseException) -> str:
    """Condense any exception into a single line that names the culprit."""
    if isinstance(exc, UserError):
        return str(exc).replace("\n", " ")
    if isinstance(exc, OSError) and exc.filename:
        return (f"cannot write or read {exc.filename}: {exc.strerror}; check the path and its permissions "
                "(hydra.run.dir, NIN_OUTPUT_DIR, dataset.root)")
    text = re.sub(r"\s*See https?://\S+ for details\.?", "", str(exc))
    if type(exc).__name__ == "OverrideParseException":
        return " ".join(text.split()) + "; fix the override's syntax"
    for parse in (_missing_option, lambda _t: _override_error(exc)):
        line = parse(text)
        if line:
            return line
    for link in (exc.__cause__, exc.__context__):
        if isinstance(link, UserError):
            return str(link).replace("\n", " ")
    summary = " ".join(part.strip() for part in text.splitlines() if part.strip())
    summary = re.sub(r"\s*(full_key|object_type|reference_type):.*", "", summary)
    return f"{type(exc).__name__}: {summary or 'no message'} (set HYDRA_FULL_ERROR=1 for the traceback)"


def fail(message: str, code: int = 2) -> NoReturn:
    """Print `error: message` on one line to stderr and exit."""
    from nin_lightning.console import to_log_files

    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    to_log_files(f"error: {message}", logging.ERROR)
    sys.exit(code)


def wants_traceback() -> bool:
    """True when the user set HYDRA_FULL_ERROR=1 (not us, for our own child processes)."""
    return os.environ.get("HYDRA_FULL_ERROR") == "1" and _MARKER not in os.environ


class _DropHydraJobLine:
    """stderr proxy that drops Hydra's 'Error executing job with overrides' line (ours says more)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        if text.startswith("Error executing job with overrides"):
            return len(text)
        return self._stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def one_line_errors(main: Callable[[], Any]) -> Any:
    """Run `main`; turn any exception into one line and a non-zero exit.

    With HYDRA_FULL_ERROR=1 set by the user, exceptions propagate with their traceback.
    Otherwise we ask Hydra to re-raise (so we see the exception) and print it ourselves.
    """
    if wants_traceback():
        return main()
    os.environ["HYDRA_FULL_ERROR"] = "1"
    os.environ[_MARKER] = "1"
    sys.stderr = _DropHydraJobLine(sys.stderr)
    try:
        return main()
    except KeyboardInterrupt:
        fail("interrupted", code=130)
    except Exception as exc:
        fail(one_line(exc), code=2 if _is_user_error(exc) else 1)


def _is_user_error(exc: BaseException) -> bool:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    chain = [exc, exc.__cause__, exc.__context__]
    return any(isinstance(e, UserError | HydraException | OmegaConfBaseException) for e in chain)
