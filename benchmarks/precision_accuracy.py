"""Benchmark: --precision on digits, the same seeds and noisy labels under each policy.

Issue 20's target: mixed_float16 and mixed_bfloat16 runs train without NaN and end
within 1.5 points of float32 on the same seed. On a CPU the half types are emulated
(bfloat16 on CPUs without native support is slower, not faster: the wall time is
reported, and benchmarks/gpu_throughput.py measures speed).

    python benchmarks/precision_accuracy.py                       # 3 seeds, ~15 min on 2 cores
    python benchmarks/precision_accuracy.py --seeds=0 --flag=method=ce

Each cell is a whole run (`runner.run`: both stages, default digits recipe, k-means IDN
0.4), without monitoring or export.
"""

import argparse
import dataclasses
import math
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from idn_tf import config as config_lib, precision, runner  # noqa: E402

KEYS = ("ce_test_accuracy", "method_test_accuracy", "eta_mean")


def cell(seed, policy, flags):
    cfg = config_lib.Config(**{**flags, "seed": seed, "precision": policy, "verbose": 0,
                               "monitor_every": 10**6, "export_dir": "",
                               "run_dir": tempfile.mkdtemp(prefix="precision-")})
    start = time.time()
    res = runner.run(cfg)
    out = {k: res[k] for k in KEYS if res.get(k) is not None}
    out["finite"] = all(math.isfinite(v) for h in ("ce_history", "method_history")
                        for v in (res.get(h) or {}).get("loss", []))
    out["seconds"] = time.time() - start
    return out


def parse_flags(items):
    fields = {f.name: f.type for f in dataclasses.fields(config_lib.Config)}
    flags = {}
    for item in items:
        name, value = item.split("=", 1)
        kind = fields[name]
        flags[name] = (value if kind in (str, "str") else
                       int(value) if kind in (int, "int") else float(value))
    return flags


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--policies", default=",".join(precision.POLICIES))
    parser.add_argument("--flag", action="append", default=[], help="a Config field=value")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    policies = args.policies.split(",")
    flags = parse_flags(args.flag)
    rows = {(s, p): cell(s, p, flags) for s in seeds for p in policies}
    key = "method_test_accuracy"  # every method's results have it (CE's too)
    print(f"\n{key} (%), per seed; Δ = policy − float32 on the same seed")
    print("| policy | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± std | max abs Δ | NaN-free | s/run |")
    print("|---|" + "---|" * (len(seeds) + 4))
    for p in policies:
        accs = [100 * rows[s, p][key] for s in seeds]
        deltas = [abs(100 * (rows[s, p][key] - rows[s, "float32"][key])) for s in seeds] \
            if "float32" in policies else []
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        print(f"| {p} | " + " | ".join(f"{a:.2f}" for a in accs)
              + f" | {statistics.mean(accs):.2f} ± {std:.2f} | "
              + (f"{max(deltas):.2f}" if deltas else "–")
              + f" | {all(rows[s, p]['finite'] for s in seeds)} | "
              + f"{statistics.mean(rows[s, p]['seconds'] for s in seeds):.0f} |")


if __name__ == "__main__":
    main()
