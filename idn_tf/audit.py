"""The label audit: which observed labels are likely wrong.

`label_audit.csv` has one row per image whose label the run has from the user: the
examples the method trained on, then the validation rows held out of the training split
(--val_fraction), then, for a class folder, the test images (their labels are the user's
own; a benchmark's test labels are checked ones and have no row); most suspect first
(`issue_order`: highest issue_score first). The audit decides from held-out
probabilities p [R, K] where the run has them (--audit_folds: CE classifiers that did not
see the row's label, docs/own_data.md "The label audit"), else from the method's
posterior q of the training rows and the final classifier's p of the others:

    split           train, validation or test
    index           the row in the source's training split (train and validation rows:
                    e.g. the row of an .npz's train arrays; η.npy and ψ.npy hold the
                    trained rows in the order of their index), or in its test split
    path            file sources only (a class folder, Clothing1M): the image file,
                    relative to --data_dir
    observed_label  its observed (possibly noisy) label ỹ_i
    estimated_label argmax_j p_ij: the label the held-out classifiers predict (argmax_j q_ij
                    without them)
    observed_class, estimated_class   the two labels' class names
    issue_score     1 − p_iỹ: the held-out probability that the observed label is wrong
                    (1 − q_iỹ without held-out classifiers); the rows' order
    eta, psi        η_i and ψ_i of the method (training rows; empty for the others)
    q_observed      q_iỹ: the method's posterior (Eq. 8, the final classifier on the
                    un-augmented image, the final η_i and ψ_i) that ỹ_i is the true label
                    (training rows; empty for the others)
    is_label_issue  1 when confident learning's Prune by Noise Rate flags the label on the
                    held-out p of all the rows together (`flags`; without them:
                    estimated_label != observed_label)
    clean_label     the true label where known (synthetic noise, CIFAR-N), else empty

`label_issues.html` shows the flagged rows and each class's most suspect as a static page
(label_report.py), with thumbnails in `label_issues_files/`; `write_reports` writes both,
`report` as a run does (with its console line and `detection`).

`python -m idn_tf.audit --run_dir=runs/<name>` rebuilds them from a finished run
(its flags.txt, noisy_labels.npz, psi.npy, eta.npy, classifier.weights.h5 and
audit_probs.npy; one holding the training rows only, of a run made before the other rows
were audited, audits those alone).
"""

import csv
import io
import os
from typing import NamedTuple

import numpy as np
from sklearn.metrics import precision_score, recall_score

from idn_tf import artifacts, confident_learning, report as report_lib

# The columns in file order; "path" only for file sources.
COLUMNS = ("split", "index", "path", "observed_label", "estimated_label", "observed_class",
           "estimated_class", "issue_score", "eta", "psi", "q_observed", "is_label_issue",
           "clean_label")


class Audited(NamedTuple):
    """The R rows the audit checks, training rows first (`audited_rows`): arrays [R]."""
    split: np.ndarray         # "train", "validation" or "test"
    labels: np.ndarray        # observed labels
    clean_labels: np.ndarray  # -1 where unknown
    index: np.ndarray         # the row in the source's training (or test) split
    paths: object             # str, relative to the data folder; None for arrays


def audited_rows(labels, data, count):
    """The first `count` audited rows of the data view `data`: its N training rows
    (observed `labels` [N]), then, when `count` exceeds N, the rows of its
    `audited_splits()` (validation, then test). `count` is N or N + M."""
    parts = [("train", labels, data.train.clean_labels, data.rows, data.relative_paths())]
    if count > len(labels):
        parts += [(s.split, s.labels, s.clean_labels, s.rows, s.paths)
                  for s in data.audited_splits()]
    total = sum(len(part[1]) for part in parts)
    if total != count:
        raise ValueError(f"{count} audited rows asked for; the data has {len(labels)} "
                         f"training rows and {total - len(labels)} others")
    splits, observed, clean, index, paths = zip(*parts)
    return Audited(np.repeat(splits, [len(x) for x in observed]),
                   *(np.concatenate(x).astype(np.int64) for x in (observed, clean, index)),
                   None if paths[0] is None else np.concatenate(paths))


def issue_scores(probs, labels):
    """1 − probs[i, ỹ_i] [N]: the probability, under `probs` [N, K], that each observed
    label is wrong."""
    labels = np.asarray(labels)
    return 1.0 - np.asarray(probs, np.float64)[np.arange(len(labels)), labels]


def issue_order(score):
    """Example indices, most suspect first: by `score`, highest first; ties by index."""
    score = np.asarray(score)
    return np.lexsort((np.arange(len(score)), -score))


def decision(q, held_out):
    """The probabilities [R, K] the audit decides from: `held_out` where given, else q."""
    return q if held_out is None else np.asarray(held_out)


