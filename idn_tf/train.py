"""python -m idn_tf.train: the method, or a baseline, end to end (README has the flags).

`main` reads the flags once into a `Config`; `run(config)` follows the
paper's Algorithm 1 top-down: data → noise → stage 1 (CE, ψ) → stage 2
(IDNModel) → report. With --method set to a baseline, the baseline's stage
takes stage 2's place (and stage 1 runs only if it needs it). The training
steps import TensorFlow inside their functions, so that bad flags or data fail
before TensorFlow starts.
"""

import hashlib
import json
import os
import shutil
import sys
import time

import numpy as np
from absl import app, flags, logging

from idn_tf import artifacts, audit, distribution, flagdefs, plots, pretrained, report
from idn_tf.config import ConfigError, check_data_fits
from idn_tf.data import noise, sources

# Clothing1M's --subset_fraction draws its subset with this seed, not --seed: runs that
# differ in seed train on the same examples.
SUBSET_SEED = 0

# Fine-tuning (row #10) continues a finished run in its folder: changing only these flags
# keeps stages 1 and 2 and redoes the fine-tuning, the report and the export.
FINETUNE_FIELDS = ("finetune_clean_epochs", "finetune_lr")
FINETUNE_RESULTS = ("finetune.json", "finetuned.weights.h5", "results.json", "backup/finetune",
                    "tb/finetune")

# Errors reported as one line (exit 2); FloatingPointError is a diverged loss.
USER_ERRORS = (ConfigError, sources.DataError, artifacts.RunDirError, FloatingPointError)

# TensorFlow is imported only once flags and data have been checked: its
# start-up notices go to stderr, and a user error should read as one line.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def run(config, data=None):
    """Runs the method as `config` says; returns the results dict (also in results.json).

    `data`: the data view, if the caller loaded it already (`idn_tf.compare` runs many
    configurations on the same data); else loaded here.
    Under --strategy=multi_worker every worker runs this; only the chief writes.
    """
    start = time.time()
    distribution.check(config.strategy)
    if config.strategy == "multi_worker":  # must exist before TensorFlow runs anything else
        distribution.get_strategy(config.strategy)
    fetch_backbone_weights(config)
    if data is None:
        data = load_data(config)
    given_transition = load_transition_matrix(config, data.num_classes)
    check_clean_labels_known(config, data)
    if _is_chief(config):
        check_export_dir(config)
        flags_dict = {k: v for k, v in config.to_dict().items() if k not in ("dry_run", "overwrite")}
        artifacts.prepare_run_dir(config.run_dir, config.semantic_dict(), flags_dict,
                                  config.overwrite, later_stage_fields=FINETUNE_FIELDS,
                                  later_stage_paths=FINETUNE_RESULTS)
    if config.strategy == "multi_worker":
        distribution.check_same_state(config.strategy, _run_dir_state(config))
    if config.deterministic:
        import tensorflow as tf
        tf.config.experimental.enable_op_determinism()
    labels, rate = observed_labels(config, data)
    if _is_chief(config):  # after the check that the folder's rows are these images
        write_excluded(config, data)
    psi, ce, ce_classifier = stage1(config, data, labels) if config.needs_stage1() else (
        None, None, None)
    transition, extra = None, None
    if config.method == "idn":
        idn, result = stage2(config, data, labels, psi)
        final = idn.classifier
    elif config.method == "ce":
        final, result = ce_classifier, ce
    else:
        final, result, transition, extra = method_stage(config, data, labels, rate,
                                                        ce_classifier, given_transition)
    finetuned, tuned = finetune(config, data, final)
    if not _is_chief(config):
        print(f"\nworker done ({time.time() - start:.0f} s); the chief writes the results")
        return None
    if config.method == "idn":
        res = report_run(config, data, labels, rate, ce, idn, result)
    else:
        res = report_baseline(config, rate, ce, result, transition, extra)
    if tuned is not None:
        res.update(finetuned_test_accuracy=tuned.test_accuracy, finetune_history=tuned.history)
    previous = _previous_export(config)
    artifacts.write_json(_path(config, "results.json"), res)  # kept if the export fails
    res["saved_model"] = previous or export(config, finetuned if finetuned is not None else final)
    artifacts.write_json(_path(config, "results.json"), res)
    print(f"\n{report.table(res)}")
    print(f"\nresults in {config.run_dir}/ ({time.time() - start:.0f} s)")
    return res


