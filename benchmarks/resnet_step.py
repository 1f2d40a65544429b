"""Benchmark: images/s of one classifier train step (forward, backward, SGD).

A plain compiled step (tf.function, XLA off): cross-entropy on the logits,
gradients by GradientTape, SGD with momentum 0.9, on one fixed batch of
random uint8 images, so only the network is timed (no input pipeline, no η
table). Each step is timed on its own after `--warmup` steps that trace and
settle the step, and the median is reported, as in step_overhead.py (shared
CPUs stall at random). The median CPU time of a step (all threads) is printed
too: it hardly moves when another job shares the cores, the wall time does.

    python benchmarks/resnet_step.py --arch resnet32 --batch_size 256 --steps 10
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from idn_tf.models import ARCHITECTURES, build_classifier  # noqa: E402


def train_step_fn(model, optimizer):
    """A compiled SGD step on (images, labels) returning the loss."""
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function(jit_compile=False)
    def step(images, labels):
        with tf.GradientTape() as tape:
            loss = loss_fn(labels, model(images, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        return loss

    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet32", choices=ARCHITECTURES)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (tracing)")
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument("--num_classes", type=int, default=10)
    args = parser.parse_args()

    shape = (args.image_size, args.image_size, 3)
    model = build_classifier(args.arch, shape, args.num_classes, [0.5] * 3, [0.25] * 3, seed=0)
    step = train_step_fn(model, keras.optimizers.SGD(0.05, momentum=0.9))
    rng = np.random.default_rng(0)
    images = tf.constant(rng.integers(0, 256, size=(args.batch_size, *shape), dtype=np.uint8))
    labels = tf.constant(rng.integers(0, args.num_classes, size=args.batch_size))

    for _ in range(args.warmup):
        float(step(images, labels))
    seconds, cpu_seconds = [], []
    for _ in range(args.steps):
        start, cpu_start = time.perf_counter(), time.process_time()
        float(step(images, labels))  # waits for the step to finish
        seconds.append(time.perf_counter() - start)
        cpu_seconds.append(time.process_time() - cpu_start)

    median = statistics.median(seconds)
    print(f"{args.arch}: {model.count_params():,} parameters, batch {args.batch_size}, "
          f"{args.steps} steps: median {median * 1e3:.0f} ms/step = "
          f"{args.batch_size / median:.0f} images/s "
          f"(min {args.batch_size / max(seconds):.0f}, max {args.batch_size / min(seconds):.0f}); "
          f"median CPU time {statistics.median(cpu_seconds):.2f} s/step on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
