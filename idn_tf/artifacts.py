"""The run folder: atomic writes of artifacts and reading them back.

Every artifact is written to a temporary file in the same folder and renamed
into place, so a killed run never leaves a half-written file under the final
name (rename is atomic on POSIX file systems).
"""

import json
import math
import os
import shutil
import tempfile

import numpy as np


def default_mode(path):
    """chmod `path` as open()/mkdir() would have made it (mkstemp/mkdtemp make it private:
    0600/0700), so a run's files and exports are readable as usual, e.g. by a TF Serving
    container running as another user."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~umask)


def _atomic_path(path, write_to, suffix):
    """write_to(temporary path) in `path`'s folder, then rename it to `path`."""
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=suffix)
    os.close(fd)
    try:
        write_to(tmp)
        default_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _atomic(path, write, suffix):
    """write(binary file object), atomically as `_atomic_path`."""
    def write_to(tmp):
        with open(tmp, "wb") as f:
            write(f)

    _atomic_path(path, write_to, suffix)


def _finite(obj):
    """obj with NaN and ±inf floats as None: JSON has no NaN (json.dumps would write NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def write_json(path, obj):
    """JSON, NaN written as null (e.g. rates undefined without clean labels)."""
    text = json.dumps(_finite(obj), indent=2, sort_keys=True, allow_nan=False) + "\n"
    _atomic(path, lambda f: f.write(text.encode()), ".json")


def write_text(path, text):
    _atomic(path, lambda f: f.write(text.encode()), ".txt")


def write_bytes(path, data):
    _atomic(path, lambda f: f.write(data), os.path.splitext(path)[1])


def write_npy(path, array):
    _atomic(path, lambda f: np.save(f, array), ".npy")


def write_npz(path, **arrays):
    _atomic(path, lambda f: np.savez(f, **arrays), ".npz")


def write_weights(path, model):
    """A Keras model's weights to `path` (must end in .weights.h5), atomically."""
    _atomic_path(path, model.save_weights, ".weights.h5")


def read_numbers(path, ndmin=1):
    """The numbers of a file a user gives (.npy, or text with spaces or commas between
    them), as numpy reads them (a text file's with at least `ndmin` dimensions); OSError
    or ValueError if it cannot."""
    if path.endswith(".npy"):
        return np.load(path, allow_pickle=False)
    with open(path) as f:
        text = f.read()
    return np.loadtxt(path, delimiter="," if "," in text else None, ndmin=ndmin)


def read_json(path):
    with open(path) as f:
        return json.load(f)


def flags_text(config_dict):
    """A flagfile that reproduces the run: one --name=value line per field."""
    lines = []
    for name, value in sorted(config_dict.items()):
        if isinstance(value, bool):
            lines.append(f"--{name}" if value else f"--no{name}")
        elif isinstance(value, (tuple, list)):
            lines.append(f"--{name}={','.join(str(v) for v in value)}")
        else:
            lines.append(f"--{name}={value}")
    return "\n".join(lines) + "\n"


class RunDirError(OSError):
    """The run folder cannot be used; the message is one line saying why."""


# What a run writes; --overwrite removes them first so that nothing of the
# previous configuration can be reused after an interrupted overwrite.
RUN_SETTINGS = ("config.json", "flags.txt")
# Written at the start of a run, like the settings: not a result (a run that stops after
# writing it can be started again with other flags).
RUN_RECORDS = ("excluded_images.csv",)
RUN_RESULTS = ("noisy_labels.npz", "psi.npy", "stage1.json", "stage1.weights.h5",
               "stage1.selected.npz",
               "classifier.weights.h5", "finetune.json", "finetuned.weights.h5",
               "finetune.selected.npz", "label_audit.csv", "label_issues.html", "results.json")
# (and each method's own: its stages' <stage>.json and its files, `methods.run_files`)
RUN_ARTIFACTS = RUN_SETTINGS + RUN_RECORDS + RUN_RESULTS
# TensorBoard events, figures, BackupAndRestore, label_issues.html's thumbnails
RUN_FOLDERS = ("tb", "plots", "backup", "label_issues_files")