def _reuse(path, load):
    """load() of a run-folder file, or a one-line RunDirError if the file is damaged."""
    try:
        return load()
    except (OSError, ValueError, KeyError, TypeError, EOFError) as e:
        if isinstance(e, artifacts.RunDirError):
            raise
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise artifacts.RunDirError(f"{path} is damaged ({why}); delete it to recompute it, "
                                    "or pass --overwrite") from None


def _array(path, *shape):
    """An array of `shape` saved with np.save (e.g. ψ [N], or the T [K, K] a run used)."""
    array = np.load(path)
    if array.shape != shape:
        raise ValueError(f"shape {array.shape}, expected {shape}")
    return array


def _saved_classifier(config, data, path):
    """A new classifier (in the run's strategy scope) holding the weights saved at `path`."""
    from idn_tf import stages
    with distribution.get_strategy(config.strategy).scope():
        classifier = stages.new_classifier(config, data)
    _reuse(path, lambda: classifier.load_weights(path))
    return classifier


def _write_stage(config, name, result, **more):
    """<name>.json of a finished stage (chief only): its test accuracy, history and
    monitoring, and `more` (a baseline's extra results)."""
    _write(config, artifacts.write_json, f"{name}.json", {
        "test_accuracy": result.test_accuracy, "history": result.history,
        "monitor": result.monitor, **more})


def _saved_stage(path, monitor_optional=False):
    """(StageResult, the file's dict) of a stage's saved json, or a RunDirError if it is
    damaged. `monitor_optional`: a file without "monitor" (stage 1's written before
    monitoring existed; the fine-tuning's) gets none."""
    from idn_tf import stages
    saved = _reuse(path, lambda: artifacts.read_json(path))
    result = _reuse(path, lambda: stages.StageResult(
        saved["test_accuracy"], saved["history"],
        saved.get("monitor", {}) if monitor_optional else saved["monitor"]))
    return result, saved


def _npz_array(path, key):
    with np.load(path) as saved:
        return saved[key]


def _npz_optional(path, key):
    with np.load(path) as saved:
        return saved[key] if key in saved.files else None


def final_stage(config):
    """The stage that trains the run's final classifier: stage2 (the method), stage1 (CE)
    or the baseline's own (named after it). Its results are <stage>.json."""
    return {"idn": "stage2", "ce": "stage1"}.get(config.method, config.method)


def run_stages(config):
    """The stages a run trains, in order (stage 1 named even where it is skipped)."""
    own = ("tanaka_labels",) if config.method == "tanaka" else ()
    return tuple(dict.fromkeys(("stage1", *own, final_stage(config))))


def _run_dir_state(config):
    """What a restart would reuse: [noisy labels, stages done; backup epochs]."""
    from idn_tf import callbacks, stages
    stages_run = run_stages(config)
    done = [os.path.isfile(_path(config, n)) for n in (
        "noisy_labels.npz", *(f"{s}.json" for s in stages_run))]
    # The fine-tuning's files are left out: the chief deletes them when only --finetune_*
    # changed, and another worker may look before it has (the workers have no barrier here).
    epochs = [callbacks.Backup.latest(stages.backup_dir(config, s))[0] for s in stages_run]
    return [int(d) for d in done] + epochs


def _is_chief(config):
    return distribution.is_chief(config.strategy)


def _write(config, write, name, *args, **kwargs):
    """artifacts.<write>(<run_dir>/<name>, ...) on the chief; other workers write nothing."""
    if _is_chief(config):
        write(_path(config, name), *args, **kwargs)


def _done_with_backup(config, stage):
    """Removes a stage's backup once its results are written (chief only)."""
    from idn_tf import stages
    if _is_chief(config):
        shutil.rmtree(stages.backup_dir(config, stage), ignore_errors=True)


def _banner(text):
    print(f"\n== {text}", flush=True)


def _path(config, name):
    return os.path.join(config.run_dir, name)


def fetch_backbone_weights(config):
    """Pretrained backbone weights, fetched (or found in Keras's cache) before the data
    scan and any training: offline without them, the run stops here in one line."""
    if config.arch != "resnet50" or config.backbone_weights == "none":
        return
    try:
        pretrained.fetch(config.backbone_weights)
    except pretrained.WeightsError as e:
        raise ConfigError(f"--backbone_weights={config.backbone_weights}: {e}") from None


