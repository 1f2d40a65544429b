"""The bad-input matrix of `python -m idn_tf.train`: one parametrised case per row.

Every row runs the real CLI in a folder of its own and must give: exit code 2; stderr
exactly one line, starting with "error:" and naming the problem (the row's `expect`); no
traceback; and afterwards a folder holding exactly what the row put there, byte for byte
and with the same modification times (no partial artifact, nothing destroyed).

Each row's command line starts with a short schedule (SHORT), so that a bad value that
slips through fails in seconds rather than after a full default run; the row's own flags
come after it and win.

A fresh CLI process spends ~2 s of CPU importing before it can refuse anything. So the
rows selected for a session run concurrently, as one batch, when the first of them is
checked, and most of them in forks of a process that has done those imports once
("Running the rows" below); a few of every kind run as a fresh interpreter.
"""

import concurrent.futures
import dataclasses
import hashlib
import json
import os
import shutil
import stat
import struct
import subprocess
import sys
import threading
import zipfile

import numpy as np
import pytest

from idn_tf import flagdefs

import cli as cli_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHORT = ("--epochs=1", "--eta_start_epoch=1", "--lr_decay_epochs=", "--verbose=0",
         "--monitor_every=5", "--export_dir=", "--audit_folds=2")
TIMEOUT = 300  # seconds per CLI process


@dataclasses.dataclass(frozen=True)
class Row:
    """One bad input: the CLI arguments after SHORT, and a substring of the error line."""
    args: tuple
    expect: str
    setup: object = None  # setup(folder: pathlib.Path, finished_run: path or None)
    env: dict = dataclasses.field(default_factory=dict)  # extra variables; None unsets one
    uses_finished_run: bool = False  # setup copies the folder of a real finished run


def _flags(*types):
    """Names of the flags of idn_tf.flagdefs whose absl type is one of `types`."""
    return sorted(f.name for f in flagdefs.FLAGS.get_flags_for_module("idn_tf.flagdefs")
                  if f.flag_type() in types)


ROWS = {}


def row(name, *args, expect, **kwargs):
    assert name not in ROWS, name
    ROWS[name] = Row(tuple(args), expect, **kwargs)


# ---------------------------------------------------------------------------------------
# Flags: unknown choices, numbers out of range, values that do not parse

for _name in _flags("string enum"):
    row(f"{_name}=bogus", f"--{_name}=bogus", expect=f"--{_name}")

# One out-of-range value for every integer and float flag (a test below checks that each
# numeric flag of flagdefs has one, and that the value itself parses).
OUT_OF_RANGE = {
    "noise_rate": "1.5", "kmeans_clusters": "0", "noise_feature_dims": "0",
    "noise_feature_size": "8", "mlp_hidden_units": "0", "mlp_epochs": "0",
    "mlp_target_accuracy": "2", "seed": "-1", "crop_padding": "-1", "epochs": "0",
    "batch_size": "0", "lr": "0", "lr_decay_factor": "0", "momentum": "1",
    "weight_decay": "-1", "eta_init": "1.2", "eta_lr": "0", "eta_start_epoch": "0",
    "eta_every": "0", "eta_eps": "0", "eta_min": "0.02",  # above eta_init (0.01)
    "monitor_every": "0", "test_every": "0", "val_fraction": "0.6", "verbose": "3", "subset_fraction": "0", "image_size": "0",
    "resize": "8",  # below --image_size (224)
    "test_fraction": "1",
    "finetune_clean_epochs": "-1", "finetune_lr": "0",
    "forward_percentile": "0", "bootstrap_soft_beta": "1.5", "bootstrap_hard_beta": "-0.1",
    "dmi_lr": "0", "dmi_eps": "0", "coteaching_t_k": "0", "tanaka_alpha": "-1",
    "tanaka_beta": "-0.5", "tanaka_start_epoch": "-1", "tanaka_average_epochs": "0",
    "tanaka_lr": "-0.1", "pencil_alpha": "-0.1",
    "pencil_beta": "-1", "pencil_lambda": "-600", "pencil_joint_start": "-1",
    "pencil_finetune_start": "-2", "elr_beta": "1", "elr_lambda": "-1",
    "sop_lr_u": "-1", "sop_lr_v": "-10", "sop_init_std": "0", "sop_balance": "-0.1",
    "dividemix_lambda_u": "-1", "dividemix_p_threshold": "1", "dividemix_temperature": "0",
    "dividemix_alpha": "0", "dividemix_warmup_epochs": "-1", "dividemix_rampup_epochs": "-1",
    "psi_folds": "1", "q_ensemble": "1", "audit_folds": "1",
}

for _name, _value in OUT_OF_RANGE.items():
    row(f"{_name}={_value}", f"--{_name}={_value}", expect=f"--{_name}")