def flags(q, held_out, labels):
    """is_label_issue [R] bool: confident learning's Prune by Noise Rate on the held-out
    probabilities (`confident_learning.prune_by_noise_rate`); without them, argmax q ≠ ỹ."""
    if held_out is None:
        return np.argmax(q, axis=1) != np.asarray(labels)
    return confident_learning.prune_by_noise_rate(held_out, labels)


def trained_only(values, count):
    """`values` [N] of the training rows, then NaN (an empty cell) up to `count` rows."""
    values = np.asarray(values)
    return np.concatenate([values, np.full(count - len(values), np.nan, values.dtype)])


def audit_columns(q, eta, psi, labels, clean_labels, held_out=None, rows=None,
                  class_names=None, paths=None, split=None):
    """The audit's columns (name -> array [R]), rows in `issue_order`, plus "order":
    the rows' positions 0..R-1 in that order (not written).

    The R rows are the N training rows (`eta`, `psi` [N]), then any others (`audited_rows`);
    `labels`, `clean_labels` (-1 unknown), `rows` (the index column, default 0..R-1),
    `paths` (file sources, or None) and `split` (default all "train") are [R].
    `held_out` [R, K]: out-of-sample class probabilities (`methods.Method.audit_probs`),
    which decide the score, the estimated label and the flag; `q` [N, K] then is the
    method's posterior of the training rows. Without `held_out`, `q` [R, K] decides (the
    posterior, then the final classifier's p: `with_classifier_probs`).
    `class_names`: K names (default "0" … "K-1").
    """
    labels = np.asarray(labels)
    count, n = len(labels), len(eta)
    probs = decision(q, held_out)
    score = issue_scores(probs, labels)
    order = issue_order(score)
    estimated = np.argmax(probs, axis=1)
    names = np.array([str(c) for c in range(probs.shape[1])] if class_names is None
                     else list(class_names), dtype=object)
    q_observed = np.asarray(q)[np.arange(n), labels[:n]]
    columns = {
        "order": order,
        "split": np.full(count, "train") if split is None else np.asarray(split)[order],
        "index": order if rows is None else np.asarray(rows)[order],
        "observed_label": labels[order],
        "estimated_label": estimated[order],
        "observed_class": names[labels[order]],
        "estimated_class": names[estimated[order]],
        "issue_score": score.astype(np.float32)[order],
        "eta": trained_only(eta, count)[order],
        "psi": trained_only(psi, count)[order],
        "q_observed": trained_only(q_observed, count)[order],
        "is_label_issue": flags(q, held_out, labels)[order].astype(np.int64),
        "clean_label": np.asarray(clean_labels)[order],
    }
    if paths is not None:
        columns["path"] = np.asarray(paths)[order]
    return columns


def csv_text(columns):
    """The CSV file's text; floats with 9 significant digits (float32 round-trips), NaN
    (no η, ψ or q: not a training row) and unknown clean labels as empty cells."""
    names = [name for name in COLUMNS if name in columns]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(names)
    for row in zip(*(columns[name] for name in names)):
        *values, clean = row
        cells = [("" if v != v else f"{v:.9g}") if isinstance(v, np.floating) else str(v)
                 for v in values]
        writer.writerow(cells + [str(clean) if clean >= 0 else ""])
    return out.getvalue()


def detection(q, eta, labels, clean_labels, held_out=None):
    """How well the audit finds the wrong labels, on the rows with a known clean label.

    label_issue_precision: of the flagged rows (`flags`), the fraction whose observed
      label is wrong;
    label_issue_recall: of the wrong labels, the fraction flagged;
    issue_score_auroc: AUROC of the audit's issue_score (its row order);
    eta_auroc: AUROC of η as a score for "the label is wrong" (the N training rows).
    `labels`, `clean_labels` [R] and `q`, `held_out` as in `audit_columns`.
    NaN where undefined (no clean labels, nothing flagged, no wrong label).
    """
    labels, clean_labels, n = np.asarray(labels), np.asarray(clean_labels), len(eta)
    known = clean_labels >= 0
    is_wrong = (labels != clean_labels)[known]
    probs = decision(q, held_out)
    flagged = flags(q, held_out, labels)[known]
    nan = float("nan")
    return {
        "label_issue_precision": float(precision_score(is_wrong, flagged, zero_division=np.nan))
        if flagged.any() else nan,
        "label_issue_recall": float(recall_score(is_wrong, flagged, zero_division=np.nan))
        if is_wrong.any() else nan,
        "issue_score_auroc": report_lib.auroc(issue_scores(probs, labels), labels, clean_labels),
        "eta_auroc": report_lib.auroc(eta, labels[:n], clean_labels[:n]),
    }