def load_data(config):
    """The run's data as a view (`data.views`): arrays in memory, or Clothing1M's files."""
    from idn_tf.data import views
    _banner(f"data: {config.dataset}")
    if config.dataset in sources.FILE_SOURCES:
        return _load_files(config)
    if config.dataset in sources.TFDS_SOURCES:
        print(f"reading {config.dataset} through tensorflow-datasets (data_dir: "
              f"{config.data_dir or 'tfds default'}; prepared on first use"
              f"{', downloading if needed' if config.download else ''})", flush=True)
    dataset = sources.load(config.dataset, npz_path=config.npz_path or None,
                           data_dir=config.data_dir or None,
                           noisy_label_key=config.noisy_label_key or None,
                           download=config.download)
    print(f"{len(dataset.train)} training and {len(dataset.test)} test images of shape "
          f"{dataset.train.images.shape[1:]}, {dataset.num_classes} classes")
    check_data_fits(config, dataset.train.images.shape[1:])
    return views.from_config(config, dataset)


def _load_files(config):
    """Clothing1M: the folder's lists read and every listed image checked, before training."""
    from idn_tf.data import clothing1m, views
    print(f"reading {config.data_dir} and checking its images ({config.image_check} check"
          f"{', skipping bad ones' if config.skip_bad_images else ''})", flush=True)
    loaded = clothing1m.load_clothing1m(
        config.data_dir, subset_fraction=config.subset_fraction, subset_seed=SUBSET_SEED,
        skip_bad_images=config.skip_bad_images, check=config.image_check,
        verbose=config.verbose > 0)
    if config.clean_train == "mix" or config.finetune_clean_epochs:
        if not len(loaded.clean_train):
            raise sources.DataError(f"{config.data_dir}: the clean training list is empty; "
                                    "--clean_train=mix and --finetune_clean_epochs need it")
    for split in ("noisy", "clean_test"):
        if not len(getattr(loaded, split)):
            raise sources.DataError(f"{config.data_dir}: no images left in {clothing1m.LISTS[split]}")
    data = views.from_config(config, loaded)
    print(f"{len(loaded.noisy)} noisy training, {len(loaded.clean_train)} clean training and "
          f"{data.test_size} clean test images, cropped to {data.input_shape}, "
          f"{data.num_classes} classes"
          + (f"; {len(loaded.excluded)} images left out" if loaded.excluded else ""))
    check_data_fits(config, data.input_shape)
    return data


def check_clean_labels_known(config, data):
    """--coteaching_tau=actual measures the noise rate: ConfigError now if it cannot."""
    if config.method == "coteaching" and config.coteaching_tau == "actual" and not (
            np.asarray(data.train.clean_labels) >= 0).all():
        raise ConfigError(f"--coteaching_tau=actual: the clean labels of {config.dataset}'s "
                          "training examples are not known; give τ as a number or use estimate")


def write_excluded(config, data):
    """excluded_images.csv: the images --skip_bad_images left out (path, where listed, why)."""
    if not config.skip_bad_images:
        return
    import csv
    import io
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(("path", "listed_at", "reason"))
    writer.writerows(data.data.excluded)
    artifacts.write_text(_path(config, "excluded_images.csv"), text.getvalue())
    if data.data.excluded:
        print(f"{len(data.data.excluded)} images left out: {_path(config, 'excluded_images.csv')}")


def new_noisy_labels(config, data):
    """The observed labels made by --noise: the arrays of noisy_labels.npz (labels, clean
    labels, the noise's recipe and, for file datasets, the examples' fingerprint)."""
    dataset = getattr(data, "dataset", data)  # what the noise generators read
    noisy = noise.make_noisy_labels(dataset, config.noise, config.noise_rate, config.seed,
                                    **config.noise_options(), verbose=config.verbose > 0)
    fingerprint = data.fingerprint()
    return dict(labels=noisy.labels, clean_labels=dataset.train.clean_labels,
                recipe=json.dumps(noisy.recipe),
                **({"examples_sha256": fingerprint} if fingerprint else {}))