for _name in _flags("float"):  # absl parses "inf" and "nan" as floats
    row(f"{_name}=inf", f"--{_name}=inf", expect=f"--{_name}")
    row(f"{_name}=nan", f"--{_name}=nan", expect=f"--{_name}")
row("seed=2**32", "--seed=4294967296", expect="--seed")
row("noise_rate=-0.1", "--noise_rate=-0.1", expect="--noise_rate")
row("lr=-0.1", "--lr=-0.1", expect="--lr")
row("val_fraction=-0.1", "--val_fraction=-0.1", expect="--val_fraction")
row("epochs=abc", "--epochs=abc", expect="--epochs")
row("seed=1.5", "--seed=1.5", expect="--seed")
row("lr=fast", "--lr=fast", expect="--lr")
row("lr_decay_epochs=a,b", "--lr_decay_epochs=a,b", expect="--lr_decay_epochs")
row("lr_decay_epochs=0", "--lr_decay_epochs=0", expect="--lr_decay_epochs")
row("lr_decay_epochs=20,10", "--lr_decay_epochs=20,10", expect="--lr_decay_epochs")
row("unknown-flag", "--epoch=3", expect="'epoch'")
row("positional-argument", "3", expect="unexpected arguments '3'")
row("flagfile-missing", "--flagfile=missing.cfg", expect="missing.cfg")

# Flags that are wrong together (or for the data).
row("psi_source=selected-without-validation", "--psi_source=selected", "--val_fraction=0",
    expect="--psi_source")
row("q_ensemble=-0.1", "--q_ensemble=-0.1", expect="--q_ensemble")
row("psi_folds-above-the-examples", "--psi_source=crossval", "--psi_folds=5000",
    expect="--psi_folds")
row("audit_folds-above-the-examples", "--audit_folds=5000", expect="--audit_folds")
row("audit_folds=-1", "--audit_folds=-1", expect="--audit_folds")
row("psi_mode=train-with-crossval", "--psi_source=crossval", "--psi_mode=train",
    expect="--psi_mode")
row("npz-without-npz_path", "--dataset=npz", expect="--npz_path")
row("arch-too-big-for-the-images", "--arch=resnet50", expect="--arch")  # digits are 8x8
row("backbone_weights-without-resnet50", "--backbone_weights=imagenet",
    expect="--backbone_weights")
row("noisy_label_key-on-digits", "--noisy_label_key=worst", expect="--noisy_label_key")
row("noisy_label_key-unknown", "--dataset=cifar10_n", "--noisy_label_key=best",
    expect="--noisy_label_key")
row("model_name-with-slash", "--model_name=a/b", expect="--model_name")
# --export_class_names: K distinct non-empty names, K counted in the data (digits: 10).
row("export_class_names-too-few", "--export_class_names=zero,one",
    expect="--export_class_names: 2 name(s) for the 10 classes of digits")
row("export_class_names-repeated", "--export_class_names=a,b,c,d,e,f,g,h,i,a",
    expect="--export_class_names: 'a' is already class 0")
row("export_class_names-empty-name", "--export_class_names=a,,c,d,e,f,g,h,i,j",
    expect="--export_class_names: class 1 has no name")
row("export_class_names-quoted-comma", '--export_class_names="a,b",c,d,e,f,g,h,i,j',
    expect="--export_class_names: 'a,b': a name cannot hold a comma")
row("clean_train-mix-with-forward", *("--dataset=clothing1m", "--data_dir=c1m"),
    "--clean_train=mix", "--method=forward", expect="--clean_train")

# The stateful baselines' settings (SHORT has --epochs=1).
row("coteaching_tau=bogus", "--method=coteaching", "--coteaching_tau=bogus",
    expect="--coteaching_tau")
row("coteaching_tau=1", "--method=coteaching", "--coteaching_tau=1", expect="--coteaching_tau")
row("coteaching_tau=-0.1", "--coteaching_tau=-0.1", expect="--coteaching_tau")
row("tanaka_start_epoch-after-the-last", "--method=tanaka", "--tanaka_start_epoch=2",
    expect="--tanaka_start_epoch")
row("pencil_joint_start-after-the-last", "--method=pencil", "--pencil_joint_start=3",
    "--pencil_finetune_start=3", expect="--pencil_joint_start")
row("pencil_finetune_start-before-joint", "--method=pencil", "--pencil_joint_start=2",
    "--pencil_finetune_start=1", expect="--pencil_finetune_start")

# --method=forward --transition_matrix=<file>: read and checked before the run folder is made.


def _matrix(name, matrix=None, text=None):
    """Setup writing a transition matrix file (numpy array or raw text)."""
    def setup(folder, _):
        if text is not None:
            (folder / name).write_text(text)
        else:
            np.save(folder / name, np.asarray(matrix))
    return setup


