"""The benchmark scripts still run and print their figures (tiny sizes; the figures themselves are not
asserted: they are measurements, quoted in the README with the command that made them)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT, cli_env


def _run(tmp_path, script: str, *args: str) -> str:
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], cwd=tmp_path,
                            env=cli_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return result.stdout


def _ratio(out: str) -> float:
    found = re.search(r"^ratio: ([0-9.]+)", out, flags=re.M)
    assert found, out[-2000:]
    return float(found.group(1))


@pytest.mark.slow
def test_data_pipeline_benchmark_prints_both_paths_and_a_ratio(tmp_path):
    out = _run(tmp_path, "data_pipeline.py", "--images", "512", "--epochs", "1", "--no-memory")
    assert _ratio(out) > 0 and out.count("images/s") >= 3
    assert float(re.search(r"^resident ratio: ([0-9.]+)", out, flags=re.M).group(1)) > 0


@pytest.mark.slow
def test_step_overhead_benchmark_prints_all_three_loops_and_a_ratio(tmp_path):
    out = _run(tmp_path, "step_overhead.py", "--batches", "64", "128", "--steps", "4", "--skip", "1",
               "--repeats", "1")
    rows = re.findall(r"^ *(64|128) .*(img/s|no limit measured)$", out, flags=re.M)
    assert _ratio(out) > 0 and len(rows) == 2, out[-2000:]


@pytest.mark.slow
def test_overhead_benchmark_prints_both_loops_and_a_ratio(tmp_path):
    out = _run(tmp_path, "overhead.py", "--dataset", "digits", "--batch", "32", "--steps", "4", "--skip", "1",
               "--repeats", "1")
    assert _ratio(out) > 0 and re.search(r"^lightning: .* images/s", out, flags=re.M)


@pytest.mark.slow
def test_time_to_accuracy_benchmark_reports_both_recipes(tmp_path):
    out = _run(tmp_path, "time_to_accuracy.py", "--data", "digits", "--max-epochs", "1")
    assert re.search(r"^fast_mnist \(ours\): ", out, flags=re.M), out[-2000:]
    assert re.search(r"^100-line recipe \(reference\): ", out, flags=re.M), out[-2000:]
