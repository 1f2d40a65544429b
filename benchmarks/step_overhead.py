"""Benchmark: throughput of IDNModel.fit (η updates on) against plain Keras fit.

Issue 2 targets: IDNModel images/s ≥ 0.95 × plain `fit` with cross-entropy on
the same network and batch (CPU, batch 256, 32×32×3), and a 10,000,000-entry
η table costing ≤ 5% more per step than a 50,000-entry one.

    python benchmarks/step_overhead.py            # ~3 minutes on 2 CPU cores

Timings on shared CPUs drift (BENCHMARKS.md), so the configurations are timed
interleaved (A B C A B C …), one epoch of `--steps` batches each, after a
warm-up epoch that traces the step. Each step is timed on its own (a callback
takes the clock between batches) and the median step time is reported: whole
epochs timed end to end picked up occasional ~0.5 s stalls outside the step
(rates were bimodal, ~805 or ~990 images/s, for every configuration).
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from idn_tf import callbacks, model  # noqa: E402
from idn_tf.models import build_classifier  # noqa: E402

SHAPE, CLASSES = (32, 32, 3), 10


def classifier():
    return build_classifier("small_cnn", SHAPE, CLASSES, mean=[0.5] * 3, std=[0.25] * 3, seed=0)


def data(num_images, table_size, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "image": rng.integers(0, 256, size=(num_images, *SHAPE), dtype=np.uint8),
        "label": rng.integers(0, CLASSES, size=num_images).astype(np.int64),
        "index": rng.choice(table_size, size=num_images, replace=False).astype(np.int64),
    }


class StepTimer(keras.callbacks.Callback):
    """Wall time of every training batch (from batch begin to batch end)."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        float(logs["loss"])  # waits for the step to finish
        self.seconds.append(time.perf_counter() - self._start)


def plain_run(records, batch_size):
    net = classifier()
    net.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    ds = tf.data.Dataset.from_tensor_slices((records["image"], records["label"]))
    ds = ds.batch(batch_size).cache().prefetch(tf.data.AUTOTUNE)
    return lambda timer: net.fit(ds, epochs=1, verbose=0, callbacks=[timer])


def idn_run(records, batch_size, table_size, weight_decay):
    idn = model.IDNModel(classifier(), psi=np.full(table_size, 0.5, np.float32),
                         eta_lr=0.5, weight_decay=weight_decay)
    idn.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
    ds = tf.data.Dataset.from_tensor_slices(records).batch(batch_size).cache().prefetch(tf.data.AUTOTUNE)
    always_on = [callbacks.PGACallback(callbacks.pga_schedule(1, 1))]
    return lambda timer: idn.fit(ds, epochs=1, verbose=0, callbacks=always_on + [timer])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=12, help="batches per timed epoch")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    n = args.batch_size * args.steps
    small, large = 50_000, 10_000_000
    runs = {
        "plain fit, CE": plain_run(data(n, small), args.batch_size),
        "IDNModel, N=50,000": idn_run(data(n, small), args.batch_size, small, 0.0),
        "IDNModel, N=10,000,000": idn_run(data(n, large), args.batch_size, large, 0.0),
        "IDNModel, N=50,000, wd=1e-4": idn_run(data(n, small), args.batch_size, small, 1e-4),
    }
    for fit in runs.values():
        fit(StepTimer())  # warm-up: tracing and the first pass over the data
    timers = {name: StepTimer() for name in runs}
    epochs = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, fit in runs.items():
            start = time.perf_counter()
            fit(timers[name])
            epochs[name].append(time.perf_counter() - start)
    b = args.batch_size
    rate = {name: b / statistics.median(t.seconds) for name, t in timers.items()}
    print(f"batch {b}, {args.steps} steps per epoch, {args.rounds} interleaved rounds, "
          f"{os.cpu_count()} CPUs, TF {tf.__version__}, Keras {keras.__version__}")
    print(f"{'configuration':<30} {'images/s (median step)':>22} {'p10':>6} {'p90':>6}"
          f" {'whole epochs: median':>21} {'min':>6} {'max':>6}")
    for name, t in timers.items():
        p10, p90 = np.percentile(t.seconds, [10, 90])
        e = epochs[name]
        print(f"{name:<30} {rate[name]:>22.0f} {b / p90:>6.0f} {b / p10:>6.0f}"
              f" {n / statistics.median(e):>21.0f} {n / max(e):>6.0f} {n / min(e):>6.0f}")
    base = rate["plain fit, CE"]
    print(f"\nIDNModel / plain fit throughput (N=50,000):      {rate['IDNModel, N=50,000'] / base:.3f}  (target >= 0.95)")
    step_cost = rate["IDNModel, N=50,000"] / rate["IDNModel, N=10,000,000"] - 1
    print(f"extra step cost, N=10,000,000 vs N=50,000:        {100 * step_cost:+.1f}%  (target <= +5%)")
    print(f"IDNModel with coupled L2 / plain fit throughput: {rate['IDNModel, N=50,000, wd=1e-4'] / base:.3f}")


if __name__ == "__main__":
    main()
