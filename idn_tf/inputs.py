"""A run's inputs: the pretrained weights it needs, its data, and its observed labels.

The data and noise steps of a run (docs/method.md §5): `load_data` reads the
dataset named by the configuration and checks it before any training;
`observed_labels` makes the noisy labels once per run folder (noisy_labels.npz) and
reuses them on restart, with the rows held out as the noisy validation split
(`data.holdout`), and returns the view of the rows the run trains on. `idn_tf.compare` uses the same functions, once per seed.
"""

import json
import os

import numpy as np

from idn_tf import artifacts, pretrained, runfolder
from idn_tf.config import check_data_fits
from idn_tf.data import holdout, noise, sources, views
from idn_tf.errors import ConfigError

# Clothing1M's --subset_fraction draws its subset with this seed, not --seed: runs that
# differ in seed train on the same examples.
SUBSET_SEED = 0


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
    runfolder.banner(f"data: {config.dataset}")
    if config.dataset in sources.FILE_SOURCES:
        return _load_files(config)
    if config.dataset in sources.TFDS_SOURCES:
        print(f"reading {config.dataset} through tensorflow-datasets (data_dir: "
              f"{config.data_dir or 'tfds default'}; prepared on first use"
              f"{', downloading if needed' if config.download else ''})", flush=True)
    dataset = sources.load(config.dataset, npz_path=config.npz_path or None,
                           data_dir=config.data_dir or None,
                           noisy_label_key=config.noisy_label_key or None,
                           download=config.download, class_names=config.class_names or None)
    print(f"{len(dataset.train)} training and {len(dataset.test)} test images of shape "
          f"{dataset.train.images.shape[1:]}, {dataset.num_classes} classes")
    data = views.from_config(config, dataset)
    check_data_fits(config, data.input_shape, data.class_names)
    return data


def _load_files(config):
    """A file source: its images listed and checked (Clothing1M's lists or a class folder),
    before training."""
    read = _read_class_folder if config.dataset == "folder" else _read_clothing1m
    loaded, splits = read(config)
    data = views.from_config(config, loaded)
    print(f"{splits} {data.test_size} {'test' if config.dataset == 'folder' else 'clean test'} "
          f"images, cropped to {data.input_shape}, {data.num_classes} classes"
          + (f"; {len(loaded.excluded)} images left out" if loaded.excluded else ""))
    check_data_fits(config, data.input_shape, data.class_names)
    return data


def _read_clothing1m(config):
    """(the checked Clothing1M folder, its training splits' sizes for the summary line)."""
    from idn_tf.data import clothing1m
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
    return loaded, (f"{len(loaded.noisy)} noisy training, {len(loaded.clean_train)} clean "
                    "training and")


def _read_class_folder(config):
    """(the checked class folder with its test split drawn, its training size for the
    summary line)."""
    from idn_tf.data import dataset, folder
    print(f"reading the class folders of {config.data_dir} and checking their images "
          f"({config.image_check} check{', skipping bad ones' if config.skip_bad_images else ''})",
          flush=True)
    names = dataset.read_class_names(config.class_names) if config.class_names else None
    loaded = folder.load_folder(
        config.data_dir, class_names=names, test_fraction=config.test_fraction,
        labels_are_clean=config.noise != "none", skip_bad_images=config.skip_bad_images,
        check=config.image_check, verbose=config.verbose > 0, val_fraction=config.val_fraction)
    return loaded, f"{len(loaded.noisy)} training and"


def write_excluded(folder, config, data):
    """excluded_images.csv: the images --skip_bad_images left out (path, where listed, why)."""
    if not config.skip_bad_images:
        return
    import csv
    import io
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(("path", "listed_at", "reason"))
    writer.writerows(data.data.excluded)
    folder.write(artifacts.write_text, "excluded_images.csv", text.getvalue())
    if data.data.excluded:
        print(f"{len(data.data.excluded)} images left out: {folder.path('excluded_images.csv')}")


def new_noisy_labels(config, data):
    """The observed labels made by --noise: the arrays of noisy_labels.npz (labels, clean
    labels, the rows held out for validation, the noise's recipe and, for file datasets,
    the examples' fingerprint)."""
    # What the noise generators read: the arrays; a file source's images are read into
    # memory only for the noises that cluster or fit them (kmeans, mlp).
    dataset = getattr(data, "dataset", None) or data.noise_dataset(
        pixels=config.noise in noise.FEATURE_NOISES)
    noisy = noise.make_noisy_labels(dataset, config.noise, config.noise_rate, config.seed,
                                    **config.noise_options(), verbose=config.verbose > 0)
    fingerprint = data.fingerprint()
    # A class folder's listing (every image's relative path and label, training and test
    # splits; not Clothing1M's million), so that a restart after the user moved, added or removed files can say
    # what changed (`folder_changed`).
    listing = (dict(zip(("paths", "source_labels"), data.listing()))
               if config.dataset == "folder" else {})
    return dict(labels=noisy.labels, clean_labels=dataset.train.clean_labels,
                validation_rows=validation_rows(config, noisy.labels),
                recipe=json.dumps(noisy.recipe),
                **({"examples_sha256": fingerprint} if fingerprint else {}), **listing)


