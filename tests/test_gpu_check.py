"""benchmarks/gpu_check.py (every GPU-only check in one command), kept from rotting on a machine without a GPU:
it says so in one line and exits 0; `--device cpu` runs each check tiny, in this process, and prints the
table; a check that fails or raises is a FAIL row and a non-zero exit."""

from __future__ import annotations

import re
from types import ModuleType

import pytest
import torch

from tests.conftest import ROOT


@pytest.fixture
def gpu_check(monkeypatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # the benchmarks import each other by module name
    import gpu_check

    return gpu_check


def _table(out: str) -> dict[str, tuple[str, str]]:
    """check -> (result, figure), from the table after its header line."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"check\s+result\s+figure$", line))
    rows = [re.split(r"\s{2,}", line, maxsplit=2) for line in lines[start + 1:] if not line.startswith("gpu-check")]
    return {name: (result, figure) for name, result, figure in rows}


def test_without_a_gpu_it_says_so_in_one_line_and_exits_0(gpu_check, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main([]) == 0
    out = capsys.readouterr()
    assert len(out.out.splitlines()) == 1 and "no CUDA GPU" in out.out and out.err == ""


def test_a_check_that_fails_or_raises_is_a_fail_row_and_a_non_zero_exit(gpu_check, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(gpu_check, "CHECKS", [
        ("fine", lambda ctx: (True, "1 thing")),
        ("wrong", lambda ctx: (False, "2 things")),
        ("broken", lambda ctx: 1 / 0),
        ("elsewhere", lambda ctx: (None, "not on this GPU")),
    ])
    assert gpu_check.main(["--device", "cpu", "--workdir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    rows = _table(out)
    assert {name: result for name, (result, _) in rows.items()} == {
        "fine": "ok", "wrong": "FAIL", "broken": "FAIL", "elsewhere": "n/a"}
    assert "division by zero" in rows["broken"][1]
    assert out.splitlines()[-1] == "gpu-check: 2 check(s) failed: wrong, broken"


@pytest.mark.slow
def test_a_dry_run_on_the_cpu_runs_every_check_and_prints_one_table(gpu_check, monkeypatch, capsys, tmp_path):
    """Every check's code, tiny: the host-sync test's cpu case (one subprocess), a fast_cifar10 fit compiled with
    aot_eager on CIFAR-format files, both benchmarks' measurements. Speed figures are printed, not judged."""
    for var in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):  # the run points them at its cache; put back after
        monkeypatch.delenv(var, raising=False)
    assert gpu_check.main(["--device", "cpu", "--workdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    rows = _table(out)
    assert list(rows) == [name for name, _ in gpu_check.CHECKS]
    assert {result for result, _ in rows.values()} == {"ok"}, out
    assert "1 passed" in rows["host sync"][1]
    assert "graphs 2, graph breaks 0, recompiles 1" in rows["compile"][1]
    assert re.search(r"images/s, a plain PyTorch loop [\d,]+: ratio [\d.]+; test acc", rows["fast_cifar10"][1])
    assert (tmp_path / "fast_cifar10" / "metrics.json").is_file()
