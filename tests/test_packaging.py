"""The image and the wheel hold every part of the project a run needs (no Docker engine runs here)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile

import pytest

from tests.conftest import ROOT


def _copied() -> set[str]:
    sources: set[str] = set()
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            sources.update(p.rstrip("/") for p in line.split()[1:-1] if not p.startswith("--"))
    return sources


def test_the_image_copies_every_package_and_the_entry_point():
    include = re.search(r"^include = \[(.*?)\]", (ROOT / "pyproject.toml").read_text(), flags=re.M)
    packages = {p.strip(' "').rstrip("*") for p in include.group(1).split(",")}
    needed = packages | {"pyproject.toml", "conf", "train.py"}
    assert needed <= _copied(), f"Dockerfile does not COPY {sorted(needed - _copied())}"
    entry = re.search(r'^ENTRYPOINT \[(.*)\]$', (ROOT / "Dockerfile").read_text(), flags=re.M)
    assert entry and "train.py" in entry.group(1)
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert not needed & {line.strip().rstrip("/") for line in ignored}


@pytest.mark.slow
def test_the_wheel_holds_the_package_and_the_hydra_launchers(tmp_path):
    src = tmp_path / "src"  # a copy: an in-tree build would leave build/ in the checkout
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".venv", "outputs", "build", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(src)], check=True, timeout=300)
    (wheel,) = tmp_path.glob("nin_lightning-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "nin_lightning/run.py" in names and "nin_lightning/models/nin.py" in names
    assert any(n.startswith("hydra_plugins/nin_lightning_launcher/") for n in names)
