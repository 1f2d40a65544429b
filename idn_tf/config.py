"""The run configuration: one frozen dataclass, validated once, built from flags.

`Config`'s defaults are the embedded digits recipe (docs/method.md §3).
Every dataset has a recipe (`RECIPES`): the values it changes from those
defaults; for cifar10/cifar100 that is the paper's (docs/method.md §3). `resolve`
builds the configuration of a run: defaults, then the dataset's recipe, then the
values the user gave explicitly.

The methods' own fields (η's settings, Forward's T, ...) are declared by the methods
(`idn_tf.methods`, `Method.fields`); a `Config` holds them beside its own fields, and
`config.<field>` reads either.
"""

import dataclasses
import math
import os

from idn_tf import methods
from idn_tf.data.clothing1m import CHECKS as IMAGE_CHECKS
from idn_tf.data.clothing1m import NUM_CLASSES as CLOTHING1M_CLASSES
from idn_tf.data.dataset import class_names_problem
from idn_tf.data.holdout import MAX_FRACTION as VAL_FRACTION_MAX
from idn_tf.data.noise import (KMEANS_CLUSTERS, MLP_EPOCHS, MLP_HIDDEN_UNITS, NOISE_FEATURES,
                                NOISE_TYPES)
from idn_tf.data.folder import TEST_FRACTION
from idn_tf.data.sources import (FILE_SOURCES, NAMED_CLASS_SOURCES, OWN_VALIDATION_SOURCES,
                                 TFDS_SOURCES)
from idn_tf.data.sources import SOURCES as DATASETS
from idn_tf.data.sources import DataError
from idn_tf.data.tfds_sources import noisy_label_feature
from idn_tf.errors import ConfigError  # noqa: F401 (raised by every check here)
from idn_tf.errors import check as _check
from idn_tf.precision import POLICIES as PRECISIONS

# Kept here rather than imported so that parsing and checking a configuration
# never imports TensorFlow (a user error then prints one clean line); a test
# checks it equals models.ARCHITECTURES.
ARCHITECTURES = ("small_cnn", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet50",
                 "preact_resnet18", "resnet34")

# Fields that do not change what a run computes: they may differ between a
# run and its restart in the same folder.
NON_SEMANTIC_FIELDS = ("run_dir", "overwrite", "dry_run", "verbose", "jit_compile", "data_dir",
                       "download", "monitor_every", "test_every", "export_dir", "model_name",
                       "export_classifier", "export_class_names", "strategy",
                       "deterministic", "preset")  # a preset's values are the fields it sets
STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker")  # = distribution.STRATEGIES
# What a run exports (`guard`): "auto" the method's classifier unless it is worse than
# stage 1's on noisy validation, then stage 1's; "method" the method's regardless.
EXPORT_CLASSIFIERS = ("auto", "method")

RATE_NOISES = ("ccn", "symmetric")  # the noise types that use --noise_rate
AUGMENTATIONS = ("none", "pad_crop_flip")  # kept equal to data.pipeline.AUGMENTATIONS (test)
NORMALIZATIONS = ("standardize", "subtract_mean")
CLEAN_TRAIN = ("none", "mix")  # what --clean_train does with Clothing1M's 50k clean examples
RESIZE_MODES = ("square", "shorter_side")  # = data.streaming.RESIZE_MODES (test)
# Flags that only a file dataset (Clothing1M, a class folder) reads, with the value that
# means "off", and those only Clothing1M reads.
FILE_DATASET_FIELDS = {"subset_fraction": 1.0, "skip_bad_images": False, "oversample": "none",
                       "clean_train": "none", "finetune_clean_epochs": 0}
CLOTHING1M_FIELDS = ("subset_fraction", "oversample", "clean_train", "finetune_clean_epochs")


# Row #10's fine-tuning flags (`runfolder.FINETUNE_FIELDS`): not stage 1's.
FINETUNE_FIELDS = ("finetune_clean_epochs", "finetune_lr")