def observed_labels(config, data):
    """Noise step: noisy_labels.npz is made once per run folder and reused on restart."""
    dataset = getattr(data, "dataset", data)  # what the noise generators read
    path = _path(config, "noisy_labels.npz")
    if os.path.isfile(path) and not config.overwrite:
        _banner(f"noise: reusing {path}")
        labels = _reuse(path, lambda: _npz_array(path, "labels"))
        if len(labels) != len(dataset.train):
            raise artifacts.RunDirError(
                f"{path} has {len(labels)} labels but the data has {len(dataset.train)} training "
                "examples; choose another --run_dir or pass --overwrite")
        saved = _reuse(path, lambda: _npz_optional(path, "examples_sha256"))
        if saved is not None and str(saved) != data.fingerprint():
            raise artifacts.RunDirError(
                f"{path} was made for other training images or labels than the data now has "
                "(e.g. --skip_bad_images left out other images, or another --data_dir): its "
                "η and ψ rows would not match; choose another --run_dir or pass --overwrite")
    else:
        _banner(f"noise: {config.noise}")
        arrays = new_noisy_labels(config, data)
        labels = arrays["labels"]
        _write(config, artifacts.write_npz, "noisy_labels.npz", **arrays)
    present = len(np.unique(labels))
    if present < dataset.num_classes:
        print(f"warning: the observed labels use only {present} of the {dataset.num_classes} "
              "classes; the classifier can never predict the others"
              + (" (use more --kmeans_clusters)" if config.noise == "kmeans" else ""), flush=True)
    rate = noise.noise_rate_actual(labels, dataset.train.clean_labels)
    known = int(np.sum(dataset.train.clean_labels >= 0))
    if rate != rate:
        print("clean training labels unknown: actual noise rate not measurable")
    elif known < len(labels):
        print(f"{100 * rate:.2f}% of the {known} training labels whose clean label is known "
              "are wrong")
    else:
        print(f"{100 * rate:.2f}% of the training labels are wrong")
    return labels, rate


def stage1(config, data, labels):
    """CE baseline and ψ: (ψ, StageResult, classifier or None).

    psi.npy + stage1.json are reused on restart; the classifier is returned when the
    run needs it after stage 1 (a baseline; then stage1.weights.h5 is reused too).
    """
    psi_path, done_path = _path(config, "psi.npy"), _path(config, "stage1.json")
    weights = _path(config, "stage1.weights.h5")
    from idn_tf import stages
    needed = [done_path, psi_path] + ([weights] if config.method != "idn" else [])
    if all(os.path.isfile(p) for p in needed) and not config.overwrite:
        _banner(f"stage 1: reusing {psi_path}")
        ce, _ = _saved_stage(done_path, monitor_optional=True)
        psi = _reuse(psi_path, lambda: _array(psi_path, len(labels)))
        classifier = _saved_classifier(config, data, weights) if config.method != "idn" else None
        return psi, ce, classifier
    _banner("stage 1: cross-entropy on the observed labels (CE baseline, ψ)")
    classifier, ce = stages.train_cross_entropy(config, data, labels)
    psi = stages.estimate_psi(classifier, data, labels, config.batch_size)
    _write(config, artifacts.write_weights, "stage1.weights.h5", classifier)
    _write(config, artifacts.write_npy, "psi.npy", psi)
    _write_stage(config, "stage1", ce)
    _done_with_backup(config, "stage1")
    print(f"CE test accuracy {100 * ce.test_accuracy:.2f}%; mean ψ {psi.mean():.3f}")
    return psi, ce, classifier


def stage2(config, data, labels, psi):
    """The method; eta.npy, classifier.weights.h5 and stage2.json are reused on restart."""
    from idn_tf import stages
    paths = [_path(config, n) for n in ("eta.npy", "classifier.weights.h5", "stage2.json")]
    if all(os.path.isfile(p) for p in paths) and not config.overwrite:
        _banner(f"stage 2: reusing {paths[0]} and {paths[1]}")
        idn = stages.new_idn_model(config, data, psi)
        _reuse(paths[1], lambda: idn.classifier.load_weights(paths[1]))
        idn.eta.assign(_reuse(paths[0], lambda: _array(paths[0], data.table_size)))
        result, _ = _saved_stage(paths[2])
    else:
        _banner(f"stage 2: IDN method (η updates from epoch {config.eta_start_epoch} "
                f"every {config.eta_every})")
        if _is_chief(config):  # a fine-tuning of an earlier stage 2 must not be reused
            artifacts.remove(config.run_dir, FINETUNE_RESULTS)
        idn, result = stages.train_idn(config, data, labels, psi)
        _write(config, artifacts.write_npy, "eta.npy", idn.eta.numpy())
        _write(config, artifacts.write_weights, "classifier.weights.h5", idn.classifier)
        _write_stage(config, "stage2", result)
        _done_with_backup(config, "stage2")
    eta = idn.eta.numpy()
    print(f"η table: {len(eta)} rows, sha256 {hashlib.sha256(eta.tobytes()).hexdigest()[:16]}"
          f"{distribution.worker_label()}", flush=True)
    return idn, result


