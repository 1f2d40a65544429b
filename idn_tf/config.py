"""The run configuration: one frozen dataclass, validated once, built from flags.

Defaults are the embedded digits recipe (README, "The default run"); the
paper's recipes live in flagfiles under flags/.
"""

import dataclasses
import os

from idn_tf.data.noise import KMEANS_CLUSTERS, NOISE_FEATURES, NOISE_TYPES
from idn_tf.data.sources import SOURCES as DATASETS

# Kept here rather than imported so that parsing and checking a configuration
# never imports TensorFlow (a user error then prints one clean line); tests
# check they equal posterior.ETA_RULES and models.ARCHITECTURES.
ETA_RULES = ("paper", "exact")
ARCHITECTURES = ("small_cnn",)

# Fields that do not change what a run computes: they may differ between a
# run and its restart in the same folder.
NON_SEMANTIC_FIELDS = ("run_dir", "overwrite", "dry_run", "verbose", "jit_compile")


class ConfigError(ValueError):
    """A bad flag value or combination; the message is one line naming the flag."""


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything a run needs; names are the flags' names (flagdefs.py has the help)."""
    dataset: str = "digits"
    npz_path: str = ""
    noise: str = "kmeans"
    noise_rate: float = 0.4
    kmeans_clusters: int = KMEANS_CLUSTERS
    noise_features: str = "pca"
    noise_feature_dims: int = 3
    seed: int = 0
    arch: str = "small_cnn"
    epochs: int = 40
    batch_size: int = 64
    lr: float = 0.05
    lr_decay_epochs: tuple = (10, 20, 30)
    lr_decay_factor: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    eta_init: float = 0.01
    eta_lr: float = 0.5
    eta_start_epoch: int = 3
    eta_every: int = 2
    eta_rule: str = "paper"
    eta_eps: float = 1e-4
    eta_min: float = 0.0
    jit_compile: bool = False
    run_dir: str = ""
    overwrite: bool = False
    dry_run: bool = False
    verbose: int = 2

    def __post_init__(self):
        object.__setattr__(self, "lr_decay_epochs", tuple(int(e) for e in self.lr_decay_epochs))
        if not self.run_dir:
            object.__setattr__(self, "run_dir", os.path.join(
                "runs", f"{self.dataset}-{self.noise}-{self.seed}"))
        validate(self)

    def to_dict(self):
        return dataclasses.asdict(self)

    def semantic_dict(self):
        """The fields that decide what the run computes (for restart checks)."""
        return {k: v for k, v in self.to_dict().items() if k not in NON_SEMANTIC_FIELDS}


def _check(condition, flag, message):
    if not condition:
        raise ConfigError(f"--{flag}: {message}")


def validate(c):
    """Raises ConfigError naming the first bad flag."""
    _check(c.dataset in DATASETS, "dataset", f"unknown dataset {c.dataset!r}; choose one of {', '.join(DATASETS)}")
    _check(c.dataset != "npz" or c.npz_path, "npz_path", "required with --dataset=npz")
    _check(c.noise in NOISE_TYPES, "noise", f"unknown noise {c.noise!r}; choose one of {', '.join(NOISE_TYPES)}")
    _check(0.0 <= c.noise_rate <= 1.0, "noise_rate", f"must be in [0, 1], got {c.noise_rate}")
    _check(c.kmeans_clusters >= 1, "kmeans_clusters", f"must be >= 1, got {c.kmeans_clusters}")
    _check(c.noise_features in NOISE_FEATURES, "noise_features", f"unknown features {c.noise_features!r}; choose one of {', '.join(NOISE_FEATURES)}")
    _check(c.noise_feature_dims >= 1, "noise_feature_dims", f"must be >= 1, got {c.noise_feature_dims}")
    _check(c.arch in ARCHITECTURES, "arch", f"unknown architecture {c.arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    _check(c.epochs >= 1, "epochs", f"must be >= 1, got {c.epochs}")
    _check(c.batch_size >= 1, "batch_size", f"must be positive, got {c.batch_size}")
    _check(c.lr > 0, "lr", f"must be positive, got {c.lr}")
    _check(all(e >= 1 for e in c.lr_decay_epochs), "lr_decay_epochs", f"epochs must be >= 1, got {list(c.lr_decay_epochs)}")
    _check(list(c.lr_decay_epochs) == sorted(set(c.lr_decay_epochs)), "lr_decay_epochs", "must be strictly increasing")
    _check(0.0 < c.lr_decay_factor <= 1.0, "lr_decay_factor", f"must be in (0, 1], got {c.lr_decay_factor}")
    _check(0.0 <= c.momentum < 1.0, "momentum", f"must be in [0, 1), got {c.momentum}")
    _check(c.weight_decay >= 0.0, "weight_decay", f"must be >= 0, got {c.weight_decay}")
    _check(0.0 <= c.eta_init <= 1.0, "eta_init", f"must be in [0, 1], got {c.eta_init}")
    _check(c.eta_lr > 0, "eta_lr", f"must be positive, got {c.eta_lr}")
    _check(c.eta_start_epoch >= 1, "eta_start_epoch", f"must be >= 1 (epochs count from 1), got {c.eta_start_epoch}")
    _check(c.eta_every >= 1, "eta_every", f"must be >= 1, got {c.eta_every}")
    _check(c.eta_rule in ETA_RULES, "eta_rule", f"unknown rule {c.eta_rule!r}; choose one of {', '.join(ETA_RULES)}")
    _check(c.eta_eps > 0, "eta_eps", f"must be positive, got {c.eta_eps}")
    _check(0.0 <= c.eta_min <= c.eta_init, "eta_min", f"must be in [0, eta_init={c.eta_init}], got {c.eta_min}")
    _check(c.verbose in (0, 1, 2), "verbose", f"must be 0, 1 or 2, got {c.verbose}")
