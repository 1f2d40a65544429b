"""Benchmark: training images/s on the devices TensorFlow sees, and what a paper run costs.

One command for a GPU machine (issue 20): images/s of whole training epochs (input
pipeline included, data in memory) of plain cross-entropy `fit`
(`model.CrossEntropyModel`, stage 1) and of the method's `fit` (`model.IDNModel`, η
updated every step, stage 2), each × float32 / mixed precision × XLA off / on; the input
pipelines alone and whether they keep up with the fastest step; the projected wall time
of the paper's run from the measured rates.

    python benchmarks/gpu_throughput.py                   # ResNet-32, batch 256, 32×32
    python benchmarks/gpu_throughput.py --arch resnet50   # ResNet-50, batch 32, 224×224
    python benchmarks/gpu_throughput.py --quick           # CPU smoke test, well under a minute

Each configuration is a fresh model built under its precision policy (mixed precision:
mixed_float16 on a GPU; on a CPU both mixed_bfloat16, the CPU's, and mixed_float16) and
compiled with `jit_compile=` on or off. A configuration that fails to build or trace is
reported as "n/a (why)" instead of stopping the benchmark. Every configuration trains
1 + `--epochs` epochs in one `fit`, as a run does (one dataset iterator across epochs);
the first epoch traces and compiles the step and is not timed, and the median of the
others is reported as images/s. The configurations run one after the other (a
configuration's epochs cannot be interleaved with another's within one `fit`), so on a
shared machine compare them with care (BENCHMARKS.md's drift). An epoch is
`--num_images` random uint8 images with random labels through the project's in-memory
training pipeline (`data.pipeline.train_dataset`: the CIFAR recipe's pad-4 crop + flip
for ResNet-32, no augmentation at 224² for ResNet-50, whose real input is the file
pipeline measured apart).

The pipelines alone: the CIFAR pipeline as `benchmarks/cifar_pipeline.py` times it, and
the file (Clothing1M / class folder) streaming pipeline as
`benchmarks/clothing1m_pipeline.py` times it, on JPEGs it writes to a temporary folder.
Each is compared with the fastest step measured for the network it feeds, and the file
pipeline with `--gpu_images_per_second`, the rate a GPU would ask of it (an assumption,
by default NVIDIA's published ResNet-50 mixed-precision training rate on one V100:
BENCHMARKS.md).

Projected wall time: stage 1 (CE) at the CE rate plus stage 2 at the IDN rate, each
`epochs` epochs of the recipe's images (`PAPER_RUNS`); monitoring and ψ prediction
passes are left out.
"""

import argparse
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from idn_tf import callbacks, model, precision  # noqa: E402
from idn_tf.data import pipeline  # noqa: E402
from idn_tf.models import build_classifier  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cifar_pipeline  # noqa: E402
import clothing1m_pipeline  # noqa: E402

# The paper's settings per network (idn_tf/config.py RECIPES): batch, image side, classes.
ARCHS = {"resnet32": dict(batch_size=256, image_size=32, num_classes=100,
                          augment="pad_crop_flip"),
         "resnet50": dict(batch_size=32, image_size=224, num_classes=14, augment="none")}
# --quick, the suite's smoke test on CPU: the digits network (ResNet-32's trace alone
# takes ~20 s on 2 CPUs), 2 steps of 16×16 images, float32 and the CPU's mixed
# precision, XLA off (its compiles take ~20 s each; `--quick --xla=off,on` adds them).
QUICK = dict(arch="small_cnn", batch_size=16, image_size=16, num_images=32,
             precisions=("float32", "mixed_bfloat16"), xla="off", pipeline_images=64)
FITS = ("CE", "IDN")
# The paper's runs (docs/method.md §3, docs/reproducing.md "Running times"): 2 stages ×
# epochs × images per epoch. Clothing1M's epoch with --oversample=auto is ~1.5-2M
# images (every class copied up to the largest); 1.75M is the middle of that range.
PAPER_RUNS = {"resnet32": dict(name="CIFAR (2 × 160 epochs × 50,000 images)",
                               epochs=160, images_per_epoch=50_000),
              "resnet50": dict(name="Clothing1M (2 × 15 epochs × ~1.75M images, oversampled)",
                               epochs=15, images_per_epoch=1_750_000)}