def write(path, q, eta, psi, labels, clean_labels, held_out=None, rows=None, class_names=None,
          paths=None, split=None):
    """Writes label_audit.csv atomically; returns its columns (`audit_columns`)."""
    columns = audit_columns(q, eta, psi, labels, clean_labels, held_out, rows, class_names,
                            paths, split)
    artifacts.write_text(path, csv_text(columns))
    return columns


def write_reports(run_dir, q, eta, psi, audited, data, held_out=None):
    """label_audit.csv and label_issues.html (with its thumbnails) of the `audited` rows
    (`audited_rows` of the data view `data`) in `run_dir`; returns the audit's columns."""
    from idn_tf import label_report
    columns = write(os.path.join(run_dir, "label_audit.csv"), q, eta, psi, audited.labels,
                    audited.clean_labels, held_out, audited.index, data.class_names,
                    audited.paths, audited.split)
    label_report.write(run_dir, columns, decision(q, held_out), data,
                       held_out=held_out is not None)
    return columns


def with_classifier_probs(q, classifier, data, batch_size):
    """What the audit decides from without held-out classifiers (--audit_folds=0), [N + M,
    K]: the posterior `q` [N, K] of the training rows, then `classifier`'s softmax of the M
    rows of `data.audited_splits()` (they have no η or ψ, and it never trained on them)."""
    from idn_tf import stages
    others = [split.examples for split in data.audited_splits()]
    return np.concatenate([q, stages.examples_probs(classifier, others, batch_size,
                                                    data.num_classes)])


def report(run_dir, q, eta, psi, labels, data, held_out, classifier, batch_size):
    """The label audit of a run, as the run and `rebuild` make it: label_audit.csv and
    label_issues.html in `run_dir`, one console line; returns `detection`'s figures.

    `q` [N, K]: the method's posterior of the N training rows (observed `labels`);
    `held_out`: audit_probs.npy [N + M, K] (one of [N, K], of a run made before the other
    rows were audited: the training rows alone, and a line says so), or None: q, then
    `classifier`'s (the final one's) probabilities of the others decide.
    """
    from idn_tf import label_report
    if held_out is None:
        q = with_classifier_probs(q, classifier, data, batch_size)
    elif len(held_out) == len(labels) and data.audited_splits():
        print(f"{os.path.join(run_dir, 'audit_probs.npy')} holds the {len(labels)} training "
              "rows only (a run made before the validation and test rows were audited): "
              "the audit covers those")
    audited = audited_rows(labels, data, len(decision(q, held_out)))
    columns = write_reports(run_dir, q, eta, psi, audited, data, held_out)
    by = ("confident learning on held-out classifiers" if held_out is not None
          else "the method's posterior q (--audit_folds=0)")
    flagged, checked = int(columns["is_label_issue"].sum()), label_report.checked(audited.split)
    print(f"{os.path.join(run_dir, 'label_audit.csv')}: {flagged} of {len(audited.labels)} "
          f"labels flagged by {by}\n  ({checked} images checked)\n"
          f"{os.path.join(run_dir, label_report.HTML_NAME)}: the flagged images, then the "
          "most suspect per class")
    return detection(q, eta, audited.labels, audited.clean_labels, held_out)


# ---------------------------------------------------------------------------------------
# python -m idn_tf.audit --run_dir=...

# The flags the audit takes on its command line; the rest come from the run's flags.txt.
CLI_FLAGS = ("run_dir", "data_dir", "npz_path", "download", "batch_size", "verbose")
HELP_FLAGS = ("help", "helpshort", "helpfull", "helpxml", "only_check_args")


def parse_flags(argv):
    """--run_dir (and where the data now is); every other flag from <run_dir>/flags.txt."""
    from absl import flags

    from idn_tf import cli, flagdefs
    positional = [a for a in argv[1:] if not a.startswith("-")]
    if positional:
        cli.fail(f"unexpected arguments {' '.join(positional)!r} (flags are --name=value, "
                    "e.g. --run_dir=runs/digits-kmeans-0)")
    names = [a.lstrip("-").split("=")[0] for a in argv[1:]]
    names = [n[2:] if n.startswith("no") and n[2:] in CLI_FLAGS else n for n in names]
    bad = [n for n in names if n not in CLI_FLAGS + HELP_FLAGS]
    if bad:
        cli.fail(f"--{bad[0]}: idn_tf.audit takes only --{', --'.join(CLI_FLAGS)}; "
                    "the other flags come from the run's flags.txt")
    cli.parse_flags(argv)
    FLAGS = flagdefs.FLAGS
    flags_path = os.path.join(FLAGS.run_dir, "flags.txt")
    if not FLAGS.run_dir or not os.path.isfile(flags_path):
        cli.fail(f"--run_dir={FLAGS.run_dir!r}: not a run folder (no flags.txt); "
                    "pass the folder of a finished run")
    FLAGS.unparse_flags()
    try:
        return FLAGS([argv[0], f"--flagfile={flags_path}", *argv[1:]])
    except flags.Error as e:
        cli.fail(f"{flags_path}: {e}")