_T10 = np.full((10, 10), 0.05) + np.eye(10) * 0.5  # rows sum to 1
row("transition_matrix-wrong-shape", "--method=forward", "--transition_matrix=t.npy",
    expect="--transition_matrix=t.npy: shape (3, 3), expected (10, 10)",
    setup=_matrix("t.npy", np.eye(3)))
row("transition_matrix-negative", "--method=forward", "--transition_matrix=t.npy",
    expect="entries must be finite and >= 0", setup=_matrix("t.npy", _T10 - 0.1))
row("transition_matrix-row-sum", "--method=forward", "--transition_matrix=t.csv",
    expect="row 0 sums to 0.9", setup=_matrix(
        "t.csv", text="\n".join(",".join(str(v) for v in r) for r in np.vstack(
            [_T10[:1] * 0.9, _T10[1:]])) + "\n"))
row("transition_matrix-not-numbers", "--method=forward", "--transition_matrix=t.txt",
    expect="--transition_matrix=t.txt", setup=_matrix("t.txt", text="a b c\n"))
row("transition_matrix-not-npy", "--method=forward", "--transition_matrix=t.npy",
    expect="--transition_matrix=t.npy", setup=_matrix("t.npy", text="not numpy"))

# --method=tanaka --tanaka_prior=<file>: read and checked before the run folder is made.
row("tanaka_prior-wrong-length", "--method=tanaka", "--tanaka_prior=p.npy",
    expect="--tanaka_prior=p.npy: needs 10 class probabilities, got 3",
    setup=_matrix("p.npy", np.full(3, 1 / 3)))
row("tanaka_prior-sum", "--method=tanaka", "--tanaka_prior=p.txt",
    expect="must be non-negative and sum to 1, got sum 0.9",
    setup=_matrix("p.txt", text=" ".join(["0.09"] * 10) + "\n"))
row("tanaka_prior-negative", "--method=tanaka", "--tanaka_prior=p.npy",
    expect="must be non-negative", setup=_matrix("p.npy", np.r_[-0.1, 0.3, np.full(8, 0.1)]))
row("tanaka_prior-not-numbers", "--method=tanaka", "--tanaka_prior=p.txt",
    expect="--tanaka_prior=p.txt", setup=_matrix("p.txt", text="a b c\n"))

# ---------------------------------------------------------------------------------------
# --npz_path: the file, the archive, the arrays


def _arrays():
    """A valid tiny dataset: 20 training / 10 test 8x8 uint8 images, 3 classes."""
    rng = np.random.default_rng(0)
    return dict(x_train=rng.integers(0, 256, (20, 8, 8), dtype=np.uint8),
                y_train=np.arange(20) % 3,
                x_test=rng.integers(0, 256, (10, 8, 8), dtype=np.uint8),
                y_test=np.arange(10) % 3,
                clean_train=np.arange(20) % 3)


def _npz(**changes):
    """Setup writing data.npz: the valid arrays with `changes` (None removes an array)."""
    def setup(folder, _):
        arrays = {**_arrays(), **changes}
        np.savez(folder / "data.npz", **{k: v for k, v in arrays.items() if v is not None})
    return setup


def _write(name, content):
    def setup(folder, _):
        (folder / name).write_bytes(content)
    return setup


def _not_npz_zip(folder, _):
    with zipfile.ZipFile(folder / "data.npz", "w") as archive:
        archive.writestr("readme.txt", "not arrays")


def _npy(folder, _):
    with open(folder / "data.npz", "wb") as f:
        np.save(f, np.zeros(3))


def _corrupt_deflate(folder, _):
    """A compressed npz whose x_train member is not a valid deflate stream (zlib.error)."""
    path = folder / "data.npz"
    np.savez_compressed(path, **_arrays())
    with zipfile.ZipFile(path) as archive:
        offset = archive.getinfo("x_train.npy").header_offset
    data = bytearray(path.read_bytes())
    name_length, extra_length = struct.unpack("<HH", data[offset + 26:offset + 30])
    data[offset + 30 + name_length + extra_length] = 0xFF  # a block of the reserved type 3
    path.write_bytes(bytes(data))


def _encrypted(folder, _):
    """An npz whose central directory marks x_train as encrypted (zipfile: RuntimeError)."""
    path = folder / "data.npz"
    np.savez(path, **_arrays())
    data = bytearray(path.read_bytes())
    end = data.rindex(b"PK\x05\x06")  # the end-of-central-directory record
    (entry,) = struct.unpack("<I", data[end + 16:end + 20])  # the first directory entry
    data[entry + 8] |= 1  # its general purpose flag bit 0: encrypted
    path.write_bytes(bytes(data))


NPZ = ("--dataset=npz", "--npz_path=data.npz")
# Needs of the baselines' settings, checked against the data before the run folder is made.
row("transition_matrix=true-without-clean-labels", *NPZ, "--method=forward",
    "--transition_matrix=true", expect="--transition_matrix=true: the clean labels",
    setup=_npz(clean_train=None))