# NVIDIA DeepLearningExamples, ResNet-50 v1.5 training, one V100 16 GB, mixed precision
# (BENCHMARKS.md cites it): what a GPU would ask of the file pipeline.
GPU_RESNET50_RATE = 900.0


# ---------------------------------------------------------------------------------------
# Pure helpers


def projected_seconds(images_per_epoch, epochs, stage_rates):
    """Wall seconds of a run whose stages each train `epochs` epochs of `images_per_epoch`
    images, stage s at stage_rates[s] images/s: Σ_s epochs · images_per_epoch / rate_s."""
    return sum(epochs * images_per_epoch / rate for rate in stage_rates)


def headroom(pipeline_rate, step_rate):
    """How many times the step's images/s the pipeline delivers (>= 1: it keeps up)."""
    return pipeline_rate / step_rate


def format_duration(seconds):
    """Seconds as a short human figure: '42 s', '12.5 min', '3.2 h', '2.1 days'."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def format_rate(images_per_second):
    """images/s with 3 significant figures at most, no exponent: '11388', '47.3', '1.52'."""
    if images_per_second >= 100:
        return f"{images_per_second:.0f}"
    return f"{images_per_second:.3g}"


def precisions_for(device_kind):
    """The precision policies measured on a device kind ("GPU" or "CPU"), float32 first."""
    if device_kind == "GPU":
        return ("float32", "mixed_float16")
    return ("float32", "mixed_bfloat16", "mixed_float16")


def na(error):
    """A table cell for a configuration that failed: 'n/a (first line of the error)'."""
    lines = str(error).strip().splitlines() or [""]
    why = f"{type(error).__name__}: {lines[0]}"
    return f"n/a ({why[:100]})"


# ---------------------------------------------------------------------------------------
# Measuring


class Configuration:
    """One fit (CE or IDN) × precision × XLA: a compiled model and its epochs' times."""

    def __init__(self, fit, precision, xla, settings, num_images):
        self.fit, self.precision, self.xla = fit, precision, xla
        self.settings, self.num_images = settings, num_images
        self.seconds, self.error = [], None

    def build(self, arch):
        """The model under its precision policy, compiled with or without XLA."""
        side = self.settings["image_size"]
        with precision.policy(self.precision):
            classifier = build_classifier(arch, (side, side, 3), self.settings["num_classes"],
                                          [0.5] * 3, [0.25] * 3, seed=0)
            if self.fit == "CE":
                self.model = model.CrossEntropyModel(classifier, weight_decay=1e-4)
                self.callbacks = []
            else:
                self.model = model.IDNModel(
                    classifier, psi=np.full(self.num_images, 0.5, np.float32), eta_lr=0.5,
                    weight_decay=1e-4)
                self.callbacks = [callbacks.PGACallback(callbacks.pga_schedule(1, 1))]
            # As a run's optimizer (stages.py): loss-scaled under mixed_float16.
            optimizer = precision.wrap(keras.optimizers.SGD(0.05, momentum=0.9), self.precision)
            self.model.compile(optimizer=optimizer, jit_compile=self.xla)

    def train(self, images, labels, epochs):
        """Trains `epochs` epochs of (images, labels) in one `fit`, as a run does; keeps the
        wall seconds of every epoch after the first (which traces and compiles the step)."""
        batch = self.settings["batch_size"]
        data = pipeline.train_dataset(images, labels, None, batch, seed=0,
                                      augment=self.settings["augment"], epochs=epochs)
        timer = EpochTimer()
        self.model.fit(data, epochs=epochs, steps_per_epoch=math.ceil(len(images) / batch),
                       verbose=0, callbacks=self.callbacks + [timer])
        self.seconds = timer.seconds[1:]

    def rate(self):
        return self.num_images / statistics.median(self.seconds)