@dataclasses.dataclass(frozen=True, init=False)
class Config:
    """Everything a run needs; names are the flags' names (flagdefs.py has the help).

    Config(**fields) takes its own fields and every registered method's (`methods`),
    each defaulting to its declared default; the methods' are kept in
    `method_options` ((name, value) pairs, in registry order) and read as attributes.
    `dataclasses.replace` works for both kinds.
    """
    dataset: str = "digits"
    npz_path: str = ""
    noise: str = "kmeans"
    noise_rate: float = 0.4
    kmeans_clusters: int = KMEANS_CLUSTERS
    noise_features: str = "pca"
    noise_feature_dims: int = 3
    noise_feature_size: int = 224
    noise_feature_weights: str = "imagenet"
    mlp_hidden_units: int = MLP_HIDDEN_UNITS
    mlp_epochs: int = MLP_EPOCHS
    mlp_target_accuracy: float = 0.0
    data_dir: str = ""
    download: bool = True
    noisy_label_key: str = ""
    class_names: str = ""
    test_fraction: float = TEST_FRACTION
    seed: int = 0
    val_fraction: float = 0.1
    subset_fraction: float = 1.0
    skip_bad_images: bool = False
    image_check: str = "header"
    oversample: str = "none"
    clean_train: str = "none"
    image_size: int = 224
    resize: int = 256
    resize_mode: str = "square"
    method: str = methods.DEFAULT
    preset: str = "none"
    arch: str = "small_cnn"
    backbone_weights: str = "none"
    normalize: str = "standardize"
    augment: str = "none"
    crop_padding: int = 4
    epochs: int = 40
    batch_size: int = 64
    lr: float = 0.05
    lr_decay_epochs: tuple = (10, 20, 30)
    lr_decay_factor: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    finetune_clean_epochs: int = 0
    finetune_lr: float = 5e-4
    jit_compile: bool = False
    precision: str = "float32"
    strategy: str = "auto"
    deterministic: bool = False
    run_dir: str = ""
    monitor_every: int = 1
    test_every: int = 1
    export_dir: str = "saved_models"
    model_name: str = ""
    export_classifier: str = "auto"
    export_class_names: tuple = ()
    overwrite: bool = False
    dry_run: bool = False
    verbose: int = 2
    method_options: tuple = ()

    def __init__(self, method_options=(), **fields):
        defaults = methods.field_defaults()
        own = {f.name: f.default for f in dataclasses.fields(Config) if f.name != "method_options"}
        unknown = sorted(set(fields) - set(own) - set(defaults))
        if unknown:
            raise TypeError(f"Config got an unexpected keyword argument {unknown[0]!r}")
        options = {**defaults, **{k: v for k, v in dict(method_options).items() if k in defaults},
                   **{k: v for k, v in fields.items() if k in defaults}}
        for name, default in own.items():
            object.__setattr__(self, name, fields.get(name, default))
        owner = {f: m for m in methods.all_methods() for f in m.fields}
        object.__setattr__(self, "method_options", tuple(
            (name, owner[name].canonical(name, value)) for name, value in options.items()))
        self.__post_init__()

    def __getattr__(self, name):
        # Only called for names that are not fields of its own: a method's field.
        for key, value in self.__dict__.get("method_options", ()):
            if key == name:
                return value
        raise AttributeError(f"'Config' has no field {name!r}")

    def __post_init__(self):
        object.__setattr__(self, "lr_decay_epochs", tuple(int(e) for e in self.lr_decay_epochs))
        object.__setattr__(self, "export_class_names", tuple(self.export_class_names))
        if not self.run_dir:
            object.__setattr__(self, "run_dir", os.path.join("runs", self.run_name()))
        if not self.model_name:
            object.__setattr__(self, "model_name", os.path.basename(os.path.abspath(self.run_dir)))
        validate(self)

    def to_dict(self):
        """Every field (the methods' after --method) -> value."""
        out = {}
        for field in dataclasses.fields(self):
            if field.name != "method_options":
                out[field.name] = getattr(self, field.name)
            if field.name == "method":
                out.update(self.method_options)
        return out

    def run_name(self):
        """<dataset>[-<label set>]-<noise>[<rate>][-<method>][-<preset>]-<seed>: distinct
        for every paper row and its --preset sibling; the default method (the paper's) and
        no preset leave their names out.

        Clothing1M (real noise): clothing1m[-subset<fraction>][-mix][-<method>][-<preset>]-<seed>.
        The fine-tuning of row #10 continues row #7's run in the same folder.
        """
        parts = [self.setting_name()] + ([self.method] if self.method != methods.DEFAULT else [])
        parts += [self.preset] if self.preset != "none" else []
        return "-".join(parts + [str(self.seed)])

    def setting_name(self):
        """The data and noise part of `run_name` (without method and seed):
        <dataset>[-<label set>]-<noise>[<rate>], or clothing1m[-subset<fraction>][-mix]."""
        parts = [self.dataset]
        if self.dataset == "clothing1m":
            if self.subset_fraction != 1.0:
                parts.append(f"subset{self.subset_fraction:g}")
            if self.clean_train == "mix":
                parts.append("mix")
        else:
            if self.noisy_label_key:
                parts.append(self.noisy_label_key)
            parts.append(self.noise + (f"{self.noise_rate:g}" if self.noise in RATE_NOISES else ""))
        return "-".join(parts)

    def has_validation(self):
        """Whether the run validates: a noisy validation split, or a file source's list."""
        return self.dataset in OWN_VALIDATION_SOURCES or self.val_fraction > 0

    def warnings(self):
        """One line for each thing the flags ask for that the run will not do (valid, so
        not a ConfigError): a step decay after the last epoch never takes effect."""
        late = [str(e) for e in self.lr_decay_epochs if e >= self.epochs]
        return [f"--lr_decay_epochs: the decay after epoch {', '.join(late)} never takes "
                f"effect with --epochs={self.epochs}"] if late else []

    def method_object(self):
        """The registered `methods.Method` of --method."""
        return methods.get(self.method)

    def uses_noise_rate(self):
        """Whether --noise reads --noise_rate (ccn, symmetric)."""
        return self.noise in RATE_NOISES

    def noise_options(self):
        """Keyword arguments of `noise.make_noisy_labels` besides noise, rate and seed."""
        return {name: getattr(self, name) for name in (
            "kmeans_clusters", "noise_features", "noise_feature_dims", "noise_feature_size",
            "noise_feature_weights", "mlp_hidden_units", "mlp_epochs", "mlp_target_accuracy")}

    def served_class_names(self, class_names):
        """The names the SavedModel serves: --export_class_names, else the data's
        `class_names` (its K classes' names in class order)."""
        return self.export_class_names or tuple(class_names)

    def oversample_mode(self):
        """--oversample for `streaming.oversample_indices`: None, "auto" or K multipliers."""
        if self.oversample in ("none", "auto"):
            return None if self.oversample == "none" else "auto"
        return tuple(float(m) for m in self.oversample.split(","))

    def unused_fields(self):
        """The fields this configuration does not read: other methods' (`Method.used_fields`),
        other noises' (--kmeans_clusters with --noise=ccn) and other datasets' (the file
        datasets' flags for digits), the export's without one, and --dry_run (the command's)."""
        unused = {"dry_run"}
        unused.update(set(methods.field_defaults()) - set(self.method_object().used_fields(self)))
        if self.noise not in RATE_NOISES:
            unused.add("noise_rate")
        if self.noise != "kmeans":
            unused.add("kmeans_clusters")
        if self.noise != "mlp":
            unused.update(f for f in self.to_dict() if f.startswith("mlp_"))
        features = self.noise_features if self.noise in ("kmeans", "mlp") else None
        if features is None:
            unused.add("noise_features")
        if features != "pca":
            unused.add("noise_feature_dims")
        if features != "resnet50":
            unused.update(("noise_feature_size", "noise_feature_weights"))
        if self.dataset != "npz":
            unused.add("npz_path")
        if self.dataset not in NAMED_CLASS_SOURCES:
            unused.add("class_names")
        if self.dataset != "folder":
            unused.add("test_fraction")
        if self.dataset not in (*TFDS_SOURCES, *FILE_SOURCES):
            unused.add("data_dir")  # digits is bundled, an npz is --npz_path
        if self.dataset not in TFDS_SOURCES:
            unused.add("download")
        if self.dataset in FILE_SOURCES:
            unused.update(("augment", "crop_padding"))  # their own: resize, crop, flip
            if self.dataset in OWN_VALIDATION_SOURCES:
                unused.add("val_fraction")  # they validate on their own clean list
            else:
                unused.update(CLOTHING1M_FIELDS)
            if not self.skip_bad_images:
                unused.add("image_check")  # the check then only passes or stops the run
            if not self.finetune_clean_epochs:
                unused.add("finetune_lr")
        else:
            unused.update(FILE_DATASET_FIELDS)
            unused.update(("image_check", "image_size", "resize", "resize_mode", "finetune_lr"))
        if self.augment == "none":
            unused.add("crop_padding")
        if not self.export_dir:
            unused.update(("model_name", "export_classifier", "export_class_names"))
        return unused

    def used_dict(self):
        """The fields this run reads -> value (--dry_run): `to_dict` without `unused_fields`."""
        unused = self.unused_fields()
        return {k: v for k, v in self.to_dict().items() if k not in unused}

    def semantic_dict(self):
        """The fields that decide what the run computes (for restart checks).

        `used_dict` without the fields that do not change the result (`NON_SEMANTIC_FIELDS`)
        and without the method's options at their paper setting (`Method.semantic_fields`),
        so that a flagfile and a recipe that differ only in unused fields describe the same
        run.
        """
        unused = set(NON_SEMANTIC_FIELDS)
        if self.method == methods.DEFAULT:
            unused.add("method")  # as run folders written before --method existed say
        method = self.method_object()
        unused.update(set(methods.field_defaults()) - set(method.semantic_fields(self)))
        semantic = {k: v for k, v in self.used_dict().items() if k not in unused}
        semantic.update(method.semantic_extra(self))
        return semantic

    def stage1_dict(self):
        """The fields that decide what stage 1 computes (the noisy labels included): runs
        that agree here train the same stage 1, whatever their --method."""
        return stage1_part(self.semantic_dict())

    def noise_dict(self):
        """The fields that decide the observed labels (`train.new_noisy_labels`)."""
        return {k: v for k, v in self.semantic_dict().items() if k in NOISE_FIELDS}


