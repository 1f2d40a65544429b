"""Forward correction's transition matrix (idn_tf/transition.py), in numpy: Patrini et al.'s
estimator against the rule written out by sorting and on planted matrices, the check of a
given T, and the noise rate a T implies, Σ_i π_i (1 − T_ii), by hand.

Every expected value is computed here (float64 numpy, loops, or by hand), never from the
module's own output.
"""

import subprocess
import sys

import numpy as np
import pytest

from idn_tf import transition


def random_transition(rng, k, diagonal=None):
    """A random row-stochastic [k, k]; with `diagonal`, T_ii = diagonal[i] and the rest spread."""
    t = rng.dirichlet(np.ones(k), size=k)
    if diagonal is not None:
        off = t * (1 - np.eye(k))
        off /= off.sum(axis=1, keepdims=True)
        t = np.diag(diagonal) + (1 - np.asarray(diagonal))[:, None] * off
    return t


# --- Patrini et al.'s estimator of T ---------------------------------------------------

def numpy_estimate(probs, percentile):
    """The "filter outlier" anchor rule, by sorting: for class i, among the examples whose
    p(ỹ = i | x) is strictly below the `percentile`-th order statistic (numpy's "higher"
    interpolation: the sorted value at index ceil((N − 1)·q)), the first with the largest
    p(ỹ = i | x); row i is its probabilities. percentile = 100: the first arg max."""
    n, k = probs.shape
    rows = np.zeros((k, k))
    for i in range(k):
        column = probs[:, i]
        if percentile >= 100:
            best = np.flatnonzero(column == column.max())[0]
        else:
            threshold = np.sort(column)[int(np.ceil((n - 1) * percentile / 100))]
            # Sanity check of the order statistic itself (not of the module).
            assert threshold == np.percentile(column, percentile, method="higher")
            below = np.flatnonzero(column < threshold)
            top = column[below].max()
            best = below[column[below] == top][0]
        rows[i] = probs[best]
    return rows


@pytest.mark.parametrize("percentile", [97.0, 90.0, 50.0, 100.0])
@pytest.mark.parametrize("ties", [False, True])
def test_estimate_transition_matrix_matches_rule(percentile, ties):
    rng = np.random.default_rng(2)
    n, k = 203, 4
    probs = rng.dirichlet(np.ones(k) * 0.7, size=n)
    if ties:  # a coarse grid: many equal values, at the threshold and at the maximum
        probs = np.clip(np.round(probs, 1), 0.05, None)
    expected = numpy_estimate(probs, percentile)
    actual = transition.estimate_transition_matrix(probs, percentile)
    assert actual.shape == (k, k) and actual.dtype == np.float64
    np.testing.assert_array_equal(actual, expected)
    if percentile < 100:  # the filter changes the answer on this data (else it tests nothing)
        assert not np.array_equal(actual, numpy_estimate(probs, 100.0))


def test_estimate_transition_matrix_default_is_97th_percentile():
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(3), size=150)
    np.testing.assert_array_equal(transition.estimate_transition_matrix(probs),
                                  numpy_estimate(probs, 97.0))


def planted_probs(rng, t_planted, n=3000, anchor_fraction=0.2, outliers=0):
    """p(ỹ | x) = p(y | x)·T for clean posteriors with near-anchors of every class.

    A fifth of each class are near-anchors (p(y = i | x) ∈ [0.98, 1]), the rest mixed
    (p(y = i | x) ≤ 0.7). With `outliers`, that many rows per class are replaced by
    one-hot p(ỹ | x) = e_i: overconfident outliers above every anchor.
    """
    k = len(t_planted)
    clean = np.empty((n, k))
    classes = np.arange(n) % k
    anchor = rng.random(n) < anchor_fraction
    jitter = rng.uniform(0, 0.02, size=n)
    spread = rng.dirichlet(np.ones(k - 1), size=n)
    for row in range(n):
        c = classes[row]
        if anchor[row]:
            clean[row] = np.insert(jitter[row] * spread[row], c, 1 - jitter[row])
        else:
            clean[row] = 0.6 * rng.dirichlet(np.ones(k)) + 0.4 / k
    noisy = clean @ t_planted
    for c in range(k):
        rows = rng.choice(np.flatnonzero(classes == c), size=outliers, replace=False)
        noisy[rows] = np.eye(k)[c]
    return noisy


