"""benchmarks/idn_plus.py's choice of the preset, on run folders made here with known
figures: the paired gains and the one-standard-error rule worked out by hand."""

import importlib.util
import json
import os

import pytest

PATH = os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks", "idn_plus.py")


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("idn_plus_bench", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write(folder, row, seed, val, test):
    os.makedirs(os.path.join(folder, f"{row}-{seed}"))
    with open(os.path.join(folder, f"{row}-{seed}", "results.json"), "w") as f:
        json.dump({"method_validation_accuracy": val, "method_test_accuracy_selected": test}, f)


def lines(text):
    return {line.split(" | ")[0].strip("| "): line for line in text.splitlines()
            if line.startswith("| ")}


def test_the_rule_keeps_the_paper_when_the_best_gain_is_within_its_error(bench, tmp_path):
    # Per (noise, seed) validation gains over "idn", in points:
    #   a: +4, −2 | +4, −2  → mean +1, s.e. = sd(±3)/√4 = sqrt(12)/2 = 1.732 → threshold −0.73
    #   b: +0.5 on all four → mean +0.5, s.e. 0
    for noise in ("kmeans", "ccn0.4"):
        folder = str(tmp_path / noise)
        for seed, (a, b) in enumerate([(0.04, 0.005), (-0.02, 0.005)]):
            write(folder, "idn", seed, 0.5, 0.7)
            write(folder, "idn-a", seed, 0.5 + a, 0.6)
            write(folder, "idn-b", seed, 0.5 + b, 0.8)
    text = bench.choice(bench.load(str(tmp_path), ["kmeans", "ccn0.4"]))
    rows = lines(text)
    assert "+1.00 ± 1.73" in rows["idn-a"] and "-10.00" in rows["idn-a"]
    assert "+0.50 ± 0.00" in rows["idn-b"] and "+10.00" in rows["idn-b"]
    # b (+0.5) and the paper (0) are both above −0.73: the fewest changes wins.
    assert text.endswith("the rule picks: idn.")


def test_the_rule_takes_an_option_whose_gain_is_clear(bench, tmp_path):
    for noise in ("kmeans", "ccn0.4"):
        folder = str(tmp_path / noise)
        for seed, gain in enumerate([0.03, 0.02]):
            write(folder, "idn", seed, 0.5, 0.7)
            write(folder, "idn-b", seed, 0.5 + gain, 0.7)
            write(folder, "tanaka", seed, 0.9, 0.9)  # a reference row, never picked
    text = bench.choice(bench.load(str(tmp_path), ["kmeans", "ccn0.4"]))
    # b: +3, +2, +3, +2 → mean 2.5, s.e. 0.289: the paper (0) is below 2.21.
    assert "+2.50 ± 0.29" in lines(text)["idn-b"]
    assert "(Tanaka, for reference)" in text
    assert text.endswith("the rule picks: idn-b.")
