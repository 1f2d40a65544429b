"""Benchmark: CE vs the method on digits, 5 seeds × three kinds of noise.

Issue 2 targets (means over seeds): method ≥ CE + 1.0 point on k-means IDN,
≥ CE + 5 points on CCN r = 0.4, ≥ CE − 0.5 on MLP-relabel IDN.

    python benchmarks/digits_accuracy.py                 # ~20 minutes on 2 CPU cores
    python benchmarks/digits_accuracy.py --seeds=0 --noises=ccn --flag=eta_lr=0.7

Every (noise, seed) trains stage 1 once and then stage 2 once per η
projection: the paper's [0, 1] (eta_min=0) and [1e-3, 1] (docs/method.md §7.1), so the
columns compare methods on identical noisy labels and identical ψ.
"""

import argparse
import dataclasses
import json
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from idn_tf import config as config_lib, report, stages  # noqa: E402
from idn_tf.data import noise, sources, views  # noqa: E402
from idn_tf.methods import idn as idn_method  # noqa: E402

NOISES = {
    "kmeans": dict(noise="kmeans"),
    "mlp": dict(noise="mlp"),
    "ccn": dict(noise="ccn", noise_rate=0.4),
}
ETA_MINS = (0.0, 1e-3)


def one_seed(dataset, base, seed, eta_mins=ETA_MINS):
    """CE and method accuracies (and label correction) for one noise recipe and seed."""
    # A fresh run folder per cell: stages keep a backup of their last epoch there until the
    # caller removes it, and a leftover backup would be resumed by the next cell.
    cfg = dataclasses.replace(base, seed=seed, verbose=0, monitor_every=10**6,
                              run_dir=tempfile.mkdtemp(prefix="digits-accuracy-"))
    noisy = noise.make_noisy_labels(dataset, cfg.noise, cfg.noise_rate, seed,
                                    **cfg.noise_options())
    clean = dataset.train.clean_labels
    data = views.from_config(cfg, dataset)
    classifier, ce = stages.train_cross_entropy(cfg, data, noisy.labels)
    psi = stages.estimate_psi(classifier, dataset.train.images, noisy.labels, cfg.batch_size)
    row = {"noise_rate_actual": noise.noise_rate_actual(noisy.labels, clean), "ce": ce.test_accuracy}
    for eta_min in eta_mins:
        run_cfg = dataclasses.replace(cfg, eta_min=eta_min,
                                      run_dir=tempfile.mkdtemp(prefix="digits-accuracy-"))
        idn, result = idn_method.fit_model(run_cfg, data, noisy.labels, psi)
        eta = idn.eta.numpy()
        q = stages.posterior_table(idn.classifier, dataset.train.images, noisy.labels, eta, psi, cfg.batch_size,
                                   cfg.eta_numerics)
        row[f"method_eta_min={eta_min:g}"] = result.test_accuracy
        row[f"corrected_eta_min={eta_min:g}"] = report.label_correction(q, noisy.labels, clean)["wrong_labels_corrected"]
    return row


def mean_std(values):
    values = [100 * v for v in values]
    return f"{statistics.mean(values):6.2f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:4.2f}"


def parse_overrides(pairs):
    """--flag=name=value pairs -> Config field overrides, typed like the field's default."""
    defaults = config_lib.Config()
    out = {}
    for pair in pairs:
        name, value = pair.split("=", 1)
        default = getattr(defaults, name)
        out[name] = tuple(int(v) for v in value.split(",")) if isinstance(default, tuple) else type(default)(value)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--noises", default=",".join(NOISES))
    parser.add_argument("--eta_mins", default=",".join(f"{m:g}" for m in ETA_MINS),
                        help="η projection lower ends to compare")
    parser.add_argument("--flag", action="append", default=[], help="Config override name=value")
    parser.add_argument("--json", default="", help="also write the per-seed rows here")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    eta_mins = [float(m) for m in args.eta_mins.split(",")]
    overrides = parse_overrides(args.flag)
    dataset = sources.load_digits()
    rows, start = {}, time.time()
    for name in args.noises.split(","):
        base = config_lib.Config(run_dir="unused", **{**NOISES[name], **overrides})
        rows[name] = []
        for seed in seeds:
            rows[name].append(one_seed(dataset, base, seed, eta_mins))
            print(f"{name} seed {seed}: {json.dumps(rows[name][-1])}", flush=True)
    print(f"\ndigits, seeds {seeds}, overrides {overrides or 'none'}, {time.time() - start:.0f} s")
    columns = ["noise_rate_actual", "ce"] + [f"method_eta_min={m:g}" for m in eta_mins] + \
              [f"corrected_eta_min={m:g}" for m in eta_mins]
    print("| noise | " + " | ".join(columns) + " | " +
          " | ".join(f"method − CE (η_min={m:g})" for m in eta_mins) + " |")
    print("|---" * (len(columns) + 3) + "|")
    for name, rs in rows.items():
        cells = [mean_std([r[c] for r in rs]) for c in columns]
        gains = [mean_std([r[f"method_eta_min={m:g}"] - r["ce"] for r in rs]) for m in eta_mins]
        print(f"| {name} | " + " | ".join(cells + gains) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"overrides": overrides, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