def _saved_config(path):
    """The dict in a run folder's config.json; RunDirError when it is unreadable or not a
    JSON object (the results next to it can then not be matched to any flags)."""
    try:
        saved = read_json(path)
    except (OSError, ValueError) as e:  # ValueError: JSONDecodeError, UnicodeDecodeError
        why = getattr(e, "strerror", None) or (str(e).splitlines() or [type(e).__name__])[0]
    else:
        if isinstance(saved, dict):
            return saved
        why = f"not a JSON object: {json.dumps(saved)[:40]}"
    raise RunDirError(f"{path} is damaged ({why}): the run in that folder cannot be checked "
                      "against these flags; choose another --run_dir or pass --overwrite")


def remove(run_dir, names):
    """Deletes the files and folders `names` (relative to run_dir) that exist."""
    try:
        for name in names:
            path = os.path.join(run_dir, name)
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.lexists(path):
                os.remove(path)
    except OSError as e:
        raise RunDirError(f"--run_dir={run_dir}: cannot delete {name} ({e.strerror or e})") from None


def prepare_run_dir(run_dir, config_dict, flags_dict, overwrite=False, later_stage_fields=(),
                    later_stage_paths=(), method_files=()):
    """Creates `run_dir` or checks that the run already in it had the same configuration.

    Writes config.json (`config_dict`: the fields that decide what is computed)
    and flags.txt (a flagfile of `flags_dict` that reproduces the run). Refuses, without touching anything, a
    folder whose config.json differs unless `overwrite`, which first deletes
    the previous run's artifacts. A folder holding only config.json and flags.txt (a
    run that stopped before its first result, e.g. on missing data) is taken over.
    A run whose configuration differs only in `later_stage_fields` (flags of a stage
    that runs after the others, e.g. fine-tuning) is continued: `later_stage_paths`
    (files or folders relative to `run_dir`) are deleted and the rest is kept.
    `method_files`: the files the methods write besides `RUN_RESULTS` (results too).
    RunDirError (one line) when `run_dir` is a file, when a folder holding results has a
    damaged config.json (unless `overwrite`), or when the folder cannot be written.
    """
    current = json.loads(json.dumps(config_dict))  # tuples -> lists, as saved
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise RunDirError(f"--run_dir={run_dir} is a file, not a folder; choose another --run_dir")
    saved_path = os.path.join(run_dir, "config.json")
    run_results = RUN_RESULTS + tuple(method_files)
    results = [n for n in run_results if os.path.isfile(os.path.join(run_dir, n))]
    if os.path.isdir(os.path.join(run_dir, "backup")) and os.listdir(os.path.join(run_dir, "backup")):
        results.append("backup")  # a killed run's epochs: resumable only with the same flags
    if os.path.isfile(saved_path) and results and not overwrite:
        saved = _saved_config(saved_path)
        changed = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
        if changed and set(changed) <= set(later_stage_fields):
            remove(run_dir, later_stage_paths)
        elif changed:
            what = ", ".join(f"--{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in changed[:3])
            raise RunDirError(f"--run_dir={run_dir} holds a run with other flags ({what}); "
                              "choose another --run_dir or pass --overwrite")
    try:
        os.makedirs(run_dir, exist_ok=True)
        if overwrite:
            for name in RUN_ARTIFACTS + tuple(method_files):
                if os.path.isfile(os.path.join(run_dir, name)):
                    os.remove(os.path.join(run_dir, name))
            for name in RUN_FOLDERS:
                shutil.rmtree(os.path.join(run_dir, name), ignore_errors=True)
        write_json(saved_path, current)
        write_text(os.path.join(run_dir, "flags.txt"), flags_text(flags_dict))
    except OSError as e:
        raise RunDirError(f"--run_dir={run_dir}: cannot write there ({e.strerror or e})") from None