row("dmi_batches=cover-batch-below-the-classes", "--method=ldmi", "--batch_size=5",
    expect="--batch_size: must be at least the 10 classes for --dmi_batches=cover")
row("npz-missing", "--dataset=npz", "--npz_path=missing.npz", expect="not found: missing.npz")
row("npz-is-a-folder", *NPZ, expect="data.npz is a folder",
    setup=lambda folder, _: (folder / "data.npz").mkdir())
row("npz-text-file", *NPZ, expect="not an .npz archive", setup=_write("data.npz", b"0 1 2\n"))
row("npz-bare-npy", *NPZ, expect="not an .npz archive", setup=_npy)
row("npz-zip-without-arrays", *NPZ, expect="missing array(s) x_train, y_train, x_test, y_test",
    setup=_not_npz_zip)
row("npz-corrupt-compressed-data", *NPZ, expect="cannot read the npz archive",
    setup=_corrupt_deflate)
row("npz-encrypted", *NPZ, expect="is encrypted", setup=_encrypted)
for _key in ("x_train", "y_train", "x_test", "y_test"):
    row(f"npz-without-{_key}", *NPZ, expect=f"missing array(s) {_key};",
        setup=_npz(**{_key: None}))
row("npz-y_train-shorter", *NPZ, expect="y_train has 19 labels but x_train has 20",
    setup=_npz(y_train=np.arange(19) % 3))
row("npz-y_test-longer", *NPZ, expect="y_test has 11 labels but x_test has 10",
    setup=_npz(y_test=np.arange(11) % 3))
row("npz-clean_train-length", *NPZ, expect="clean_train has 5 labels",
    setup=_npz(clean_train=np.zeros(5, np.int64)))
row("npz-y_train-negative", *NPZ, expect="y_train has label -1 outside [0, K)",
    setup=_npz(y_train=np.arange(20) % 3 - 1))
row("npz-y_test-negative", *NPZ, expect="y_test has label -1 outside [0, K)",
    setup=_npz(y_test=np.arange(10) % 3 - 1))
row("npz-clean_train-below-unknown", *NPZ, expect="clean_train has label -2",
    setup=_npz(clean_train=np.full(20, -2)))
# K is the largest label + 1, so no label is >= K; a huge one is taken to be corrupt data.
row("npz-y_train-huge", *NPZ, expect="y_train has label 1000000 >= 100000",
    setup=_npz(y_train=np.full(20, 10**6)))
row("npz-y_test-huge", *NPZ, expect="y_test has label 1000000 >= 100000",
    setup=_npz(y_test=np.full(10, 10**6)))
row("npz-labels-float", *NPZ, expect="y_train must be integer class ids",
    setup=_npz(y_train=(np.arange(20) % 3).astype(np.float32)))
row("npz-labels-rank-2", *NPZ, expect="y_train must have shape [N] or [N, 1]",
    setup=_npz(y_train=np.zeros((20, 2), np.int64)))
row("npz-one-class", *NPZ, expect="need at least 2",
    setup=_npz(y_train=np.zeros(20, np.int64), y_test=np.zeros(10, np.int64),
               clean_train=None))
_nan_images = np.full((20, 8, 8), 128.0, np.float32)
_nan_images[3, 4, 5] = np.nan
row("npz-images-float-with-nan", *NPZ, expect="got dtype float32 holding NaN",
    setup=_npz(x_train=_nan_images))
row("npz-images-rank-2", *NPZ, expect="x_train must have shape [N, H, W] or [N, H, W, C]",
    setup=_npz(x_train=np.zeros((20, 64), np.uint8)))
row("npz-images-rank-5", *NPZ, expect="x_test must have shape [N, H, W] or [N, H, W, C]",
    setup=_npz(x_test=np.zeros((10, 8, 8, 1, 1), np.uint8)))
row("npz-images-bool", *NPZ, expect="x_train must be uint8 images (0..255), got dtype bool",
    setup=_npz(x_train=np.zeros((20, 8, 8), bool)))
row("npz-images-complex", *NPZ, expect="got dtype complex128",
    setup=_npz(x_test=np.zeros((10, 8, 8), complex)))
row("npz-images-object", *NPZ, expect="Object arrays cannot be loaded",
    setup=_npz(x_train=np.array([None] * 20, dtype=object)))
row("npz-no-images", *NPZ, expect="no empty axis",
    setup=_npz(x_train=np.zeros((0, 8, 8), np.uint8), y_train=np.zeros(0, np.int64),
               clean_train=None))
row("npz-val_fraction-leaves-a-class-without-validation", *NPZ,
    expect="--val_fraction: 0.1 of the 1 example(s) labelled 2 leaves that class without "
           "validation examples",
    setup=_npz(y_train=np.array([0] * 10 + [1] * 9 + [2]), clean_train=None))