def test_estimate_recovers_planted_transition_matrix():
    rng = np.random.default_rng(4)
    k = 4
    t_planted = random_transition(rng, k, diagonal=[0.6, 0.7, 0.8, 0.65])
    probs = planted_probs(rng, t_planted)
    estimate = transition.estimate_transition_matrix(probs)
    np.testing.assert_allclose(estimate, t_planted, atol=0.03)
    np.testing.assert_allclose(estimate.sum(axis=1), 1, atol=1e-12)


def test_percentile_filter_passes_over_outliers():
    # 1% of each class are overconfident outliers (p(ỹ = i | x) = 1 > every anchor's):
    # the plain arg max (percentile 100) takes them, the 97th percentile passes them over.
    rng = np.random.default_rng(5)
    k = 3
    t_planted = random_transition(rng, k, diagonal=[0.6, 0.7, 0.75])
    probs = planted_probs(rng, t_planted, outliers=10)
    np.testing.assert_allclose(transition.estimate_transition_matrix(probs, 97.0), t_planted,
                               atol=0.03)
    np.testing.assert_array_equal(transition.estimate_transition_matrix(probs, 100.0), np.eye(k))


def test_estimate_does_not_modify_its_input():
    # (The authors' code zeroes the top values of each column in place.)
    rng = np.random.default_rng(6)
    probs = rng.dirichlet(np.ones(4), size=100)
    before = probs.copy()
    transition.estimate_transition_matrix(probs, 97.0)
    np.testing.assert_array_equal(probs, before)
    probs32 = probs.astype(np.float32)
    before32 = probs32.copy()
    transition.estimate_transition_matrix(probs32, 90.0)
    np.testing.assert_array_equal(probs32, before32)


# --- check_transition_matrix ---------------------------------------------------------

def test_check_transition_matrix_accepts_and_rescales():
    rng = np.random.default_rng(7)
    t = random_transition(rng, 4)
    t[1] *= 1 + 5e-4   # within the default atol of 1e-3
    t[2] *= 1 - 8e-4
    checked = transition.check_transition_matrix(t, 4)
    assert checked.dtype == np.float32 and checked.shape == (4, 4)
    np.testing.assert_allclose(checked, t / t.sum(axis=1, keepdims=True), rtol=1e-6)
    np.testing.assert_allclose(checked.astype(np.float64).sum(axis=1), 1, atol=1e-6)
    # Lists are fine too.
    np.testing.assert_array_equal(transition.check_transition_matrix(np.eye(3).tolist(), 3),
                                  np.eye(3, dtype=np.float32))


@pytest.mark.parametrize("case, message", [
    ("wide", r"shape \(3, 4\)"),
    ("wrong_k", r"shape \(4, 4\), expected \(3, 3\)"),
    ("negative", r">= 0"),
    ("nan", r"finite"),
    ("inf", r"finite"),
    ("row_0.9", r"row 1 sums to 0\.9\b"),
])
def test_check_transition_matrix_refuses(case, message):
    rng = np.random.default_rng(8)
    t = random_transition(rng, 3)
    if case == "wide":
        t = np.hstack([t, np.zeros((3, 1))])
    elif case == "wrong_k":
        t = random_transition(rng, 4)
    elif case == "negative":
        t[0] = [1.2, -0.2, 0.0]        # sums to 1, one entry < 0
    elif case == "nan":
        t[2, 1] = np.nan
    elif case == "inf":
        t[2, 1] = np.inf
    elif case == "row_0.9":
        t[1] *= 0.9
    with pytest.raises(ValueError, match=message):
        transition.check_transition_matrix(t, 3)


def test_estimate_hand_worked():
    probs = np.array([[0.9, 0.1],
                      [0.7, 0.3],
                      [0.4, 0.6],
                      [0.2, 0.8],
                      [0.6, 0.4]])
    # percentile 100: row i is the example with the largest p(i | x): rows 0 and 3.
    np.testing.assert_array_equal(transition.estimate_transition_matrix(probs, 100.0),
                                  [[0.9, 0.1], [0.2, 0.8]])
    # 50th percentile, "higher": column 0 sorted is .2 .4 .6 .7 .9, index ceil(4·0.5) = 2,
    # threshold .6; below it the largest is .4 (row 2). Column 1: .1 .3 .4 .6 .8, threshold
    # .4; below it .3 (row 1).
    np.testing.assert_array_equal(transition.estimate_transition_matrix(probs, 50.0),
                                  [[0.4, 0.6], [0.7, 0.3]])