def check_same_data(folder, config, data):
    """RunDirError (`folder_changed`) if the run folder's noisy_labels.npz was made for
    other images or labels of a file source than the data now hold."""
    path = folder.path("noisy_labels.npz")
    saved = folder.reuse("noisy_labels.npz",
                         lambda: _npz_array(path, "examples_sha256", optional=True))
    if saved is not None and str(saved) != data.fingerprint():
        raise artifacts.RunDirError(folder_changed(folder, config, data))


def folder_changed(folder, config, data):
    """The message of a restart whose file source no longer holds the images and labels
    the run folder was made for: what changed, where the run folder saved its listing,
    and the two ways to go on."""
    path = folder.path("noisy_labels.npz")
    fresh = (f"To train on the data as they are now, rerun the same command with --overwrite "
             f"(replaces {config.run_dir}) or with --run_dir={config.run_dir.rstrip('/')}-2 "
             "(keeps this run)")
    saved_paths = folder.reuse("noisy_labels.npz", lambda: _npz_array(path, "paths", optional=True))
    if saved_paths is None or config.dataset != "folder":
        return (f"{path} was made for other training images or labels than the data now has "
                f"(moved, added or removed files, --skip_bad_images leaving out other images, or "
                f"another --data_dir): its η and ψ rows would not match. {fresh}")
    from idn_tf.data import folder as folder_lib
    names = data.class_names
    saved_labels = folder.reuse("noisy_labels.npz", lambda: _npz_array(path, "source_labels"))

    def listing(paths, labels):
        return [(folder_lib.file_identity(str(p), names[int(k)]), names[int(k)])
                for p, k in zip(paths, labels)]

    before, after = listing(saved_paths, saved_labels), listing(*data.listing())
    return (f"{config.data_dir} changed since this run folder was made: "
            f"{folder_lib.changes_text(*folder_lib.changes(before, after))}. {fresh}")


def validation_rows(config, labels):
    """The noisy training rows --val_fraction holds out (none for Clothing1M, which
    validates on its own clean list)."""
    if config.dataset in sources.OWN_VALIDATION_SOURCES:
        return np.zeros(0, np.int64)
    return holdout.validation_rows(labels, config.val_fraction, config.seed)


def split_validation(data, labels, rows):
    """(the view of the rows a run trains on, their labels): `rows` of the noisy training
    split, with their observed labels, become the view's validation split."""
    if len(rows):
        print(f"{len(rows)} of the {len(labels)} noisy training examples held out for "
              f"validation; training on {len(labels) - len(rows)}")
    return data.hold_out(rows, labels)


def _npz_array(path, key, optional=False):
    with np.load(path) as saved:
        if optional and key not in saved.files:
            return None
        return saved[key]


def fresh_noisy_labels(folder, config, data, given=None):
    """When the run folder has no labels to reuse: `given` (noisy_labels.npz's arrays a
    caller made, e.g. `idn_tf.compare` a seed's), else `new_noisy_labels`, made before
    the run folder is taken, so that labels the validation split cannot divide stop the
    run with nothing written. None when it has them."""
    if os.path.isfile(folder.path("noisy_labels.npz")) and not config.overwrite:
        check_same_data(folder, config, data)
        return None
    if given is not None:
        return given
    runfolder.banner(f"noise: {config.noise}")
    return new_noisy_labels(config, data)


def observed_labels(folder, config, data, fresh=None):
    """Noise step: noisy_labels.npz is made once per run folder and reused on restart.

    `fresh`: what `fresh_noisy_labels` returned, called first (None: reuse the folder's,
    which it has checked are for these images, or make them).
    Returns (the view of the training rows, their observed labels [N], the measured
    fraction of wrong labels among them or NaN); the held-out rows are the view's
    validation split.
    """
    dataset = getattr(data, "dataset", data)  # what the noise generators read
    name = "noisy_labels.npz"
    path = folder.path(name)
    if fresh is None and os.path.isfile(path) and not config.overwrite:
        runfolder.banner(f"noise: reusing {path}")
        labels = folder.reuse(name, lambda: _npz_array(path, "labels"))
        if len(labels) != len(dataset.train):
            raise artifacts.RunDirError(
                f"{path} has {len(labels)} labels but the data has {len(dataset.train)} training "
                "examples; choose another --run_dir or pass --overwrite")
        held = folder.reuse(name, lambda: _npz_array(path, "validation_rows", optional=True))
        held = np.zeros(0, np.int64) if held is None else held
        if len(held) and (held.min() < 0 or held.max() >= len(labels)):
            raise artifacts.RunDirError(f"{path}: its validation rows are not rows of the "
                                        "training split; choose another --run_dir or pass "
                                        "--overwrite")
    else:
        arrays = fresh if fresh is not None else fresh_noisy_labels(folder, config, data)
        labels, held = arrays["labels"], arrays["validation_rows"]
        folder.write(artifacts.write_npz, name, **arrays)
    data, labels = split_validation(data, labels, held)
    dataset = getattr(data, "dataset", data)
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
    return data, labels, rate