class EpochTimer(keras.callbacks.Callback):
    """Wall time of every epoch, from its start to its logs (which wait for its last step)."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        float(logs["loss"])
        self.seconds.append(time.perf_counter() - self._start)


def measure_fits(arch, settings, num_images, precisions, xla_modes, epochs):
    """Every configuration's epoch times (or its failure): {(fit, precision, xla): Configuration}.

    The configurations run one after the other, each `epochs` + 1 epochs in one `fit`.
    """
    rng = np.random.default_rng(0)
    side = settings["image_size"]
    images = rng.integers(0, 256, size=(num_images, side, side, 3), dtype=np.uint8)
    labels = rng.integers(0, settings["num_classes"], size=num_images)
    runs = {}
    for fit in FITS:
        for policy in precisions:
            for xla in xla_modes:
                run = runs[fit, policy, xla] = Configuration(fit, policy, xla, settings,
                                                             num_images)
                start = time.perf_counter()
                try:
                    run.build(arch)
                    run.train(images, labels, epochs + 1)
                except Exception as error:  # reported in the table, the others go on
                    run.error = na(error)
                print(f"{describe((fit, policy, xla))}: {cell(run)} images/s "
                      f"({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
    return runs


def file_pipeline_rate(num_images, batch_size, epochs):
    """images/s of the streaming file pipeline (clothing1m_pipeline's JPEGs and epoch)."""
    with tempfile.TemporaryDirectory() as folder:
        paths = clothing1m_pipeline.write_images(folder, num_images)
        labels = np.arange(num_images) % 14
        walls = [clothing1m_pipeline.tf_epoch(paths, labels, batch_size, epoch, False)[0]
                 for epoch in range(epochs + 1)]  # epoch 0 warms up (page cache, tracing)
    return num_images / statistics.median(walls[1:])


def cifar_pipeline_rate(num_images, batch_size, epochs):
    """images/s of the CIFAR training pipeline, as benchmarks/cifar_pipeline.py times it."""
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(num_images, *cifar_pipeline.SHAPE), dtype=np.uint8)
    labels = rng.integers(0, cifar_pipeline.CLASSES, size=num_images)
    return cifar_pipeline.pipeline_rate(images, labels, batch_size, epochs)


# ---------------------------------------------------------------------------------------
# Reporting


def machine_line():
    devices = tf.config.list_logical_devices()
    kinds = ", ".join(f"{d.device_type}:{d.name.rsplit(':', 1)[-1]}" for d in devices)
    gpus = [tf.config.experimental.get_device_details(d).get("device_name", "GPU")
            for d in tf.config.list_physical_devices("GPU")]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, cwd=os.path.dirname(os.path.abspath(__file__)),
                                check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return (f"commit {commit}; {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} CPUs; devices {kinds}"
            + (f" ({', '.join(gpus)})" if gpus else "")
            + f"; TF {tf.__version__}, Keras {keras.__version__}")


def cell(run):
    return run.error if run.error is not None else format_rate(run.rate())


def print_fit_table(runs, precisions, xla_modes):
    header = ["fit", "precision"] + [f"XLA {'on' if x else 'off'} (images/s)" for x in xla_modes]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for fit in FITS:
        for policy in precisions:
            cells = [cell(runs[fit, policy, x]) for x in xla_modes]
            print(f"| {fit} | {policy} | " + " | ".join(cells) + " |")


def fastest(runs, fit=None):
    """(images/s, configuration) of the fastest measured run (of `fit`, if given)."""
    measured = [(r.rate(), key) for key, r in runs.items()
                if r.error is None and r.seconds and (fit is None or key[0] == fit)]
    return max(measured) if measured else (float("nan"), None)


def describe(key):
    fit, precision, xla = key
    return f"{fit}, {precision}, XLA {'on' if xla else 'off'}"


def print_pipeline_table(runs, arch, cifar_rate, file_rate, gpu_rate):
    """Each pipeline against the fastest step of the network it feeds, if measured, and the
    file pipeline against `gpu_rate` (a GPU's ResNet-50 images/s)."""
    best_rate, best_key = fastest(runs)
    print()
    print("| pipeline alone | images/s | feeds | fastest step measured (images/s) | "
          "pipeline / step | keeps up |")
    print("|---|---|---|---|---|---|")
    rows = [("CIFAR (in memory, pad 4 + crop + flip, batch 256)", cifar_rate, "resnet32"),
            ("file (JPEG decode, resize 256, crop 224 + flip, batch 32)", file_rate, "resnet50")]
    for name, rate, feeds in rows:
        if feeds == arch and best_key is not None:
            ratio = headroom(rate, best_rate)
            print(f"| {name} | {format_rate(rate)} | {feeds} | {format_rate(best_rate)} "
                  f"({describe(best_key)}) | {ratio:.1f}× | {'yes' if ratio >= 1 else 'no'} |")
        else:
            print(f"| {name} | {format_rate(rate)} | {feeds} | – (run --arch {feeds}) "
                  "| – | – |")
    gpu_ratio = headroom(file_rate, gpu_rate)
    print(f"file pipeline / a GPU's ResNet-50 rate ({gpu_rate:.0f} images/s, assumed): "
          f"{gpu_ratio:.2f}× on {os.cpu_count()} CPUs: "
          f"{'keeps up' if gpu_ratio >= 1 else 'the bottleneck'}")