row("npz-train-and-test-image-sizes-differ", *NPZ, expect="but x_test images are",
    setup=_npz(x_test=np.zeros((10, 9, 9), np.uint8)))

# ---------------------------------------------------------------------------------------
# --run_dir and --export_dir


def _fake_run(config_text):
    """Setup: a run folder with a result (psi.npy) next to `config_text` (str or bytes) as
    its config.json."""
    def setup(folder, _):
        (folder / "run").mkdir()
        (folder / "run" / "config.json").write_bytes(
            config_text if isinstance(config_text, bytes) else config_text.encode())
        np.save(folder / "run" / "psi.npy", np.zeros(3, np.float32))
    return setup


# The flags of the finished run (conftest.DIGITS_RUN) after SHORT: a row adds the one flag it
# changes (the row's expected error names that flag alone).
FINISHED = ("--epochs=3", "--eta_start_epoch=2", "--eta_every=1", "--lr_decay_epochs=2")


def _copy_finished_run(folder, finished_run):
    shutil.copytree(finished_run, folder / "run")
    (folder / "run" / "notes.txt").write_text("the user's own file\n")


row("run_dir-is-a-file", "--run_dir=run", expect="--run_dir=run is a file",
    setup=_write("run", b"not a folder\n"))
row("run_dir-is-a-file-with-export", "--run_dir=run", "--export_dir=exports",
    expect="--run_dir=run is a file", setup=_write("run", b"not a folder\n"))  # no exports/
row("run_dir-parent-is-a-file", "--run_dir=afile/run",
    expect="--run_dir=afile/run: cannot write there (Not a directory)",
    setup=_write("afile", b"not a folder\n"))
row("run_dir-cannot-be-created", "--run_dir=/proc/idn_tf_run",  # not even by root
    expect="--run_dir=/proc/idn_tf_run: cannot write there")
row("run_dir-not-writable", "--run_dir=/proc", expect="--run_dir=/proc: cannot write there")
row("run_dir-config-not-json", "--run_dir=run", expect="run/config.json is damaged",
    setup=_fake_run("{not json"))
row("run_dir-config-not-utf8", "--run_dir=run", expect="run/config.json is damaged",
    setup=_fake_run(b"\xff\xfe{}"))
row("run_dir-config-not-an-object", "--run_dir=run", expect="not a JSON object",
    setup=_fake_run("[1, 2]"))
row("run_dir-other-epochs", "--run_dir=run", *FINISHED, "--epochs=2",
    expect="other flags (--epochs: 3 -> 2)", setup=_copy_finished_run, uses_finished_run=True)
row("run_dir-other-lr", "--run_dir=run", *FINISHED, "--lr=0.1",
    expect="other flags (--lr: 0.05 -> 0.1)", setup=_copy_finished_run, uses_finished_run=True)
row("export_dir-is-a-file", "--run_dir=run", "--export_dir=afile",
    expect="--export_dir=afile: cannot write", setup=_write("afile", b"not a folder\n"))

# ---------------------------------------------------------------------------------------
# TF_CONFIG with --strategy=multi_worker


def _tf_config(name, value, expect):
    env = {"TF_CONFIG": value if isinstance(value, str) or value is None else json.dumps(value)}
    row(f"tf_config-{name}", "--strategy=multi_worker", expect=f"TF_CONFIG: {expect}", env=env)


_TASK = {"type": "worker", "index": 0}
_tf_config("unset", None, "not set")
_tf_config("empty", "", "not set")
_tf_config("not-json", "{cluster: worker}", "not valid JSON")
_tf_config("json-array", [{"cluster": {}}], "not a JSON object")
_tf_config("no-cluster", {"task": _TASK}, 'no "cluster" object')
_tf_config("empty-role", {"cluster": {"worker": []}, "task": _TASK}, 'cluster "worker" must')
_tf_config("address-without-port", {"cluster": {"worker": ["localhost"]}, "task": _TASK},
           'cluster "worker" must be a non-empty list of "host:port" strings')
_tf_config("no-chief-or-worker", {"cluster": {"ps": ["h:1"]}, "task": {"type": "ps", "index": 0}},
           'the cluster has neither "chief" nor "worker"')
_tf_config("no-task", {"cluster": {"worker": ["h:1"]}}, '"task" must name a "type"')
_tf_config("task-type-not-in-cluster", {"cluster": {"worker": ["h:1"]},
                                        "task": {"type": "chief", "index": 0}},
           '"task" must name a "type" of the cluster (worker)')
_tf_config("index-out-of-range", {"cluster": {"worker": ["h:1", "h:2"]},
                                  "task": {"type": "worker", "index": 2}},
           '"task" "index" must be an integer in [0, 2)')
_tf_config("index-negative", {"cluster": {"worker": ["h:1"]},
                              "task": {"type": "worker", "index": -1}},
           '"task" "index" must be an integer in [0, 1)')
