"""Benchmark: wall time of the default `python -m idn_tf.train`, with and without monitoring.

Runs the real CLI in a fresh temporary folder, alternating two configurations
(CPU timings on shared machines drift, so A B A B … and medians):

  full      the default: TensorBoard, label monitoring every epoch, audit, plots, export
  lean      --monitor_every=1000 (monitoring after the last epoch only) --export_dir=''

Target (issue 4): the full default run finishes in ≤ 3 minutes on 2 cores.

    python benchmarks/default_run.py --rounds 2
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

CONFIGS = {
    "full": [],
    "lean": ["--monitor_every=1000", "--export_dir="],
}


def time_run(extra):
    with tempfile.TemporaryDirectory() as folder:
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "idn_tf.train", "--verbose=0", *extra],
                       cwd=folder, env=env, check=True, capture_output=True)
        return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    times = {name: [] for name in CONFIGS}
    for r in range(args.rounds):
        for name, extra in CONFIGS.items():
            times[name].append(time_run(extra))
            print(f"round {r + 1}: {name} {times[name][-1]:.1f} s", flush=True)
    print(f"\n{'config':<6} {'median s':>9}  all")
    for name, ts in times.items():
        print(f"{name:<6} {statistics.median(ts):>9.1f}  {', '.join(f'{t:.1f}' for t in ts)}")


if __name__ == "__main__":
    main()