# The fields that decide the noisy labels (those of them a configuration uses).
NOISE_FIELDS = ("dataset", "npz_path", "noisy_label_key", "noise", "noise_rate",
                "kmeans_clusters", "noise_features", "noise_feature_dims", "noise_feature_size",
                "noise_feature_weights", "mlp_hidden_units", "mlp_epochs", "mlp_target_accuracy",
                "seed", "val_fraction", "subset_fraction", "skip_bad_images", "image_check",
                "class_names", "test_fraction")


def stage1_part(semantic):
    """The stage-1 fields of a `Config.semantic_dict()` (or of a run folder's config.json)."""
    method_fields = {"method", *methods.field_defaults(), *methods.derived_fields(),
                     *FINETUNE_FIELDS}
    return {k: v for k, v in semantic.items() if k not in method_fields}


# The paper's CIFAR setting (docs/method.md §3): ResNet-32, 160 epochs, batch 256, SGD momentum 0.9,
# lr 0.05 ÷10 every 40 epochs, coupled weight decay 1e-4, η_init 0.01, η updated in epoch 35
# and every 5th after; mean subtraction, random flip, 4-pixel pad + 32x32 random crop.
_CIFAR = dict(
    arch="resnet32", epochs=160, batch_size=256, lr=0.05, lr_decay_epochs=(40, 80, 120),
    lr_decay_factor=0.1, momentum=0.9, weight_decay=1e-4, eta_init=0.01, eta_start_epoch=35,
    eta_every=5, eta_rule="paper", eta_eps=1e-4, eta_min=0.0, normalize="subtract_mean",
    augment="pad_crop_flip", crop_padding=4,
    # The paper trains on the whole training split: no validation split (docs/validation.md;
    # --val_fraction=0.1 holds one out to select epochs without the test set).
    val_fraction=0.0,
    # A monitored epoch costs a forward pass over the 50,000 training images (a third of an
    # epoch's compute); every 5th epoch still shows the curves and each η update's effect.
    monitor_every=5)