def load_transition_matrix(config, num_classes):
    """--transition_matrix read and checked (float32 [K, K]), or None if not given."""
    if config.method != "forward" or not config.transition_matrix:
        return None
    from idn_tf import transition
    path = config.transition_matrix
    try:
        if path.endswith(".npy"):
            matrix = np.load(path, allow_pickle=False)
        else:
            with open(path) as f:
                text = f.read()
            matrix = np.loadtxt(path, delimiter="," if "," in text else None, ndmin=2)
        return transition.check_transition_matrix(matrix, num_classes)
    except (OSError, ValueError) as e:
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"--transition_matrix={path}: {why}") from None


def method_stage(config, data, labels, rate, ce_classifier, given_transition):
    """A baseline's own stage: (classifier, StageResult, T or None, extra results).

    Forward's T is `given_transition`, else estimated from the stage-1 classifier;
    ldmi starts from the stage-1 classifier; Co-teaching's τ is given, measured or
    estimated (`coteaching_tau`); Tanaka first learns its soft labels (`tanaka_labels`).
    classifier.weights.h5, <method>.json (and transition_matrix.npy) are reused on
    restart. `extra`: the method's own results (τ, the soft labels' rates), also kept
    in <method>.json.
    """
    from idn_tf import stages
    stage = final_stage(config)
    weights, done = _path(config, "classifier.weights.h5"), _path(config, f"{stage}.json")
    t_path = _path(config, "transition_matrix.npy")
    paths = [weights, done] + ([t_path] if config.method == "forward" else [])
    transition = None
    if all(os.path.isfile(p) for p in paths) and not config.overwrite:
        _banner(f"{stage}: reusing {weights}")
        classifier = _saved_classifier(config, data, weights)
        if config.method == "forward":
            transition = _reuse(t_path, lambda: _array(t_path, data.num_classes, data.num_classes))
        result, saved = _saved_stage(done)
        return classifier, result, transition, saved.get("extra", {})
    if _is_chief(config):  # a fine-tuning of an earlier stage must not be reused
        artifacts.remove(config.run_dir, FINETUNE_RESULTS)
    extra, forget_rate, soft = {}, None, None
    if config.method == "forward":
        transition = forward_transition(config, data, ce_classifier, given_transition, stage)
    if config.method == "coteaching":
        forget_rate = extra["coteaching_tau"] = coteaching_tau(config, data, labels, rate,
                                                               ce_classifier, stage)
    if config.method == "tanaka":
        soft = tanaka_labels(config, data, labels)
    _banner(f"{stage}: {METHOD_TITLES[config.method]}")
    if config.method == "pencil":
        joint, finetune = config.pencil_phases()
        print(f"pencil: phase 2 from epoch {joint}, phase 3 from epoch {finetune}; "
              f"λ = {config.pencil_step():g}")
    trained, result = stages.train_method(config, data, labels, transition=transition,
                                          warm=ce_classifier, forget_rate=forget_rate, soft=soft)
    if config.method == "pencil":
        soft = stages.soft_label_table(trained)
        _write(config, artifacts.write_npy, "soft_labels.npy", soft)
    if soft is not None:
        extra.update(soft_label_rates(soft, labels, data.train.clean_labels))
    _write(config, artifacts.write_weights, "classifier.weights.h5", trained.classifier)
    _write_stage(config, stage, result, extra=extra)
    _done_with_backup(config, stage)
    print(f"{config.method} test accuracy {100 * result.test_accuracy:.2f}%")
    return trained.classifier, result, transition, extra


def forward_transition(config, data, ce_classifier, given_transition, stage):
    """Forward's T: given, the one a resumed stage trained with, or estimated from the
    stage-1 classifier; written to transition_matrix.npy."""
    from idn_tf import stages
    t_path = _path(config, "transition_matrix.npy")
    if given_transition is not None:
        print(f"forward: T from {config.transition_matrix}")
        transition = given_transition
    elif os.path.isfile(t_path) and _resuming(config, stage):  # the T it trained with
        print(f"forward: resuming with the T estimated before, {t_path}")
        return _reuse(t_path, lambda: _array(t_path, data.num_classes, data.num_classes))
    else:
        transition = stages.estimate_transition(ce_classifier, data, config.batch_size,
                                                config.forward_percentile)
        print(f"forward: T estimated from the stage-1 model ({config.forward_percentile:g}th "
              f"percentile); mean diagonal {np.mean(np.diag(transition)):.3f}")
    _write(config, artifacts.write_npy, "transition_matrix.npy", transition)
    return transition