def test_estimate_with_every_value_at_the_threshold_takes_the_first_row():
    # All of column i equal: all are set to 0, and the arg max of zeros is row 0.
    probs = np.full((4, 2), 0.5)
    np.testing.assert_array_equal(transition.estimate_transition_matrix(probs, 97.0),
                                  [[0.5, 0.5], [0.5, 0.5]])


@pytest.mark.parametrize("probs", [np.zeros(3), np.zeros((0, 3)), np.zeros((3, 0)),
                                   np.zeros((2, 2, 2))])
def test_estimate_refuses_what_is_not_n_by_k(probs):
    with pytest.raises(ValueError, match="probs must be"):
        transition.estimate_transition_matrix(probs)


def test_noise_rate_from_transition_hand_worked():
    t = np.array([[0.6, 0.4, 0.0],
                  [0.1, 0.9, 0.0],
                  [0.0, 0.0, 1.0]])
    prior = np.array([0.5, 0.25, 0.25])
    # 0.5·0.4 + 0.25·0.1 + 0.25·0 = 0.225
    assert transition.noise_rate_from_transition(t, prior) == pytest.approx(0.225, abs=1e-15)
    assert transition.noise_rate_from_transition(np.eye(3), prior) == 0.0
    assert transition.noise_rate_from_transition(1 - np.eye(2), [0.3, 0.7]) == 1.0
    assert isinstance(transition.noise_rate_from_transition(t.tolist(), prior.tolist()), float)


def test_noise_rate_from_transition_is_the_expected_share_of_flips():
    rng = np.random.default_rng(9)
    k, n = 4, 200_000
    t = random_transition(rng, k, diagonal=[0.5, 0.7, 0.9, 0.8])
    prior = np.array([0.1, 0.2, 0.3, 0.4])
    clean = rng.choice(k, n, p=prior)
    # Observed label j with probability T[clean, j]: the first j whose cumulative sum passes u.
    observed = np.argmax(rng.random(n)[:, None] < np.cumsum(t[clean], axis=1), axis=1)
    flipped = np.mean(observed != clean)  # sampled: within ~5 standard errors (0.001)
    rate = transition.noise_rate_from_transition(t, prior)
    assert rate == pytest.approx(sum(prior[i] * (1 - t[i, i]) for i in range(k)), abs=1e-15)
    assert rate == pytest.approx(flipped, abs=0.005)


def test_noise_rate_is_clipped_to_the_unit_interval():
    # Not a transition matrix (T_00 > 1): the formula gives −0.25, the rate stays 0.
    assert transition.noise_rate_from_transition([[1.5, -0.5], [0.0, 1.0]], [0.5, 0.5]) == 0.0


@pytest.mark.parametrize("t, prior, match", [
    (np.eye(3)[:2], [0.5, 0.5], r"need T \[K, K\]"),
    (np.eye(3), [0.5, 0.5], r"need T \[K, K\]"),
    (np.eye(2)[None], [0.5, 0.5], r"need T \[K, K\]"),
    (np.eye(2), [[0.5, 0.5]], r"need T \[K, K\]"),
    (np.eye(2), [1.2, -0.2], "π must be a distribution"),
    (np.eye(2), [0.5, 0.4], "π must be a distribution"),
])
def test_noise_rate_refuses_bad_shapes_and_priors(t, prior, match):
    with pytest.raises(ValueError, match=match):
        transition.noise_rate_from_transition(t, prior)


def test_importing_the_module_does_not_import_tensorflow():
    # A bad --transition_matrix file is refused before TensorFlow starts (module docstring).
    code = "import sys, idn_tf.transition; sys.exit('tensorflow' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr


def test_counted_transition_matrix_hand_worked():
    # Clean 0 observed as 0, 0, 1 -> row 0 = (2/3, 1/3, 0); clean 1 observed as 2 -> row 1 =
    # (0, 0, 1); class 2 has no clean example -> the identity row.
    clean, observed = np.array([0, 0, 0, 1]), np.array([0, 0, 1, 2])
    np.testing.assert_allclose(transition.counted_transition_matrix(clean, observed, 3),
                               [[2 / 3, 1 / 3, 0], [0, 0, 1], [0, 0, 1]], rtol=1e-12)
    with pytest.raises(ValueError, match="every clean"):
        transition.counted_transition_matrix(np.array([0, -1]), np.array([0, 1]), 2)