# The modern baselines' authors' CIFAR-100 values, where they differ from their CIFAR-10
# ones (the methods' defaults), for every CIFAR-100 recipe (docs/baselines.md, "Settings"):
# DivideMix's Train_cifar.py (warm_up = 30 for cifar100) and paper (λ_u 150 at 50-90%
# symmetric noise), ELR's config_cifar100.json (β 0.9, λ 7), SOP's README CIFAR-100 command
# (lr_u 1, lr_v 10). Lengths and rates are scaled to the recipe's 160 epochs and batch 256
# exactly as the CIFAR-10 defaults are (`methods.dividemix.scaled_length`, `SOP.rates`):
# warm-up 30 of 300 epochs -> 16 of 160; SOP's rates × (256/128)·(300/160) = 3.75. An
# explicit flag still wins (and is not rescaled).
_CIFAR100_METHODS = dict(dividemix_warmup_epochs=16, dividemix_lambda_u=150.0,
                         elr_beta=0.9, elr_lambda=7.0, sop_lr_u=3.75, sop_lr_v=37.5)

# What each dataset's recipe changes from Config's defaults (the digits recipe).
RECIPES = {
    "digits": {},
    "npz": {"noise": "none"},
    # CIFAR-100 IDN: an MLP on the clean training pixels relabels the training set; it stops
    # at the epoch its labels are 69.29% correct (the paper's rate; `noise.mlp_noise`).
    "cifar100": dict(_CIFAR, **_CIFAR100_METHODS, eta_lr=0.5, noise="mlp", noise_features="pixels",
                     mlp_hidden_units=512, mlp_epochs=100, mlp_target_accuracy=0.6929),
    # CIFAR-10 IDN: k-means++ on ImageNet ResNet-50 pool-5 features, clusters relabelled by
    # majority (paper: 65.75% correct; the cluster count is not in the paper, see docs/method.md §5).
    "cifar10": dict(_CIFAR, eta_lr=0.7, noise="kmeans", noise_features="resnet50",
                    kmeans_clusters=10),
    # Real human noise (CIFAR-N): the labels are the dataset's; α₁ as for the clean dataset.
    "cifar10_n": dict(_CIFAR, eta_lr=0.7, noise="none", noisy_label_key="worst"),
    "cifar100_n": dict(_CIFAR, **_CIFAR100_METHODS, eta_lr=0.5, noise="none", noisy_label_key="noisy"),
    # Clothing1M (docs/method.md §3, §4): ImageNet ResNet-50, batch 32, 15 epochs, lr 5e-3 ÷10 after
    # epochs 5 and 10, coupled weight decay 1e-3, η updated in every epoch from the 2nd,
    # α₁ 0.05, η_init 0.01; the labels are the web labels (no synthetic noise); minority
    # noisy classes oversampled to the largest (docs/method.md §4). A monitored
    # epoch predicts all ~1M training images (a third of a training epoch's compute).
    # Co-teaching's τ is the noise rate, as its paper takes it (Han et al. 2018, §3: τ = ε):
    # 38.46% of Clothing1M's labels are wrong (Xiao et al., CVPR 2015: 61.54% correct).
    "clothing1m": dict(coteaching_tau="0.3846", arch="resnet50", backbone_weights="imagenet", batch_size=32, epochs=15,
                       lr=5e-3, lr_decay_epochs=(5, 10), lr_decay_factor=0.1, momentum=0.9,
                       weight_decay=1e-3, eta_init=0.01, eta_lr=0.05, eta_start_epoch=2,
                       eta_every=1, eta_rule="paper", eta_eps=1e-4, eta_min=0.0, noise="none",
                       normalize="subtract_mean", oversample="auto", monitor_every=5),
    # A class folder of the user's own photos (docs/own_data.md): Clothing1M's recipe, the
    # paper's for real-world photos with real label noise (ImageNet ResNet-50, 15 epochs, η
    # from the 2nd epoch), without its oversampling, validated on a held-out 10% of the
    # folder's own (noisy) labels as digits is.
    "folder": dict(arch="resnet50", backbone_weights="imagenet", batch_size=32, epochs=15,
                   lr=5e-3, lr_decay_epochs=(5, 10), lr_decay_factor=0.1, momentum=0.9,
                   weight_decay=1e-3, eta_init=0.01, eta_lr=0.05, eta_start_epoch=2,
                   eta_every=1, eta_rule="paper", eta_eps=1e-4, eta_min=0.0, noise="none",
                   normalize="subtract_mean"),
}