# The largest estimated or measured forget rate Co-teaching uses (a given one is used as
# given): τ near 1 would leave next to no example to train on.
MAX_FORGET_RATE = 0.95


def coteaching_tau(config, data, labels, rate, ce_classifier, stage):
    """Co-teaching's final forget rate τ (--coteaching_tau), kept in coteaching_tau.json
    so that a resumed stage goes on with the τ it started with."""
    from idn_tf import stages, transition
    from idn_tf.config import coteaching_rate
    path = _path(config, "coteaching_tau.json")
    if os.path.isfile(path) and _resuming(config, stage):
        tau = float(_reuse(path, lambda: artifacts.read_json(path)["tau"]))
        print(f"coteaching: resuming with the forget rate τ = {tau:.4f} of {path}")
        return tau
    given = coteaching_rate(config.coteaching_tau)
    if given is not None:
        tau, how = given, "given"
    elif config.coteaching_tau == "actual":
        tau, how = rate, "the measured fraction of wrong training labels"
    else:
        matrix = stages.estimate_transition(ce_classifier, data, config.batch_size,
                                            config.forward_percentile)
        prior = np.bincount(labels, minlength=data.num_classes) / len(labels)
        tau = transition.noise_rate_from_transition(matrix, prior)
        how = (f"Σ π_i (1 − T_ii), T estimated from the stage-1 model (mean diagonal "
               f"{np.mean(np.diag(matrix)):.3f})")
    if tau > MAX_FORGET_RATE and given is None:
        print(f"warning: τ = {tau:.4f} is above {MAX_FORGET_RATE}; Co-teaching uses "
              f"{MAX_FORGET_RATE}", flush=True)
        tau = MAX_FORGET_RATE
    print(f"coteaching: forget rate τ = {tau:.4f} ({how}), reached after "
          f"{config.coteaching_t_k} epochs")
    _write(config, artifacts.write_json, "coteaching_tau.json", {"tau": tau, "how": how})
    return float(tau)


def tanaka_labels(config, data, labels):
    """Tanaka's first phase: the soft labels [N, K] it learns (soft_labels.npy and
    tanaka_labels.json, reused on restart)."""
    from idn_tf import stages
    path, done = _path(config, "soft_labels.npy"), _path(config, "tanaka_labels.json")
    if os.path.isfile(path) and os.path.isfile(done) and not config.overwrite:
        _banner(f"tanaka, phase 1: reusing {path}")
        return _reuse(path, lambda: _array(path, len(labels), data.num_classes))
    _banner(f"tanaka_labels: joint optimisation of network and soft labels (Tanaka et al. "
            f"2018) at the constant lr {config.lr:g}; labels updated from epoch "
            f"{config.tanaka_start()}")
    trained, result = stages.train_tanaka_labels(config, data, labels)
    soft = stages.soft_label_table(trained)
    rates = soft_label_rates(soft, labels, data.train.clean_labels)
    _write(config, artifacts.write_npy, "soft_labels.npy", soft)
    _write_stage(config, "tanaka_labels", result, extra=rates)
    _done_with_backup(config, "tanaka_labels")
    print(f"tanaka, phase 1: test accuracy {100 * result.test_accuracy:.2f}%; the soft labels' "
          f"arg max differs from the observed label for "
          f"{np.mean(np.argmax(soft, axis=1) != labels):.2%} of the examples")
    return soft


def soft_label_rates(soft, labels, clean_labels):
    """How the arg max of learned soft labels [N, K] compares with the clean labels
    (`report.label_correction`): soft_labels_corrected, soft_labels_kept."""
    rates = report.label_correction(soft, labels, clean_labels)
    return {"soft_labels_corrected": rates["wrong_labels_corrected"],
            "soft_labels_kept": rates["right_labels_kept"]}


def _resuming(config, stage):
    """Whether `stage` has a backup of a finished epoch to resume from."""
    from idn_tf import callbacks, stages
    return not config.overwrite and callbacks.Backup.latest(stages.backup_dir(config, stage))[0] > 0


