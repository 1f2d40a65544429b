"""Confident learning (Northcutt, Jiang & Chuang, JAIR 2021): which labels to flag, from
out-of-sample class probabilities. Pure numpy; the label audit's `is_label_issue`.

Shapes: probs [N, K], each row an example's held-out class probabilities; labels [N],
the observed labels ỹ.

- `thresholds`: t_j = the mean of p_ij over the examples labelled j (the class's average
  self-confidence).
- `confident_joint`: C [K, K], C[i, j] = how many examples labelled i are confidently
  of class j: among the classes whose p_ij reaches t_j, j is the most probable.
- `calibrated_joint`: C with each row rescaled to the count of its label, so that the
  rows estimate how many examples of each label belong to each class.
- `prune_by_noise_rate`: for every off-diagonal cell (i, j) of the calibrated joint,
  rounded, the examples labelled i with the largest margin p_ij − p_ii are flagged; at
  least one example of each label is left unflagged, and never one whose most probable
  class is its own label (the paper's Prune by Noise Rate, and cleanlab's default
  `find_label_issues`).
"""

import numpy as np


def thresholds(probs, labels):
    """t [K]: t_j = mean of probs[i, j] over the examples labelled j (+inf for a class no
    example has, so that nothing is confidently of it)."""
    probs, labels = np.asarray(probs, np.float64), np.asarray(labels)
    num_classes = probs.shape[1]
    counts = np.bincount(labels, minlength=num_classes)
    sums = np.bincount(labels, weights=probs[np.arange(len(labels)), labels],
                       minlength=num_classes)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.inf)


def confident_classes(probs, labels):
    """[N]: each example's confident class (the most probable of the classes j with
    p_ij ≥ t_j), or -1 where no class reaches its threshold."""
    probs = np.asarray(probs, np.float64)
    above = probs >= thresholds(probs, labels)[None, :]
    confident = np.where(above, probs, -np.inf).argmax(axis=1)
    return np.where(above.any(axis=1), confident, -1)


def confident_joint(probs, labels):
    """C [K, K] int64: C[i, j] counts the examples labelled i whose confident class is j."""
    labels = np.asarray(labels)
    num_classes = np.asarray(probs).shape[1]
    confident = confident_classes(probs, labels)
    joint = np.zeros((num_classes, num_classes), np.int64)
    has = confident >= 0
    np.add.at(joint, (labels[has], confident[has]), 1)
    return joint


def calibrated_joint(joint, labels):
    """The confident joint with row i rescaled to sum to the count of label i (a row
    with no confident example puts its whole count on the diagonal), float [K, K]."""
    joint = np.asarray(joint, np.float64)
    counts = np.bincount(np.asarray(labels), minlength=len(joint)).astype(np.float64)
    rows = joint.sum(axis=1)
    scaled = joint * (counts / np.maximum(rows, 1))[:, None]
    empty = rows == 0
    scaled[empty] = 0.0
    scaled[empty, np.flatnonzero(empty)] = counts[empty]
    return scaled


def prune_counts(probs, labels):
    """[K, K] int64: how many examples labelled i to flag as being of class j (diagonal 0):
    the rounded calibrated confident joint, cut back (largest cells first) so that every
    label keeps at least one unflagged example."""
    labels = np.asarray(labels)
    counts = np.bincount(labels, minlength=np.asarray(probs).shape[1])
    prune = np.rint(calibrated_joint(confident_joint(probs, labels), labels)).astype(np.int64)
    np.fill_diagonal(prune, 0)
    for i in range(len(prune)):
        while prune[i].sum() > max(counts[i] - 1, 0):
            prune[i, np.argmax(prune[i])] -= 1
    return prune


def prune_by_noise_rate(probs, labels):
    """bool [N]: the examples flagged as label issues (module docstring).

    A slow loop would, for each label i and class j ≠ i, sort the examples labelled i by
    p_j − p_i, highest first, flag the first prune_counts[i, j] of them, and at the end
    unflag every example whose arg max class is its label.
    """
    probs, labels = np.asarray(probs, np.float64), np.asarray(labels)
    prune = prune_counts(probs, labels)
    flagged = np.zeros(len(labels), bool)
    for i, j in zip(*np.nonzero(prune)):
        members = np.flatnonzero(labels == i)
        margin = probs[members, j] - probs[members, i]
        flagged[members[np.argsort(-margin, kind="stable")[:prune[i, j]]]] = True
    # Never flag a label the classifier itself predicts (ties go to the label).
    predicted_own = probs[np.arange(len(labels)), labels] >= probs.max(axis=1)
    return flagged & ~predicted_own