def rebuild(config):
    """Recomputes label_audit.csv of the finished run in config.run_dir; returns detection()."""
    from idn_tf import inputs, methods, model, posterior, stages
    if not methods.get(config.method).audits_labels:
        learners = "/".join(m.name for m in methods.all_methods() if m.audits_labels)
        raise artifacts.RunDirError(f"--run_dir={config.run_dir} holds a --method={config.method} "
                                    f"run; the label audit needs the method's η (--method={learners})")
    paths = {name: os.path.join(config.run_dir, name) for name in
             ("noisy_labels.npz", "psi.npy", "eta.npy", "classifier.weights.h5")}
    missing = [name for name, path in paths.items() if not os.path.isfile(path)]
    if missing:
        raise artifacts.RunDirError(f"--run_dir={config.run_dir}: {missing[0]} is missing; "
                                    "the run has not finished stage 2")
    data = inputs.load_data(config)
    try:
        with np.load(paths["noisy_labels.npz"]) as saved:
            labels = saved["labels"]
            held = saved["validation_rows"] if "validation_rows" in saved.files else []
        eta, psi = np.load(paths["eta.npy"]), np.load(paths["psi.npy"])
    except (OSError, ValueError, KeyError) as e:
        raise artifacts.RunDirError(f"--run_dir={config.run_dir}: cannot read its labels, η "
                                    f"or ψ ({e})") from None
    if labels.shape != (len(data.train),):
        raise artifacts.RunDirError(
            f"{paths['noisy_labels.npz']} has shape {labels.shape} but the data has "
            f"{len(data.train)} training examples; is this the run's data (--data_dir, --npz_path)?")
    data, labels = inputs.split_validation(data, labels, np.asarray(held, np.int64))
    n = len(data.train)
    for name, array, rows in (("eta.npy", eta, data.table_size), ("psi.npy", psi, n)):
        if array.shape != (rows,):
            raise artifacts.RunDirError(
                f"{paths[name]} has shape {array.shape} but the data has {rows} training examples; "
                "is this the run's data (--data_dir, --npz_path)?")
    eta = eta[:n]  # the noisy examples' rows (clean examples mixed in come after them)
    classifier = stages.new_classifier(config, data)
    try:
        classifier.load_weights(paths["classifier.weights.h5"])
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise artifacts.RunDirError(f"{paths['classifier.weights.h5']}: cannot load it into "
                                    f"--arch={config.arch} ({first})") from None
    log_probs = model.example_log_probs(classifier, data, config.batch_size)
    q = posterior.posterior_from_log_probs(log_probs, labels, eta, psi,
                                           config.eta_numerics).numpy()
    held_out = held_out_probs(config, n, data)
    return report(config.run_dir, q, eta, psi, labels, data, held_out, classifier,
                  config.batch_size)


def held_out_probs(config, n, data):
    """The run's audit_probs.npy [n + M, K] (--audit_folds > 0; M: the rows of
    `data.audited_splits()`), or [n, K] of a run made before those were audited; None with
    --audit_folds=0, or for a run made before the held-out audit existed (then q decides,
    as it did)."""
    path = os.path.join(config.run_dir, "audit_probs.npy")
    if not config.audit_folds:
        return None
    if not os.path.isfile(path):
        print(f"{path} is missing (a run made before the held-out audit): the audit decides "
              "from the method's posterior q")
        return None
    try:
        probs = np.load(path)
    except (OSError, ValueError) as e:
        raise artifacts.RunDirError(f"{path}: cannot read it ({e})") from None
    m, k = sum(len(s) for s in data.audited_splits()), data.num_classes
    if probs.shape not in ((n + m, k), (n, k)):
        raise artifacts.RunDirError(f"{path} has shape {probs.shape} but the data has {n} "
                                    f"training examples and {m} validation and test ones of "
                                    f"{k} classes; is this the run's data (--data_dir, "
                                    "--npz_path)?")
    return probs


def main(argv):
    from idn_tf import cli, flagdefs
    cli.quiet_logging()
    with cli.user_errors():
        scores = rebuild(flagdefs.config_from_flags())
    for name, value in scores.items():
        print(f"{name}: {'n/a' if value != value else f'{value:.4f}'}")
    return 0


if __name__ == "__main__":
    from absl import app
    app.run(main, flags_parser=parse_flags)