def print_projection(runs, arch):
    """The paper run's wall time at float32 / XLA off and at each fit's fastest rate."""
    paper = PAPER_RUNS[arch]
    print()
    print(f"| projected run: {paper['name']} | stage 1 (CE) images/s | stage 2 (IDN) images/s "
          "| wall time |")
    print("|---|---|---|---|")
    choices = [("float32, XLA off", lambda f: runs.get((f, "float32", False))),
               ("fastest measured", lambda f: runs.get(fastest(runs, f)[1]))]
    for label, pick in choices:
        picked = [pick(f) for f in FITS]
        if any(r is None or r.error is not None for r in picked):
            print(f"| {label} | – | – | n/a (not measured) |")
            continue
        rates = [r.rate() for r in picked]
        seconds = projected_seconds(paper["images_per_epoch"], paper["epochs"], rates)
        print(f"| {label} | {format_rate(rates[0])} | {format_rate(rates[1])} | "
              f"{format_duration(seconds)} |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet32", choices=tuple(ARCHS))
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes (few steps, small images): a smoke test on CPU")
    parser.add_argument("--num_images", type=int, help="images per timed epoch (default: "
                        "40 batches on a GPU, 4 on a CPU)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="timed epochs per configuration and pipeline (default 3; --quick 1)")
    parser.add_argument("--xla", choices=("off", "on", "off,on"),
                        help="XLA modes to measure (default off,on; --quick: off)")
    parser.add_argument("--precisions", help="comma-separated policies (default: float32 and "
                        "mixed_float16 on a GPU; also mixed_bfloat16 on a CPU)")
    parser.add_argument("--pipeline_images", type=int, default=None,
                        help="images per timed pipeline epoch (CIFAR pipeline: 20× this)")
    parser.add_argument("--gpu_images_per_second", type=float, default=GPU_RESNET50_RATE,
                        help="ResNet-50 rate a GPU asks of the file pipeline (assumption)")
    args = parser.parse_args(argv)

    on_gpu = bool(tf.config.list_physical_devices("GPU"))
    network = QUICK["arch"] if args.quick else args.arch
    settings = dict(ARCHS[args.arch])
    batches = 40 if on_gpu else 4
    num_images = settings["batch_size"] * batches
    epochs, pipeline_images = 3, 500
    if args.quick:
        settings.update(batch_size=QUICK["batch_size"], image_size=QUICK["image_size"])
        num_images, epochs, pipeline_images = QUICK["num_images"], 1, QUICK["pipeline_images"]
    num_images = args.num_images or num_images
    epochs = args.epochs or epochs
    pipeline_images = args.pipeline_images or pipeline_images
    precisions = precisions_for("GPU" if on_gpu else "CPU")
    if args.quick:
        precisions = QUICK["precisions"]
    if args.precisions:
        precisions = tuple(args.precisions.split(","))
    xla = args.xla or (QUICK["xla"] if args.quick else "off,on")
    xla_modes = tuple({"off": False, "on": True}[m] for m in xla.split(","))

    start = time.perf_counter()
    runs = measure_fits(network, settings, num_images, precisions, xla_modes, epochs)
    cifar_rate = cifar_pipeline_rate(20 * pipeline_images, ARCHS["resnet32"]["batch_size"],
                                     epochs)
    file_rate = file_pipeline_rate(pipeline_images, ARCHS["resnet50"]["batch_size"], epochs)

    side = settings["image_size"]
    print(machine_line())
    print(f"{network}, batch {settings['batch_size']}, {side}×{side}×3 uint8, epochs of "
          f"{num_images} images, median of {epochs} timed epochs after 1 untimed"
          + (f" (--quick: a smoke test, {network} standing in for {args.arch})"
             if args.quick else ""))
    if not on_gpu:
        print("CPU: mixed_bfloat16 is the CPU's mixed precision (mixed_float16 is a GPU "
              "policy, run here for comparison)")
    print()
    print_fit_table(runs, precisions, xla_modes)

    print_pipeline_table(runs, args.arch, cifar_rate, file_rate, args.gpu_images_per_second)
    print_projection(runs, args.arch)
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
