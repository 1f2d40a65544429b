"""Benchmark: IDNModel training throughput under MirroredStrategy on 2 logical CPUs vs one device.

For the record (issue 5): on a CPU-only machine the two "replicas" are logical devices on the
same cores, so this measures the cost of the replication machinery (per-replica steps, the
gradient all-reduce, the all_gather of η ids and values), not a speed-up. Both runs use the
same model (ResNet-20 on random CIFAR-sized images, K = 100), global batch and η updates on;
each step is timed on its own after a warm-up and the median is reported (StepTimer, as in
step_overhead.py). The two configurations alternate, A B A B.

    python benchmarks/mirrored_step.py --batch_size 128 --steps 12 --rounds 2
"""

import argparse
import os
import statistics
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

_CPU = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(_CPU, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from idn_tf import callbacks, model  # noqa: E402
from idn_tf.models import build_classifier  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from step_overhead import StepTimer  # noqa: E402

SHAPE, CLASSES = (32, 32, 3), 100


def images_per_second(strategy, images, labels, batch_size, steps):
    n = len(images)
    with strategy.scope():
        classifier = build_classifier("resnet20", SHAPE, CLASSES, [0.5] * 3, [0.25] * 3, seed=0)
        idn = model.IDNModel(classifier, psi=np.full(n, 0.5, np.float32), eta_lr=0.5,
                             weight_decay=1e-4)
        idn.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    data = tf.data.Dataset.from_tensor_slices(
        {"image": images, "label": labels, "index": np.arange(n)}).batch(batch_size).cache()
    always_on = callbacks.PGACallback(callbacks.pga_schedule(1, 1))
    idn.fit(data, epochs=1, verbose=0, callbacks=[always_on])  # warm-up: tracing
    timer = StepTimer()
    idn.fit(data, epochs=1, verbose=0, callbacks=[always_on, timer])
    return batch_size / statistics.median(timer.seconds[1:])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    n = args.batch_size * args.steps
    images = rng.integers(0, 256, size=(n,) + SHAPE).astype(np.uint8)
    labels = rng.integers(0, CLASSES, size=n)
    strategies = {
        "one device": tf.distribute.get_strategy,
        "mirrored, 2 logical CPUs": lambda: tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]),
    }
    rates = {name: [] for name in strategies}
    for r in range(args.rounds):
        for name, make in strategies.items():
            rates[name].append(images_per_second(make(), images, labels, args.batch_size,
                                                 args.steps))
            print(f"round {r + 1}: {name}: {rates[name][-1]:.0f} images/s", flush=True)
    one, two = (statistics.median(v) for v in rates.values())
    print(f"\nmedian images/s: one device {one:.0f}, mirrored {two:.0f}; ratio {two / one:.2f}")


if __name__ == "__main__":
    main()
