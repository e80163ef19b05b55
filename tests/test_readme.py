"""The README as a newcomer follows it: its quickstart and the three user commands, run literally, line by
line, in a fresh clone, from a shell in which nothing was activated by hand.

The clone gets the repo's files (git's view: committed and new files, no outputs/, data/ or .venv/) and a
`.venv` that stands for the venv these tests run in (its pyvenv.cfg, bin/ and lib/), stamped as installed:
`make train` then finds the install done, as after a first `make` (installing torch again is no test of
the README). Before anything runs, `make -n train` must plan no venv creation, so nothing can write into
the real venv through the links.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

MARKER = "<!-- tests/test_readme.py runs every line of the next four code blocks"
README_MAX_LINES = 150
STATEFUL = ("source ", ". ", "export ", "cd ")  # lines whose effect the next lines need


def readme_blocks() -> list[list[str]]:
    """The four ```bash blocks after the README's marker, as lists of command lines."""
    text = (ROOT / "README.md").read_text()
    assert MARKER in text, "the README lost its test marker"
    blocks = re.findall(r"```bash\n(.*?)```", text.split(MARKER, 1)[1], flags=re.S)[:4]
    assert len(blocks) == 4
    return [[line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]
            for block in blocks]


def fresh_clone(tmp: Path) -> Path:
    """The repo's files in tmp/clone, and a .venv that is the running venv, installed (see the module doc)."""
    assert sys.prefix != sys.base_prefix, "the tests must run in a venv (make test makes .venv)"
    clone = tmp / "clone"
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.splitlines()
    for rel in listed:
        src = ROOT / rel
        if src.is_file():
            (clone / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, clone / rel)
    venv, real = clone / ".venv", Path(sys.prefix)
    venv.mkdir()
    shutil.copy2(real / "pyvenv.cfg", venv / "pyvenv.cfg")
    for name in ("bin", "lib", "include"):
        if (real / name).exists():
            (venv / name).symlink_to(real / name)
    (venv / ".installed").touch()  # newer than pyproject.toml: make's install step is done
    return clone


def fresh_shell_env(tmp: Path) -> dict[str, str]:
    """A login-like environment: no venv on PATH or active, no PYTHONPATH, a new HOME (no W&B login)."""
    drop = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "CONDA_PREFIX")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith(("WANDB_", "NIN_", "HYDRA_",
                                                                                        "SLURM_"))}
    venvs = (str(Path(sys.prefix)), str(ROOT / ".venv"))
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(venvs))
    env["HOME"] = str(tmp / "home")
    (tmp / "home").mkdir(exist_ok=True)
    return env


def run_line(clone: Path, env: dict[str, str], state: list[str], line: str) -> subprocess.CompletedProcess[str]:
    """LINE in bash, in the clone, after the earlier lines that set shell state (`source ...`)."""
    script = "\n".join(["set -euo pipefail", *state, line])
    return subprocess.run(["bash", "-c", script], cwd=clone, env=env, capture_output=True, text=True, timeout=1200)


def test_readme_is_a_short_front_door():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, len(lines)
    linked = set(re.findall(r"\]\(((?:docs|sweeps)/[^)#]+)\)", "\n".join(lines)))
    assert {"docs/architecture.md", "docs/data.md", "docs/scale-and-resume.md", "docs/reproducing.md",
            "docs/speed.md", "docs/failing-safely.md", "docs/docker.md", "docs/tracking.md",
            "docs/using-models.md"} <= linked
    missing = [rel for rel in linked if not (ROOT / rel).is_file()]
    assert not missing


@pytest.mark.slow
def test_the_readme_quickstart_and_three_commands_work_literally(tmp_path):
    clone = fresh_clone(tmp_path)
    env = fresh_shell_env(tmp_path)
    plan = subprocess.run(["make", "-n", "train"], cwd=clone, env=env, capture_output=True, text=True, timeout=60)
    assert plan.returncode == 0 and "-m venv" not in plan.stdout and "pip install" not in plan.stdout, plan.stdout
    quickstart, a_run, a_sweep, compare = readme_blocks()

    state: list[str] = []
    outputs: dict[str, subprocess.CompletedProcess[str]] = {}
    for line in [*quickstart, *a_run, *a_sweep, *compare]:
        if line.startswith(STATEFUL):
            state.append(line)
            assert run_line(clone, env, state, "true").returncode == 0, line
            continue
        result = run_line(clone, env, state, line)
        outputs[line] = result
        assert result.returncode == 0, f"{line}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert any(line.startswith("source .venv/bin/activate") for line in state)  # the README says how

    runs = sorted((clone / "outputs" / "runs").iterdir())
    assert len(runs) == 2  # make train's, then the README's run
    for run_dir in runs:
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["status"] == "completed" and metrics["test/acc"] >= 0.95, (run_dir, metrics)

    (run_line_text,) = a_run
    shown = outputs[run_line_text].stdout.splitlines()
    assert any(line.startswith("[nin] model: NiN") and "parameters" in line for line in shown)
    assert not any("FLOPs" in line or "├" in line for line in shown)  # no Lightning summary, no config tree

    dry_line, grid_line = a_sweep
    assert "dry run: 12 job(s)" in outputs[dry_line].stdout
    assert "slurm" not in outputs[dry_line].stdout.lower()  # a local sweep's dry run speaks of local jobs
    sweep_out = outputs[grid_line].stdout + outputs[grid_line].stderr
    print(f"the README's 4-job sweep printed {len(sweep_out.splitlines())} lines")
    assert len(sweep_out.splitlines()) < 60, sweep_out  # a few lines per job
    (sweep_dir,) = (clone / "outputs" / "sweeps").iterdir()  # the dry run made none
    jobs = sorted(d for d in sweep_dir.iterdir() if d.is_dir() and not d.name.startswith("."))
    assert len(jobs) == 4
    for job in jobs:
        metrics = json.loads((job / "metrics.json").read_text())
        assert metrics["status"] == "completed" and metrics["test/acc"] >= 0.9, (job, metrics)
    from tests.wandb_records import offline_runs

    groups = {run.group for job in jobs for run in offline_runs(job)}
    assert groups == {sweep_dir.name}  # one W&B run per job, grouped by the sweep

    report = (sweep_dir / "report.md").read_text()
    assert "model.dropout" in report and "0.5" in report and (sweep_dir / "report.csv").is_file()
    assert list(sweep_dir.glob("*.png"))


def test_train_py_works_in_a_shell_that_never_activated_the_venv(tmp_path):
    """The newcomer's trial: a fresh shell's `python train.py ...` failed with `No module named 'hydra'`.
    Now train.py re-runs itself with the .venv that `make train` made."""
    clone = fresh_clone(tmp_path)
    env = fresh_shell_env(tmp_path)
    python = shutil.which("python3", path=env["PATH"])
    assert python is not None
    lacks = subprocess.run([python, "-c", "import hydra"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert lacks.returncode != 0  # the shell's own Python has none of the packages
    result = subprocess.run([python, "train.py", "--help"], cwd=clone, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "dataset: cifar10, cifar100, digits, mnist, svhn" in result.stdout
    shutil.rmtree(clone / ".venv")
    alone = subprocess.run([python, "train.py"], cwd=clone, env=env, capture_output=True, text=True, timeout=120)
    assert alone.returncode != 0 and alone.stderr.startswith("error: hydra is not installed for ")
    assert "make train" in alone.stderr and "source .venv/bin/activate" in alone.stderr


def test_the_readme_says_how_to_install_without_cuda_and_make_does_it(tmp_path):
    """A CPU-only install was 6.2 GB (torch from PyPI pulls CUDA 13 and nvidia-* wheels) while the README said
    "no GPU, no download". It now says what the default weighs and how to take PyTorch's CPU wheels, and
    `make train TORCH_INDEX=cpu` installs them before the package."""
    text = (ROOT / "README.md").read_text().split(MARKER, 1)[0]
    assert "6.2 GB" in text and "make train TORCH_INDEX=cpu" in text
    assert "pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu" in text
    assert "no download (" not in text
    venv = tmp_path / "venv"
    plan = subprocess.run(["make", "-n", f"{venv}/.installed", f"VENV={venv}", "TORCH_INDEX=cpu"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    steps = plan.stdout.splitlines()
    cpu = [i for i, line in enumerate(steps) if "--index-url https://download.pytorch.org/whl/cpu" in line]
    package = [i for i, line in enumerate(steps) if '-e ".[dev]"' in line]
    assert len(cpu) == 1 and len(package) == 1 and cpu[0] < package[0], plan.stdout
    default = subprocess.run(["make", "-n", f"{venv}/.installed", f"VENV={venv}"], cwd=ROOT, capture_output=True,
                             text=True, timeout=60)
    assert "index-url" not in default.stdout and '-e ".[dev]"' in default.stdout
