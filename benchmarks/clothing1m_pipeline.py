"""Benchmark: the streaming Clothing1M training pipeline against a plain PIL loop.

Issue "Clothing1M" target: `streaming.train_dataset` (read, decode, resize 256 x 256,
random 224 crop, random flip, batch 32; parallel map) delivers >= 1.5x the images/s of a
single-process Python loop doing the same work with PIL (open, convert RGB, bilinear
resize to 256 x 256, random 224 crop, random flip, to numpy, stack batches of 32), in
the same run on the same files.

    python benchmarks/clothing1m_pipeline.py      # ~1-2 minutes on 2 CPU cores

`--num_images` JPEG files of Clothing1M-like sizes (250-450 x 300-500 pixels, smooth
colour fields plus noise, quality 90) are written to a temporary folder. The
configurations are timed over whole epochs, interleaved round by round after a warm-up
round; medians are reported. The files sit in the OS page cache after the warm-up, so
this measures decoding and augmentation, not the disk.

Each epoch also records the process's CPU time: "cores" is CPU seconds per wall second
(2 when tf.data keeps both cores busy) and "CPU ms/image" the work per image whatever
the parallelism. These VMs sometimes give a process only one core's worth of time for
seconds at a stretch (cores ~1.1 for every configuration at once; BENCHMARKS.md's drift);
such epochs halve tf.data's rate but not the single-threaded PIL loop's, hence the
interleaving, the medians and the cores column.
"""

import argparse
import os
import random
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

from idn_tf.data import streaming  # noqa: E402

RESIZE, CROP = 256, 224


def write_images(folder, count, seed=0):
    """`count` JPEGs of varied Clothing1M-like sizes; returns their paths."""
    rng = np.random.default_rng(seed)
    paths = []
    for k in range(count):
        width, height = int(rng.integers(250, 451)), int(rng.integers(300, 501))
        coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
        smooth = np.asarray(coarse.resize((width, height), Image.BICUBIC), np.int16)
        pixels = np.clip(smooth + rng.integers(-12, 13, smooth.shape), 0, 255).astype(np.uint8)
        path = os.path.join(folder, f"{k:05d}.jpg")
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


def timed(epoch_fn):
    """Runs epoch_fn(); returns (wall seconds, process CPU seconds)."""
    wall, cpu = time.perf_counter(), time.process_time()
    epoch_fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def tf_epoch(paths, labels, batch_size, epoch, antialias):
    data = streaming.train_dataset(paths, labels, None, None, batch_size, seed=0,
                                   epochs=epoch + 1, initial_epoch=epoch, antialias=antialias)

    def run():
        for batch in data:
            batch["image"].numpy()
    return timed(run)


def pil_epoch(paths, labels, batch_size, epoch):
    rng = random.Random(epoch)
    order = list(range(len(paths)))
    rng.shuffle(order)

    def run():
        for first in range(0, len(order), batch_size):
            images = []
            for i in order[first:first + batch_size]:
                with Image.open(paths[i]) as image:
                    image = image.convert("RGB").resize((RESIZE, RESIZE), Image.BILINEAR)
                top, left = rng.randint(0, RESIZE - CROP), rng.randint(0, RESIZE - CROP)
                image = image.crop((left, top, left + CROP, top + CROP))
                if rng.random() < 0.5:
                    image = image.transpose(Image.FLIP_LEFT_RIGHT)
                images.append(np.asarray(image))
            np.stack(images), labels[order[first:first + batch_size]]
    return timed(run)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num_images", type=int, default=2000)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds after a warm-up")
    args = parser.parse_args()
    batch = args.batch_size
    configurations = {
        "tf.data, bilinear (default)": lambda p, y, e: tf_epoch(p, y, batch, e, False),
        "tf.data, bilinear antialias=True": lambda p, y, e: tf_epoch(p, y, batch, e, True),
        "PIL loop, one process": lambda p, y, e: pil_epoch(p, y, batch, e),
    }
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as folder:
        paths = write_images(folder, args.num_images)
        labels = np.arange(args.num_images) % 14
        times = {name: [] for name in configurations}
        for round_ in range(args.rounds + 1):  # round 0 warms up (page cache, tracing)
            for name, run in configurations.items():
                wall_cpu = run(paths, labels, round_)
                if round_:
                    times[name].append(wall_cpu)
    n = args.num_images
    print(f"{os.cpu_count()} CPUs, TF {tf.__version__}, {n} JPEGs, batch {args.batch_size}, "
          f"{args.rounds} rounds; load average before {load_before[0]:.2f}, after "
          f"{os.getloadavg()[0]:.2f}")
    print(f"{'':34s} {'images/s':>8s} {'CPU ms/image':>12s}  rounds: images/s (cores)")
    medians = {}
    for name, rounds in times.items():
        medians[name] = statistics.median(n / wall for wall, _ in rounds)
        cpu_ms = statistics.median(1e3 * cpu / n for _, cpu in rounds)
        detail = ", ".join(f"{n / wall:.0f} ({cpu / wall:.1f})" for wall, cpu in rounds)
        print(f"{name:34s} {medians[name]:8.0f} {cpu_ms:12.2f}  {detail}")
    pil = medians["PIL loop, one process"]
    print(f"tf.data / PIL: {medians['tf.data, bilinear (default)'] / pil:.2f}x (target >= 1.5x); "
          f"with antialias: {medians['tf.data, bilinear antialias=True'] / pil:.2f}x")


if __name__ == "__main__":
    main()