_tf_config("index-not-an-int", {"cluster": {"worker": ["h:1"]},
                                "task": {"type": "worker", "index": "0"}},
           '"task" "index" must be an integer')


# ---------------------------------------------------------------------------------------
# --dataset=clothing1m: the folder, its lists and images, and the flags only it takes

C1M = ("--dataset=clothing1m", "--data_dir=c1m", "--arch=small_cnn", "--backbone_weights=none",
       "--image_size=16", "--resize=20", "--batch_size=8")


def _clothing1m(change=None, **options):
    """Setup writing a tiny Clothing1M folder c1m/, then `change(root, fake)` to it."""
    def setup(folder, _):
        from idn_tf.data import clothing1m
        counts = {"noisy": 12, "clean_train": 4, "clean_val": 2, "clean_test": 2,
                  **options.pop("counts", {})}
        fake = clothing1m.make_fake_clothing1m(str(folder / "c1m"), counts=counts, **options)
        if change is not None:
            change(folder / "c1m", fake)
    return setup


def _noisy_key(root, line):
    """The image key on 1-based `line` of the noisy training list."""
    return (root / "noisy_train_key_list.txt").read_text().splitlines()[line - 1]


def _relabel(root, _):
    """Gives the 5th noisy image the label 14 in noisy_label_kv.txt."""
    key = _noisy_key(root, 5)
    path = root / "noisy_label_kv.txt"
    lines = [f"{key} 14" if line.split()[0] == key else line
             for line in path.read_text().splitlines()]
    path.write_text("\n".join(lines) + "\n")


row("c1m-without-data_dir", "--dataset=clothing1m", expect="--data_dir")
row("c1m-data_dir-missing", *C1M, "--data_dir=nowhere", expect="folder not found")
row("c1m-list-missing", *C1M, expect="clean_val_key_list.txt",
    setup=_clothing1m(lambda root, _: (root / "clean_val_key_list.txt").unlink()))
row("c1m-image-missing", *C1M, expect="noisy_train_key_list.txt, line 3",
    setup=_clothing1m(lambda root, _: (root / _noisy_key(root, 3)).unlink()))
row("c1m-image-corrupt", *C1M, expect="noisy_train_key_list.txt, line 7",  # row 12 // 2
    setup=_clothing1m(corrupt=True))
row("c1m-label-14", *C1M, expect="noisy_label_kv.txt, line", setup=_clothing1m(_relabel))
row("c1m-noise-kmeans", *C1M, "--noise=kmeans", expect="--noise", setup=_clothing1m())
row("c1m-oversample-two-weights", *C1M, "--oversample=1,2", expect="--oversample")
row("c1m-oversample-below-one", *C1M, "--oversample=" + ",".join(["1"] * 13 + ["0.5"]),
    expect="--oversample")
row("c1m-oversample-bogus", *C1M, "--oversample=bogus", expect="--oversample")
row("c1m-mix-odd-batch", *C1M, "--clean_train=mix", "--batch_size=7", expect="--batch_size")
row("c1m-mix-without-clean-train", *C1M, "--clean_train=mix",
    expect="clean training list is empty",
    setup=_clothing1m(counts={"clean_train": 0}, overlap=0))
row("oversample-on-digits", "--oversample=auto", expect="--oversample")
row("clean_train-on-digits", "--clean_train=mix", expect="--clean_train")
row("skip_bad_images-on-digits", "--skip_bad_images", expect="--skip_bad_images")
# The recipe's ImageNet weights, offline (a proxy that refuses, an empty Keras cache): the
# run stops before it reads the data.
row("c1m-imagenet-offline", *C1M, "--arch=resnet50", "--backbone_weights=imagenet",
    expect="--backbone_weights=imagenet: could not load the ImageNet ResNet-50 weights",
    setup=_clothing1m(),
    env={"https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
         "KERAS_HOME": os.path.join(os.path.realpath("/tmp"), "idn_tf-tests-empty-keras-home")})

FOLDER = ("--dataset=folder", "--data_dir=photos", "--arch=small_cnn",
          "--backbone_weights=none", "--image_size=16", "--resize=20", "--batch_size=8")


def _photos(change=None, **options):
    """Setup writing a small class folder photos/ (tests/image_folders.py), then
    `change(root)` to it."""
    def setup(folder, _):
        import image_folders
        image_folders.make_image_folder(str(folder / "photos"), **{"per_class": 6, **options})
        if change is not None:
            change(folder / "photos")
    return setup


def _names(*names):
    return _write("names.txt", "".join(f"{n}\n" for n in names).encode())


def _both(*setups):
    def setup(folder, finished):
        for each in setups:
            each(folder, finished)
    return setup


row("folder-without-data_dir", "--dataset=folder", expect="--data_dir: required")
row("folder-data_dir-missing", *FOLDER, "--data_dir=nowhere", expect="image folder not found")
row("folder-no-class-folders", *FOLDER, expect="no class folders",
    setup=lambda folder, _: (folder / "photos").mkdir())
