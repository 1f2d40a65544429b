"""confident_learning: the confident joint and Prune by Noise Rate against hand-worked cases
and a slow loop written from the paper (Northcutt, Jiang & Chuang, JAIR 2021, §3)."""

import numpy as np

from idn_tf import confident_learning as cl

# Six examples, two classes. Thresholds: t0 = (.9 + .8 + .2) / 3 = .6333 (label 0's mean
# p0), t1 = (.9 + .7 + .4) / 3 = .6667. Confident classes: 0, 0, 1 (p1 .8 ≥ t1), 1, 1,
# none (p0 .6 < t0, p1 .4 < t1). Joint [[2, 1], [0, 2]]; row 1 rescaled to its 3 labels:
# [[2, 1], [0, 3]]. So one label-0 example is flagged as class 1: the largest p1 − p0, #2.
PROBS = np.array([[0.9, 0.1], [0.8, 0.2], [0.2, 0.8], [0.1, 0.9], [0.3, 0.7], [0.6, 0.4]])
LABELS = np.array([0, 0, 0, 1, 1, 1])


def test_hand_worked():
    np.testing.assert_allclose(cl.thresholds(PROBS, LABELS), [1.9 / 3, 2.0 / 3])
    np.testing.assert_array_equal(cl.confident_classes(PROBS, LABELS), [0, 0, 1, 1, 1, -1])
    np.testing.assert_array_equal(cl.confident_joint(PROBS, LABELS), [[2, 1], [0, 2]])
    np.testing.assert_allclose(cl.calibrated_joint(cl.confident_joint(PROBS, LABELS), LABELS),
                               [[2, 1], [0, 3]])
    np.testing.assert_array_equal(cl.prune_counts(PROBS, LABELS), [[0, 1], [0, 0]])
    # #5 (labelled 1, p0 .6) is not flagged: no class is confident for it.
    np.testing.assert_array_equal(cl.prune_by_noise_rate(PROBS, LABELS),
                                  [False, False, True, False, False, False])


def test_each_label_keeps_one_example_and_a_predicted_label_is_never_flagged():
    # Both label-1 examples are confidently class 0 (t0 = .9, t1 = .05: both classes reach
    # their thresholds, class 0 is the more probable): the joint says flag 2, one is kept,
    # the first of the tied margins.
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.95, 0.05], [0.95, 0.05]])
    labels = np.array([0, 0, 1, 1])
    np.testing.assert_array_equal(cl.confident_joint(probs, labels), [[2, 0], [2, 0]])
    np.testing.assert_array_equal(cl.prune_counts(probs, labels), [[0, 0], [1, 0]])
    np.testing.assert_array_equal(cl.prune_by_noise_rate(probs, labels), [0, 0, 1, 0])
    # Three classes: label 0's row asks for two of class 1, but the second-largest margin
    # p1 − p0 belongs to an example whose arg max is its own label 0: it stays unflagged.
    # t0 = (.2 + .45 + .95 + .95) / 4 = .6375, t1 = .4: #0 and #1 are confidently class 1
    # (#1 with p0 .45 < t0 and p1 .44 ≥ t1), so the joint's row 0 is [2, 2, 0].
    probs = np.array([[0.2, 0.7, 0.1], [0.45, 0.44, 0.11], [0.95, 0.03, 0.02],
                      [0.95, 0.03, 0.02], [0.35, 0.4, 0.25], [0.1, 0.1, 0.8]])
    labels = np.array([0, 0, 0, 0, 1, 2])
    np.testing.assert_array_equal(cl.confident_joint(probs, labels)[0], [2, 2, 0])
    np.testing.assert_array_equal(cl.prune_by_noise_rate(probs, labels), [1, 0, 0, 0, 0, 0])


def slow_prune_by_noise_rate(probs, labels):
    """The paper's steps one example and one cell at a time."""
    n, k = probs.shape
    t = [np.mean([probs[i, j] for i in range(n) if labels[i] == j]) if (labels == j).any()
         else np.inf for j in range(k)]
    joint = np.zeros((k, k))
    for i in range(n):
        above = [j for j in range(k) if probs[i, j] >= t[j]]
        if above:
            joint[labels[i], max(above, key=lambda j: probs[i, j])] += 1
    count = [int(np.sum(labels == j)) for j in range(k)]
    prune = np.zeros((k, k), int)
    for i in range(k):
        row = joint[i].sum()
        for j in range(k):
            if i != j and row:
                prune[i, j] = int(np.rint(joint[i, j] * count[i] / row))
        while prune[i].sum() > max(count[i] - 1, 0):
            prune[i, int(np.argmax(prune[i]))] -= 1
    flagged = np.zeros(n, bool)
    for i in range(k):
        members = [m for m in range(n) if labels[m] == i]
        for j in range(k):
            ranked = sorted(members, key=lambda m: -(probs[m, j] - probs[m, i]))
            for m in ranked[:prune[i, j]]:
                flagged[m] = True
    return np.array([f and probs[m, labels[m]] < probs[m].max() for m, f in enumerate(flagged)])


def test_matches_the_slow_loop_on_random_noisy_sets():
    rng = np.random.default_rng(0)
    for trial in range(20):
        n, k = int(rng.integers(8, 60)), int(rng.integers(2, 6))
        clean = rng.integers(0, k, n)
        labels = np.where(rng.random(n) < 0.3, rng.integers(0, k, n), clean)
        logits = rng.normal(size=(n, k)) + 3.0 * np.eye(k)[clean]
        probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        np.testing.assert_array_equal(cl.prune_by_noise_rate(probs, labels),
                                      slow_prune_by_noise_rate(probs, labels), err_msg=str(trial))
