"""Forward correction's transition matrix T (Patrini et al., CVPR 2017), in numpy.

T_ij = P(observed label j | true class i): row-stochastic, one row per class. Kept
apart from `baselines` (which needs TensorFlow) so that a bad --transition_matrix
file is refused before TensorFlow starts.
"""

import numpy as np


def estimate_transition_matrix(probs, percentile=97.0):
    """Patrini et al.'s estimate of T [K, K] from predicted probabilities `probs` [N, K].

    `probs` are a cross-entropy model's p(ỹ | x) on the training examples. Row i is
    p(ỹ | x̄_i) for x̄_i an example that is almost surely of class i: the one with the
    largest p(ỹ = i | x) *below* the `percentile`-th percentile of p(ỹ = i | ·)
    (numpy's "higher" interpolation), which passes over the top few percent as
    outliers. This is the "filter outlier" estimator of the authors' code (values at
    or above the threshold set to 0, then the arg max); `percentile=100` takes the
    arg max itself (their estimator without the filter). float64 [K, K].
    """
    probs = np.asarray(probs, np.float64)
    if probs.ndim != 2 or probs.shape[1] < 1 or len(probs) < 1:
        raise ValueError(f"probs must be [N, K] with N, K >= 1, got shape {probs.shape}")
    num_classes = probs.shape[1]
    rows = np.empty((num_classes, num_classes))
    for i in range(num_classes):
        column = probs[:, i]
        if percentile < 100:
            threshold = np.percentile(column, percentile, method="higher")
            column = np.where(column >= threshold, 0.0, column)
        rows[i] = probs[int(np.argmax(column))]
    return rows


def counted_transition_matrix(clean_labels, labels, num_classes):
    """T [K, K] counted from clean and observed labels [N]: T_ij = #{clean i, observed j} /
    #{clean i}, the row-normalised confusion counts (float64). A class with no clean example
    gets the identity row (nothing is known of how it flips). A loop would do: for each n,
    counts[clean[n], labels[n]] += 1; then divide every row by its sum."""
    clean, labels = np.asarray(clean_labels, np.int64), np.asarray(labels, np.int64)
    if clean.shape != labels.shape or clean.ndim != 1 or (clean < 0).any():
        raise ValueError("need clean and observed labels [N] of the same length, every clean "
                         "label known (>= 0)")
    counts = np.zeros((num_classes, num_classes))
    np.add.at(counts, (clean, labels), 1.0)
    totals = counts.sum(axis=1)
    counts[totals == 0] = np.eye(num_classes)[totals == 0]
    return counts / counts.sum(axis=1, keepdims=True)


def check_transition_matrix(matrix, num_classes, atol=1e-3):
    """`matrix` as float32 [K, K] if it is a transition matrix, else ValueError saying why.

    Rows must be non-negative and sum to 1 (within `atol`; they are then rescaled to
    sum to exactly 1).
    """
    matrix = np.asarray(matrix, np.float64)
    if matrix.shape != (num_classes, num_classes):
        raise ValueError(f"shape {matrix.shape}, expected ({num_classes}, {num_classes}): "
                         "one row and one column per class")
    if not np.isfinite(matrix).all() or (matrix < 0).any():
        raise ValueError("entries must be finite and >= 0")
    sums = matrix.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1) > atol)
    if len(bad):
        raise ValueError(f"row {bad[0]} sums to {sums[bad[0]]:.6g}, not 1 (row i is "
                         "P(observed label | true class i))")
    return (matrix / sums[:, None]).astype(np.float32)


def noise_rate_from_transition(transition, prior):
    """The fraction of wrong labels a transition matrix implies: Σ_i π_i (1 − T_ii).

    `transition` T [K, K] (row i = P(observed | class i)), `prior` π [K] the class
    frequencies (Co-teaching's estimated τ uses the observed labels' frequencies, the
    clean ones being unknown). Returns a float in [0, 1].
    """
    transition = np.asarray(transition, np.float64)
    prior = np.asarray(prior, np.float64)
    if transition.ndim != 2 or transition.shape[0] != transition.shape[1] \
            or prior.shape != transition.shape[:1]:
        raise ValueError(f"need T [K, K] and π [K], got {transition.shape} and {prior.shape}")
    if np.any(prior < 0) or not np.isclose(prior.sum(), 1.0):
        raise ValueError(f"π must be a distribution (non-negative, summing to 1), got {prior}")
    return float(np.clip(np.sum(prior * (1.0 - np.diag(transition))), 0.0, 1.0))
