"""Benchmark: the CIFAR input pipeline against the ResNet-32 training step it feeds.

Issue 3 target: the pipeline alone (shuffle, pad + random crop + flip with Keras
layers, batch, prefetch) delivers >= 5x the images/s of the training step
(IDNModel with ResNet-32, η updates on, coupled L2), so it is never the
bottleneck. Random uint8 images of CIFAR's size stand in for CIFAR.

    python benchmarks/cifar_pipeline.py        # ~2 minutes on 2 CPU cores

The pipeline is timed over whole epochs of `--num_images` (median of
`--epochs` after one warm-up epoch); the step by a callback around each batch
(median), as in step_overhead.py.
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from idn_tf import callbacks, model  # noqa: E402
from idn_tf.data import pipeline  # noqa: E402
from idn_tf.models import build_classifier  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from step_overhead import StepTimer  # noqa: E402

SHAPE, CLASSES = (32, 32, 3), 100


def pipeline_rate(images, labels, batch_size, epochs):
    seconds = []
    for epoch in range(epochs + 1):  # the first epoch warms up
        data = pipeline.train_dataset(images, labels, labels, batch_size, seed=0,
                                      augment="pad_crop_flip", padding=4,
                                      epochs=epoch + 1, initial_epoch=epoch)
        start = time.perf_counter()
        for batch in data:
            batch["image"].numpy()
        seconds.append(time.perf_counter() - start)
    return len(images) / statistics.median(seconds[1:])


def step_rate(images, labels, batch_size, steps, arch):
    n = batch_size * steps
    classifier = build_classifier(arch, SHAPE, CLASSES, [0.5] * 3, [1.0] * 3, seed=0)
    idn = model.IDNModel(classifier, psi=np.full(len(images), 0.5, np.float32), eta_lr=0.5,
                         weight_decay=1e-4)
    idn.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    records = pipeline.records(images[:n], labels[:n])
    data = tf.data.Dataset.from_tensor_slices(records).batch(batch_size).cache()
    always_on = callbacks.PGACallback(callbacks.pga_schedule(1, 1))
    idn.fit(data, epochs=1, verbose=0, callbacks=[always_on])  # warm-up: tracing
    timer = StepTimer()
    idn.fit(data, epochs=2, verbose=0, callbacks=[always_on, timer])
    return batch_size / statistics.median(timer.seconds)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num_images", type=int, default=50_000)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=3, help="timed pipeline epochs")
    parser.add_argument("--steps", type=int, default=8, help="training steps per timed epoch")
    parser.add_argument("--arch", default="resnet32")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(args.num_images, *SHAPE), dtype=np.uint8)
    labels = rng.integers(0, CLASSES, size=args.num_images)
    feed = pipeline_rate(images, labels, args.batch_size, args.epochs)
    train = step_rate(images, labels, args.batch_size, args.steps, args.arch)
    print(f"{os.cpu_count()} CPUs, TF {tf.__version__}, Keras {keras.__version__}, "
          f"batch {args.batch_size}, {args.num_images} images of {SHAPE}")
    print(f"input pipeline (shuffle, pad 4 + crop + flip, batch): {feed:8.0f} images/s")
    print(f"{args.arch} IDNModel training step (η on, L2):         {train:8.0f} images/s")
    print(f"pipeline / step: {feed / train:.1f}x (target >= 5x)")


if __name__ == "__main__":
    main()