# What each --method's own stage is, as its banner says it.
METHOD_TITLES = {
    "forward": "forward loss correction (Patrini et al. 2017) with T",
    "bootstrap_soft": "soft bootstrapping (Reed et al. 2015)",
    "bootstrap_hard": "hard bootstrapping (Reed et al. 2015)",
    "ldmi": "L_DMI (Xu et al. 2019) from the stage-1 CE model",
    "coteaching": "Co-teaching (Han et al. 2018) of two networks",
    "tanaka": "Tanaka et al.'s second phase: a fresh network on the learned soft labels",
    "pencil": "PENCIL (Yi & Wu 2019), three phases",
}


def finetune(config, data, classifier):
    """Row #10: the final classifier fine-tuned on the clean training set, or (None, None).

    finetune.json and finetuned.weights.h5 are reused on restart.
    """
    if not config.finetune_clean_epochs:
        return None, None
    from idn_tf import stages
    weights, done = _path(config, "finetuned.weights.h5"), _path(config, "finetune.json")
    if os.path.isfile(weights) and os.path.isfile(done) and not config.overwrite:
        _banner(f"fine-tuning: reusing {weights}")
        tuned = _saved_classifier(config, data, weights)
        result, _ = _saved_stage(done, monitor_optional=True)  # it keeps no monitoring
        return tuned, result
    _banner(f"fine-tuning on the clean training set: {config.finetune_clean_epochs} "
            f"epoch(s) at lr {config.finetune_lr:g}")
    tuned, result = stages.finetune(config, data, classifier)
    _write(config, artifacts.write_weights, "finetuned.weights.h5", tuned)
    _write(config, artifacts.write_json, "finetune.json", {
        "test_accuracy": result.test_accuracy, "history": result.history})
    _done_with_backup(config, "finetune")
    print(f"fine-tuned test accuracy {100 * result.test_accuracy:.2f}%")
    return tuned, result


def report_run(config, data, labels, rate, ce, idn, result):
    """Label audit, plots and the results dict (written by `run` after the export).

    Covers the N noisy training examples (the first N rows of η and ψ).
    """
    from idn_tf import stages
    _banner("report: label audit and plots")
    n = len(labels)
    eta, psi = idn.eta.numpy()[:n], idn.psi.numpy()[:n]
    clean = data.train.clean_labels
    q = stages.posterior_table(idn.classifier, data, labels, eta, psi, config.batch_size)
    audit_path = _path(config, "label_audit.csv")
    columns = audit.write(audit_path, q, eta, psi, labels, clean)
    print(f"{audit_path}: {int(columns['is_label_issue'].sum())} of {len(labels)} labels "
          "flagged (estimated label differs from the observed one)")
    plot_dir = _path(config, "plots")
    top = columns["index"][:16]
    known = (clean >= 0).all()
    plots.accuracy_curves(os.path.join(plot_dir, "accuracy.png"), {
        "stage 1: cross-entropy": _curves(ce.monitor),
        "stage 2: IDN method": _curves(result.monitor)})
    plots.eta_histogram(os.path.join(plot_dir, "eta_histogram.png"), eta,
                        is_wrong=labels != clean if known else None)
    plots.highest_eta_grid(os.path.join(plot_dir, "highest_eta.png"), data.images(top),
                           top, labels[top], columns["estimated_label"][:16],
                           data.class_names, clean=clean[top] if known else None,
                           eta=eta[top])
    print(f"{plot_dir}/: accuracy.png, eta_histogram.png, highest_eta.png")
    res = report.results(config, rate, ce, result, q, eta, labels, clean)
    res.update(audit.detection(q, eta, labels, clean))
    return res


def report_baseline(config, rate, ce, result, transition, extra=None):
    """Plots and the results dict of a baseline (no η: no label audit)."""
    _banner("report: plots")
    curves = {} if ce is None else {"stage 1: cross-entropy": _curves(ce.monitor)}
    if config.method != "ce":
        curves[f"{config.method}"] = _curves(result.monitor)
    plot_dir = _path(config, "plots")
    plots.accuracy_curves(os.path.join(plot_dir, "accuracy.png"), curves)
    print(f"{plot_dir}/: accuracy.png")
    return report.baseline_results(config, rate, ce, result, transition, extra)


def _curves(monitor):
    """The accuracy curves of a stage from its MonitorCallback history (empty if none)."""
    return {"epoch": monitor.get("epoch", []),
            "train_observed_accuracy": monitor.get("accuracy/train_observed", []),
            "test_accuracy": monitor.get("accuracy/test_clean", [])}