row("folder-empty-class-folder", *FOLDER, expect="class folder 'emu' has no images",
    setup=_photos(lambda root: (root / "emu").mkdir()))
# What cannot be learned: one class (issue 29: it trained, exported and exited 0), and a
# class too small to give the test split (0.2), the validation split (0.1) and training
# an image each (6: test 1, then 1 of the 5 left validates).
row("folder-one-class", *FOLDER, expect="photos: images of one class only ('cat')",
    setup=_photos(classes=("cat",), per_class=26))
row("folder-class-too-small", *FOLDER,
    expect="class folder 'fox' has 5 image(s); a class needs at least 6",
    setup=_photos(lambda root: (root / "fox" / "img005.jpg").unlink()))
row("folder-image-corrupt", *FOLDER, expect="damaged image file",
    setup=_photos(corrupt=("dog", 1)))
row("folder-not-in-class_names", *FOLDER, "--class_names=names.txt",
    expect="class folder 'fox' is not in --class_names",
    setup=_both(_photos(), _names("cat", "dog")))
row("folder-test-class-not-in-train", *FOLDER, expect="has no folder in",
    setup=_photos(lambda root: shutil.copytree(root / "test" / "fox", root / "test" / "emu"),
                  split=True))
row("class_names-missing", *NPZ, "--class_names=nowhere.txt",
    expect="class names file not found", setup=_npz())
row("class_names-repeated", *NPZ, "--class_names=names.txt", expect="'a' is already class 0",
    setup=_both(_npz(), _names("a", "b", "a")))
row("npz-label-outside-class_names", *NPZ, "--class_names=names.txt",
    expect="y_train has label 2, outside [0, 2) of the 2 classes in names.txt",
    setup=_both(_npz(), _names("ant", "bee")))
row("npz-stray-label-99", *NPZ, expect="odd labels: 99); fix the labels, or pass --class_names",
    setup=_npz(y_train=np.where(np.arange(20) == 7, 99, np.arange(20) % 3)))
row("class_names-on-digits", "--class_names=names.txt", expect="--class_names: applies to",
    setup=_names("a", "b"))
# K of an npz is its labels' (3 here), checked before the export folder is made.
row("export_class_names-too-many-for-npz", *NPZ, "--export_dir=exports",
    "--export_class_names=ant,bee,cow,dog", expect="4 name(s) for the 3 classes of npz",
    setup=_npz())
row("test_fraction-on-digits", "--test_fraction=0.3", expect="--test_fraction: applies to")

# ---------------------------------------------------------------------------------------
# A tfds dataset not prepared in --data_dir (a folder that does not exist yet), offline
# behind a proxy that refuses, tfds's retries as they are: the probe of the download host
# stops the run before tfds starts, so not even tfds/ is made (test_train.py runs the same
# as a fresh interpreter and bounds its time).

row("cifar10-offline", "--dataset=cifar10", "--data_dir=tfds",
    expect="dataset cifar10 is not prepared in tfds and could not be prepared here "
           "(https://www.cs.toronto.edu/~kriz/ cannot be reached: ProxyError: ",
    env={"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9",
         "https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9",
         "NO_PROXY": None, "no_proxy": None})

# ---------------------------------------------------------------------------------------
# Running the rows
#
# A fresh `python -m idn_tf.train` spends ~2 s of CPU importing (scikit-learn, matplotlib)
# before it can refuse anything. So the rows in REAL_CLI (one or more of each kind) run as
# exactly that, and the others in a fork of a "zygote" process that has done those imports
# once (cli.Zygote: each fork runs train.py as __main__, as `-m` does, with the row's
# folder, environment, argv, stdout and stderr).

REAL_CLI = {"dataset=bogus", "epochs=0", "epochs=abc", "positional-argument",
            "npz-text-file", "npz-images-float-with-nan", "run_dir-is-a-file",
            "run_dir-other-epochs", "tf_config-not-json", "c1m-image-corrupt",
            "folder-empty-class-folder", "folder-one-class", "folder-class-too-small",
            "npz-label-outside-class_names", "export_class_names-too-few"}



