"""Benchmark: what each method costs on digits, per epoch and per run, relative to CE.

    python benchmarks/method_cost.py                      # every method, one seed
    python benchmarks/method_cost.py --methods=ce,elr --out=/tmp/cost

Runs `python -m idn_tf.train --dataset=digits --noise=ccn --noise_rate=0.4` once per method,
one after the other (run the benchmark alone on the machine: shared cores make the figures
meaningless), each in a fresh folder and a fresh process, so every method trains its own
stage 1 where it needs one. The epoch times come from the wall times of the per-epoch
summaries Keras' TensorBoard callback writes to tb/<stage>/train (`epoch_loss`), so nothing
in the run is changed to time it. An epoch's time includes what Keras does at its end there
(the validation pass; the test pass on the epochs it runs), as a user's run would.

Prints one markdown table: per method, the median seconds of an epoch of its own stages
(stage 1 left out; the first epoch left out too, it traces the graph), that over CE's, the
whole process' wall time and that over CE's.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

from idn_tf import methods

ROWS = {m.name: m.title for m in methods.all_methods()}


def epoch_times(folder):
    """Wall times (s) of the `epoch_loss` summaries in the event files of `folder`, by step."""
    import tensorflow as tf
    times = {}
    for name in sorted(os.listdir(folder)):
        for record in tf.data.TFRecordDataset(os.path.join(folder, name)):
            event = tf.compat.v1.Event.FromString(record.numpy())
            if any(v.tag == "epoch_loss" for v in event.summary.value):
                times[event.step] = event.wall_time
    return [times[s] for s in sorted(times)]


def stage_epoch_seconds(run_dir, stage):
    """The durations of a stage's epochs after its first (s)."""
    times = epoch_times(os.path.join(run_dir, "tb", stage, "train"))
    return [b - a for a, b in zip(times, times[1:])]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=",".join(ROWS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmark-runs/method-cost")
    parser.add_argument("--flag", action="append", default=[],
                        help="extra idn_tf flag for every run, e.g. --flag=epochs=20")
    args = parser.parse_args()
    names = args.methods.split(",")
    if "ce" not in names:
        names = ["ce"] + names  # the reference
    rows = {}
    for name in names:
        run_dir = os.path.join(args.out, name)
        command = [sys.executable, "-m", "idn_tf.train", "--dataset=digits", "--noise=ccn",
                   "--noise_rate=0.4", f"--method={name}", f"--seed={args.seed}",
                   f"--run_dir={run_dir}", "--overwrite", "--verbose=0",
                   "--monitor_every=1000", *(f"--{f}" for f in args.flag)]
        print(" ".join(command), flush=True)
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        method = methods.get(name)
        own = [s for s in ("stage1",) + tuple(method.stage_names)
               if s != "stage1" or name == "ce"]
        seconds = [d for stage in own for d in stage_epoch_seconds(run_dir, stage)]
        rows[name] = (statistics.median(seconds), wall)
    ce_epoch, ce_wall = rows["ce"]
    print("\n| method | s / epoch (median) | × CE | run wall time (s) | × CE |")
    print("|---|---|---|---|---|")
    for name, (epoch, wall) in rows.items():
        print(f"| {ROWS.get(name, name)} | {epoch:.2f} | {epoch / ce_epoch:.2f} | {wall:.0f} | "
              f"{wall / ce_wall:.2f} |")


if __name__ == "__main__":
    main()