# Named settings of the method (--preset), applied over the dataset's recipe and under the
# flags given explicitly. idn_plus is the combination of our options (docs/method.md §7.6)
# that noisy validation accuracy supports over the paper's setting on digits, by the
# one-standard-error rule (BENCHMARKS.md, "The method's options"): at present none of them,
# so it is the paper's setting. flags/idn_plus.cfg writes it out (a test checks they agree).
PRESETS = {
    "none": {},
    "idn_plus": {},
}
PRESET_NAMES = tuple(PRESETS)


def field_names():
    """Every configuration field: `Config`'s own and the registered methods' (flags)."""
    return tuple(field_defaults())


def field_defaults():
    """field -> default, for every field of `field_names` (the flags' defaults)."""
    own = {f.name: f.default for f in dataclasses.fields(Config) if f.name != "method_options"}
    return {**own, **methods.field_defaults()}


def resolve(explicit):
    """The run's Config: defaults < the dataset's recipe < the --preset's values <
    `explicit` (field -> value).

    Raises ConfigError for an unknown dataset, preset or field, or a bad value.
    """
    unknown = sorted(set(explicit) - set(field_names()))
    if unknown:
        raise ConfigError(f"--{unknown[0]}: not a configuration field")
    dataset = explicit.get("dataset", Config.dataset)
    _check(dataset in RECIPES, "dataset", f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    preset = explicit.get("preset", Config.preset)
    _check(preset in PRESETS, "preset", f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    recipe = RECIPES[dataset]
    if dataset == "folder":
        recipe = {**recipe, **from_scratch_schedule({**recipe, **explicit})}
    return Config(**{**recipe, **PRESETS[preset], **explicit})


# The paper's η schedule for a backbone trained from scratch (CIFAR: η from epoch 35 of 160,
# then every 5th; docs/method.md §3), which the folder recipe takes when its backbone has
# no pretrained weights; its start is scaled to --epochs.
SCRATCH_ETA_START = (35, 160)
SCRATCH_ETA_EVERY = 5


def from_scratch_schedule(values):
    """The folder recipe's η schedule when the backbone trains from scratch (`values`: the
    recipe and the explicit flags; any arch but ResNet-50, or --backbone_weights=none),
    else {}. The pretrained recipe's (Clothing1M's: η from the 2nd epoch, every epoch)
    assumes a network that fits the labels in its first epoch; from scratch, the classifier
    has not fitted them by then, q of the observed label is low for right and wrong labels
    alike, and η climbs towards 1 for most images (docs/own_data.md)."""
    if values.get("arch") == "resnet50" and values.get("backbone_weights") != "none":
        return {}
    epochs = values.get("epochs", Config.epochs)
    start, total = SCRATCH_ETA_START
    return {"eta_start_epoch": max(2, math.ceil(epochs * start / total)),
            "eta_every": SCRATCH_ETA_EVERY}


# Smallest image side each backbone accepts (keras.applications.ResNet50: 32). A copy of
# models.resnet50.MIN_SIZE that does not import TensorFlow (a test checks they agree).
MIN_IMAGE_SIZE = {"resnet50": 32}


def check_data_fits(c, image_shape, class_names):
    """ConfigError if --arch cannot take images of `image_shape` (H, W, C), or the data's
    K `class_names` and --export_class_names do not give the SavedModel K names."""
    smallest = MIN_IMAGE_SIZE.get(c.arch, 1)
    _check(min(image_shape[:2]) >= smallest, "arch",
           f"{c.arch} needs images of at least {smallest}x{smallest}; {c.dataset} has "
           f"{image_shape[0]}x{image_shape[1]}")
    given, k = c.export_class_names, len(class_names)
    _check(not given or len(given) == k, "export_class_names",
           f"{len(given)} name(s) for the {k} classes of {c.dataset}; give one per class, "
           "in class order")
    # The data's own names go into the SavedModel unchanged (a class folder's may be any).
    problem = class_names_problem(class_names) if c.export_dir and not given else ""
    _check(not problem, "export_class_names",
           f"the {c.dataset} classes' names cannot be served ({problem}); give names "
           "with this flag")


def _check_oversample(value):
    if value in ("none", "auto"):
        return
    try:
        multipliers = [float(m) for m in value.split(",")]
    except ValueError:
        multipliers = []
    _check(len(multipliers) == CLOTHING1M_CLASSES, "oversample",
           f"none, auto, or {CLOTHING1M_CLASSES} comma-separated multipliers (one per class), "
           f"got {value!r}")
    _check(all(math.isfinite(m) and m >= 1 for m in multipliers), "oversample",
           f"multipliers must be finite and >= 1 (copies are only added), got {value!r}")


def _check_file_dataset(c):
    """The Clothing1M flags: in range, and the ones that do something only with it."""
    _check(0.0 < c.subset_fraction <= 1.0, "subset_fraction",
           f"must be in (0, 1], got {c.subset_fraction}")
    _check(c.image_check in IMAGE_CHECKS, "image_check",
           f"unknown check {c.image_check!r}; choose one of {', '.join(IMAGE_CHECKS)}")
    _check_oversample(c.oversample)
    _check(c.clean_train in CLEAN_TRAIN, "clean_train",
           f"unknown value {c.clean_train!r}; choose one of {', '.join(CLEAN_TRAIN)}")
    _check(c.clean_train != "mix" or (c.batch_size >= 2 and c.batch_size % 2 == 0), "batch_size",
           f"must be even with --clean_train=mix (half noisy, half clean), got {c.batch_size}")
    _check(c.image_size >= 1, "image_size", f"must be >= 1, got {c.image_size}")
    _check(c.resize >= c.image_size, "resize",
           f"must be >= --image_size={c.image_size} (the crop is taken from the resized "
           f"image), got {c.resize}")
    _check(c.resize_mode in RESIZE_MODES, "resize_mode",
           f"unknown mode {c.resize_mode!r}; choose one of {', '.join(RESIZE_MODES)}")
    _check(c.finetune_clean_epochs >= 0, "finetune_clean_epochs",
           f"must be >= 0 (0: no fine-tuning), got {c.finetune_clean_epochs}")
    _check(c.finetune_lr > 0, "finetune_lr", f"must be positive, got {c.finetune_lr}")
    _check(0.0 < c.test_fraction < 1.0, "test_fraction",
           f"must be in (0, 1), got {c.test_fraction}")
    _check(c.dataset == "folder" or c.test_fraction == TEST_FRACTION, "test_fraction",
           f"applies to --dataset=folder only, not {c.dataset}")
    _check(not c.class_names or c.dataset in NAMED_CLASS_SOURCES, "class_names",
           f"applies to --dataset={'/'.join(NAMED_CLASS_SOURCES)} only, not {c.dataset} "
           "(it names its own classes)")
    for name, off in FILE_DATASET_FIELDS.items():
        owners = ("clothing1m",) if name in CLOTHING1M_FIELDS else FILE_SOURCES
        _check(c.dataset in owners or getattr(c, name) == off, name,
               f"applies to --dataset={'/'.join(owners)} only, not {c.dataset}")
    if c.dataset == "folder":
        _check(bool(c.data_dir), "data_dir", "required with --dataset=folder (the folder "
               "holding one subfolder of images per class)")
    if c.dataset != "clothing1m":
        return
    _check(bool(c.data_dir), "data_dir", f"required with --dataset={c.dataset} (the folder "
           "holding noisy_label_kv.txt, the key lists and images/)")
    _check(c.noise == "none", "noise", f"must be none with --dataset={c.dataset} (its labels "
           f"are real noisy labels), got {c.noise}")


def _check_export_class_names(names):
    """--export_class_names: distinct names, each on one line and free of commas (the
    flag's separator, as flags.txt writes it back); their number is checked against the
    data (`check_data_fits`)."""
    problem = class_names_problem(names)
    _check(not problem, "export_class_names", f"{problem}; give K distinct non-empty names")
    for name in names:
        _check("," not in name, "export_class_names", f"{name!r}: a name cannot hold a comma")


def _check_method(c):
    """--method, and every method's own fields (`Method.check`)."""
    _check(c.method in methods.names(), "method",
           f"unknown method {c.method!r}; choose one of {', '.join(methods.names())}")
    for method in methods.all_methods():
        method.check(c)
    mixing = [m.name for m in methods.all_methods() if m.mixes_clean]
    _check(c.clean_train != "mix" or c.method_object().mixes_clean, "clean_train",
           f"mix is for --method={' or '.join(mixing)} (clean examples with η = 0), not "
           f"{c.method}")


def validate(c):
    """Raises ConfigError naming the first bad flag."""
    for name, value in c.to_dict().items():  # inf passes one-sided bounds such as lr > 0
        _check(not isinstance(value, float) or math.isfinite(value), name,
               f"must be a finite number, got {value}")
    _check(0 <= c.seed < 2**32, "seed", f"must be in [0, 2**32 - 1] (numpy's and "
           f"scikit-learn's seed range), got {c.seed}")
    _check(c.dataset in DATASETS, "dataset", f"unknown dataset {c.dataset!r}; choose one of {', '.join(DATASETS)}")
    _check(c.dataset != "npz" or c.npz_path, "npz_path", "required with --dataset=npz")
    if c.noisy_label_key:
        try:
            noisy_label_feature(c.dataset, c.noisy_label_key)
        except DataError as e:
            raise ConfigError(f"--noisy_label_key: {e}") from None
    _check(c.noise in NOISE_TYPES, "noise", f"unknown noise {c.noise!r}; choose one of {', '.join(NOISE_TYPES)}")
    _check(0.0 <= c.noise_rate <= 1.0, "noise_rate", f"must be in [0, 1], got {c.noise_rate}")
    _check(c.kmeans_clusters >= 1, "kmeans_clusters", f"must be >= 1, got {c.kmeans_clusters}")
    _check(c.noise_features in NOISE_FEATURES, "noise_features", f"unknown features {c.noise_features!r}; choose one of {', '.join(NOISE_FEATURES)}")
    _check(c.noise_feature_dims >= 1, "noise_feature_dims", f"must be >= 1, got {c.noise_feature_dims}")
    _check(c.noise_feature_size >= MIN_IMAGE_SIZE["resnet50"], "noise_feature_size", f"must be >= {MIN_IMAGE_SIZE['resnet50']} (ResNet-50's smallest input), got {c.noise_feature_size}")
    _check(c.mlp_hidden_units >= 1, "mlp_hidden_units", f"must be >= 1, got {c.mlp_hidden_units}")
    _check(c.mlp_epochs >= 1, "mlp_epochs", f"must be >= 1, got {c.mlp_epochs}")
    _check(0.0 <= c.mlp_target_accuracy <= 1.0, "mlp_target_accuracy", f"must be in [0, 1] (0: no target), got {c.mlp_target_accuracy}")
    _check(c.preset in PRESETS, "preset", f"unknown preset {c.preset!r}; choose one of {', '.join(PRESETS)}")
    _check_file_dataset(c)
    _check_method(c)
    _check(c.arch in ARCHITECTURES, "arch", f"unknown architecture {c.arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    _check(c.backbone_weights == "none" or c.arch == "resnet50", "backbone_weights",
           f"applies to --arch=resnet50 only, not {c.arch}")
    _check(c.normalize in NORMALIZATIONS, "normalize", f"unknown normalisation {c.normalize!r}; choose one of {', '.join(NORMALIZATIONS)}")
    _check(c.augment in AUGMENTATIONS, "augment", f"unknown augmentation {c.augment!r}; choose one of {', '.join(AUGMENTATIONS)}")
    _check(c.crop_padding >= 0, "crop_padding", f"must be >= 0, got {c.crop_padding}")
    _check(c.epochs >= 1, "epochs", f"must be >= 1, got {c.epochs}")
    _check(c.batch_size >= 1, "batch_size", f"must be positive, got {c.batch_size}")
    _check(c.lr > 0, "lr", f"must be positive, got {c.lr}")
    _check(all(e >= 1 for e in c.lr_decay_epochs), "lr_decay_epochs", f"epochs must be >= 1, got {list(c.lr_decay_epochs)}")
    _check(list(c.lr_decay_epochs) == sorted(set(c.lr_decay_epochs)), "lr_decay_epochs", "must be strictly increasing")
    _check(0.0 < c.lr_decay_factor <= 1.0, "lr_decay_factor", f"must be in (0, 1], got {c.lr_decay_factor}")
    _check(0.0 <= c.momentum < 1.0, "momentum", f"must be in [0, 1), got {c.momentum}")
    _check(c.weight_decay >= 0.0, "weight_decay", f"must be >= 0, got {c.weight_decay}")
    _check(c.precision in PRECISIONS, "precision",
           f"unknown precision {c.precision!r}; choose one of {', '.join(PRECISIONS)}")
    _check(c.strategy in STRATEGIES, "strategy", f"unknown strategy {c.strategy!r}; choose one of {', '.join(STRATEGIES)}")
    _check(c.monitor_every >= 1, "monitor_every", f"must be >= 1, got {c.monitor_every}")
    _check(c.test_every >= 1, "test_every", f"must be >= 1, got {c.test_every}")
    _check(0.0 <= c.val_fraction <= VAL_FRACTION_MAX, "val_fraction",
           f"must be in [0, {VAL_FRACTION_MAX}] (0: no validation split), got {c.val_fraction}")
    _check(c.model_name not in ("", ".", "..") and "/" not in c.model_name and os.sep not in c.model_name,
           "model_name", f"must be a plain folder name, got {c.model_name!r}")
    _check(c.export_classifier in EXPORT_CLASSIFIERS, "export_classifier",
           f"unknown choice {c.export_classifier!r}; choose one of {', '.join(EXPORT_CLASSIFIERS)}")
    _check_export_class_names(c.export_class_names)
    _check(c.verbose in (0, 1, 2), "verbose", f"must be 0, 1 or 2, got {c.verbose}")