def cli_env(env_changes=()):
    """The environment of a CLI process: quiet TensorFlow, this checkout, no TF_CONFIG."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])))
    env.pop("TF_CONFIG", None)
    for key, value in dict(env_changes).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def cli(args, cwd, env_changes=()):
    """`python -m idn_tf.train args` in `cwd`, a fresh interpreter."""
    try:
        return subprocess.run([sys.executable, "-m", "idn_tf.train", *args], cwd=cwd,
                              env=cli_env(env_changes), capture_output=True, text=True,
                              timeout=TIMEOUT)
    except subprocess.TimeoutExpired as e:
        return subprocess.CompletedProcess(e.cmd, None, "", f"timed out after {TIMEOUT} s")


def snapshot(folder):
    """{path under folder: (file type, sha256 of a file's bytes, mtime in ns)}."""
    state = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(root, name)
            info = os.lstat(path)
            digest = None
            if stat.S_ISREG(info.st_mode):
                with open(path, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
            state[os.path.relpath(path, folder)] = (stat.S_IFMT(info.st_mode), digest,
                                                    info.st_mtime_ns)
    return state


@dataclasses.dataclass
class Outcome:
    result: subprocess.CompletedProcess
    before: dict
    after: dict


@pytest.fixture(scope="module")
def finished_run(digits_run):
    """A real run folder: the tiny digits run of conftest.py (its flags: FINISHED). Rows
    copy it; it is never changed."""
    import pathlib
    return pathlib.Path(digits_run[0].run_dir)


@pytest.fixture(scope="module")
def outcomes(request, tmp_path_factory):
    """{row: future Outcome} for the rows of this session, run concurrently."""
    selected = [item.callspec.params["name"] for item in request.session.items
                if item.module is request.module and hasattr(item, "callspec")
                and "name" in item.callspec.params]
    # Rows needing the finished run go last: the others run while it is being made.
    selected.sort(key=lambda name: ROWS[name].uses_finished_run)
    zygotes, local, lock = [], threading.local(), threading.Lock()

    def run_row(name, case):
        folder, args, env = case / "cwd", SHORT + ROWS[name].args, ROWS[name].env
        before = snapshot(folder)
        if name in REAL_CLI:
            result = cli(args, folder, env)
        else:
            if not hasattr(local, "zygote"):
                local.zygote = cli_lib.Zygote(tmp_path_factory.mktemp("zygote") / "log",
                                              cli_env())
                with lock:
                    zygotes.append(local.zygote)
            result = local.zygote.run("idn_tf.train", args, folder, cli_env(env), case,
                                      TIMEOUT)
        return Outcome(result, before, snapshot(folder))

    futures = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 1)) as pool:
        try:
            for name in selected:
                case = tmp_path_factory.mktemp("case")
                (case / "cwd").mkdir()
                if ROWS[name].setup:
                    ROWS[name].setup(case / "cwd", request.getfixturevalue("finished_run")
                                     if ROWS[name].uses_finished_run else None)
                futures[name] = pool.submit(run_row, name, case)
            yield futures
        finally:
            for future in futures.values():
                future.cancel()
            concurrent.futures.wait(futures.values())
            for zygote in zygotes:
                zygote.close()


def _diff(before, after):
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    return [(k, "added" if k not in before else "removed" if k not in after else "changed")
            for k in changed]


@pytest.mark.e2e
@pytest.mark.parametrize("name", list(ROWS))
def test_bad_input_is_one_error_line_and_leaves_the_folder_as_it_was(name, outcomes):
    outcome = outcomes[name].result()
    result = outcome.result
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), (
        result.returncode, result.stderr[-3000:])
    assert ROWS[name].expect in lines[0]
    assert outcome.after == outcome.before, _diff(outcome.before, outcome.after)


def test_every_numeric_flag_has_an_out_of_range_row():
    assert sorted(OUT_OF_RANGE) == _flags("int", "float")
    for name, value in OUT_OF_RANGE.items():  # a range check, not a parse error
        flagdefs.FLAGS[name].parser.parse(value)


def test_every_choice_flag_has_an_unknown_value_row():
    assert {f"{name}=bogus" for name in _flags("string enum")} <= set(ROWS)
    assert {"dataset", "noise", "strategy", "arch"} <= set(_flags("string enum"))


def test_rows_of_every_kind_run_as_a_fresh_interpreter():
    assert REAL_CLI <= set(ROWS)
    kinds = {name.split("=")[0].split("-")[0] for name in REAL_CLI}
    assert {"dataset", "epochs", "npz", "run_dir", "tf_config"} <= kinds


@pytest.mark.e2e
def test_overwrite_reuses_a_folder_whose_run_had_other_flags(finished_run, tmp_path):
    # In-process (`train.run` of SHORT with --epochs=2 --overwrite): the rows above check the
    # CLI; here what matters is what the run does with the folder.
    from idn_tf import config, train
    _copy_finished_run(tmp_path, finished_run)
    run = tmp_path / "run"
    train.run(config.Config(epochs=2, eta_start_epoch=1, lr_decay_epochs=(), verbose=0,
                            monitor_every=5, export_dir="", run_dir=str(run), overwrite=True))
    assert json.loads((run / "config.json").read_text())["epochs"] == 2
    results = json.loads((run / "results.json").read_text())
    assert len(results["method_history"]["val_accuracy"]) == 2
    assert (run / "notes.txt").read_text() == "the user's own file\n"  # not the run's to delete
    assert not [f for f in os.listdir(run) if f.startswith(".tmp-")]
