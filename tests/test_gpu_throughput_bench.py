"""benchmarks/gpu_throughput.py: its arithmetic against hand-worked cases, and `--quick` run
end to end (its tables' rows and columns, every figure a positive finite number)."""

import importlib.util
import math
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
PATH = os.path.join(ROOT, "benchmarks", "gpu_throughput.py")


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("gpu_throughput_bench", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_projected_seconds_hand_worked(bench):
    # CIFAR: 160 epochs × 50,000 images; stage 1 at 1,000 images/s is 8,000 s, stage 2 at
    # 800 images/s 10,000 s: 18,000 s = 5 h.
    assert bench.projected_seconds(50_000, 160, [1000.0, 800.0]) == pytest.approx(18_000.0)
    # Clothing1M: 15 epochs × 1.75M images at 350 images/s per stage: 2 × 75,000 s.
    assert bench.projected_seconds(1_750_000, 15, [350.0, 350.0]) == pytest.approx(150_000.0)
    assert bench.projected_seconds(10, 1, []) == 0.0


def test_headroom(bench):
    assert bench.headroom(19_500.0, 300.0) == pytest.approx(65.0)
    assert bench.headroom(776.0, 900.0) < 1  # below the rate: does not keep up


def test_format_duration(bench):
    assert bench.format_duration(42.4) == "42 s"
    assert bench.format_duration(750) == "12.5 min"
    assert bench.format_duration(18_000) == "5.0 h"
    assert bench.format_duration(150_000) == "41.7 h"
    assert bench.format_duration(200_000) == "2.3 days"


def test_format_rate(bench):
    assert bench.format_rate(11388.4) == "11388"
    assert bench.format_rate(47.34) == "47.3"
    assert bench.format_rate(1.523) == "1.52"


def test_precisions_for(bench):
    assert bench.precisions_for("GPU") == ("float32", "mixed_float16")
    assert bench.precisions_for("CPU") == ("float32", "mixed_bfloat16", "mixed_float16")


def test_na_keeps_the_first_line(bench):
    assert bench.na(ValueError("XLA cannot compile\ntraceback…")) == (
        "n/a (ValueError: XLA cannot compile)")
    assert len(bench.na(RuntimeError("x" * 500))) < 120


def _cells(line):
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _number(text):
    value = float(text.split()[0].rstrip("×"))
    assert math.isfinite(value) and value > 0, text
    return value


@pytest.mark.e2e
def test_quick_run_prints_every_table():
    result = subprocess.run([sys.executable, PATH, "--quick"], cwd=ROOT, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("commit ") and "devices " in lines[0]

    header = next(i for i, line in enumerate(lines) if line.startswith("| fit | precision"))
    assert _cells(lines[header]) == ["fit", "precision", "XLA off (images/s)"]
    rows = {tuple(_cells(line)[:2]): _cells(line)[2:] for line in lines[header + 2:header + 6]}
    assert set(rows) == {(f, p) for f in ("CE", "IDN") for p in ("float32", "mixed_bfloat16")}
    for cells in rows.values():
        _number(cells[0])

    pipelines = [line for line in lines if line.startswith(("| CIFAR (", "| file ("))]
    assert len(pipelines) == 2
    cifar = _cells(pipelines[0])
    _number(cifar[1]), _number(cifar[3]), _number(cifar[4])
    assert cifar[5] in ("yes", "no")
    _number(_cells(pipelines[1])[1])
    assert re.search(r"file pipeline / a GPU's ResNet-50 rate .*: \d+\.\d+× on \d+ CPUs",
                     result.stdout)

    projected = [line for line in lines if line.startswith(("| float32, XLA off", "| fastest"))]
    assert len(projected) == 2
    for line in projected:
        cells = _cells(line)
        _number(cells[1]), _number(cells[2])
        assert re.fullmatch(r"\d+(\.\d)? (s|min|h|days)", cells[3]), cells[3]