def check_export_dir(config):
    """RunDirError now, not after hours of training, if the export cannot be written.

    Leaves nothing behind: the folders made for the test are removed again (the export
    makes them when it runs), so a run stopped by a later check leaves no trace here.
    """
    if not config.export_dir:
        return
    model_dir = os.path.join(config.export_dir, config.model_name)
    made, folder = [], os.path.abspath(model_dir)
    while not os.path.lexists(folder):
        made.append(folder)  # deepest first
        folder = os.path.dirname(folder)
    try:
        os.makedirs(model_dir, exist_ok=True)
        artifacts.write_text(os.path.join(model_dir, ".write-test"), "")
        os.remove(os.path.join(model_dir, ".write-test"))
    except OSError as e:
        raise artifacts.RunDirError(f"--export_dir={config.export_dir}: cannot write {model_dir} "
                                    f"({e.strerror or e})") from None
    finally:
        for folder in made:
            try:
                os.rmdir(folder)
            except OSError:
                break


def _previous_export(config):
    """The SavedModel a finished run in this folder exported already, if it still exists.

    Restarting a finished run reuses everything; only a run whose stage 2 was trained
    again publishes a new version.
    """
    path = _path(config, "results.json")
    if not config.export_dir or config.overwrite or not os.path.isfile(path):
        return ""
    try:
        saved = artifacts.read_json(path).get("saved_model") or ""
    except (OSError, ValueError, AttributeError):
        return ""
    done = max((os.path.getmtime(_path(config, name)) for name in (f"{final_stage(config)}.json", "finetune.json")
                if os.path.isfile(_path(config, name))), default=float("inf"))
    fresh = os.path.isfile(os.path.join(saved, "saved_model.pb")) and os.path.getmtime(path) >= done
    same_model = os.path.dirname(os.path.abspath(saved)) == os.path.abspath(
        os.path.join(config.export_dir, config.model_name))
    if fresh and same_model:
        print(f"\n== export: reusing {saved}")
        return saved
    return ""


def export(config, classifier):
    """SavedModel of the final classifier for TF Serving; returns its path (or "").

    For file datasets the serving graph resizes and centre-crops photos of any size
    as the evaluation does (`export.EvalResize`).
    """
    if not config.export_dir:
        return ""
    from idn_tf import export as export_lib
    _banner("export: SavedModel")
    resize = None
    if config.dataset in sources.FILE_SOURCES:
        resize = export_lib.EvalResize(resize=config.resize, image_size=config.image_size,
                                       mode=config.resize_mode)
    try:
        path = export_lib.export_saved_model(classifier, config.export_dir, config.model_name,
                                             eval_resize=resize)
    except OSError as e:
        raise artifacts.RunDirError(f"--export_dir={config.export_dir}: cannot write there "
                                    f"({e.strerror or e})") from None
    print(f"exported to {path} (signature serving_default: uint8 images -> probabilities, "
          "classes)")
    return path


def _fail(error):
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)


def parse_flags(argv):
    """absl's parser, with flag errors as one line on stderr and exit code 2."""
    try:
        return flagdefs.FLAGS(argv)
    except flags.Error as e:
        _fail(e)


def quiet_logging():
    """TensorFlow logs through absl at INFO (e.g. every SavedModel file it writes);
    shown only with an explicit --verbosity."""
    # absl's app.run sets --verbosity itself, so "given by the user" is `.present`.
    if not flagdefs.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)


def main(argv):
    quiet_logging()
    if len(argv) > 1:
        _fail(f"unexpected arguments {' '.join(argv[1:])!r} (flags are --name=value)")
    try:
        config = flagdefs.config_from_flags()
        if config.dry_run:
            print(json.dumps(config.to_dict(), indent=2))
            return 0
        run(config)
    except USER_ERRORS as e:
        _fail(e)
    except Exception as e:  # noqa: BLE001 (re-raised unless it is a peer's failure)
        if flagdefs.FLAGS.strategy == "multi_worker" and type(e).__name__ in PEER_ERRORS:
            _fail(f"the cluster stopped: another worker failed or left ({type(e).__name__}); "
                  "its output says why")
        raise
    return 0


# What TensorFlow raises in a worker whose peer stopped (e.g. the chief refused its run
# folder): the collective ops are aborted and the connection drops.
PEER_ERRORS = ("UnavailableError", "CancelledError", "AbortedError", "DeadlineExceededError")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
