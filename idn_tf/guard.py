"""The export guard: has the classifier a run would export lost what its stage 1 (plain
cross-entropy on the same labels) learned, by more than label noise and chance on that
many validation images explain? (docs/validation.md, "The export guard")

Both are scored on the same noisy validation images. Two conditions, both needed:

- significance, paired: McNemar's exact test (Dietterich, Neural Computation 1998),
  one-sided. Of the images exactly one of them gets right, b are stage 1's and c the final
  classifier's; if the two were equally accurate, b would be Binomial(b + c, 1/2); it
  holds when b > c and P(X ≥ b) < `ALPHA`;
- size: the final classifier has lost more than `LOST_SHARE_MAX` of stage 1's accuracy
  above chance (1/K). Wrong labels make a classifier of the true classes look worse on
  noisy validation, by up to the share of wrong labels (k-means noise on digits: 11 points
  of 84 while 3 points better on test, BENCHMARKS.md); the methods assume most labels are
  right, so a loss of more than half is more than label noise explains.

Pure Python and numpy; `runner` asks it before the export.
"""

import math

import numpy as np

ALPHA = 0.05
LOST_SHARE_MAX = 0.5


def binomial_tail(successes, trials):
    """P(X ≥ successes) for X ~ Binomial(trials, 1/2), exact (summed in log space)."""
    if successes <= 0:
        return 1.0
    if successes > trials:
        return 0.0
    logs = [math.lgamma(trials + 1) - math.lgamma(k + 1) - math.lgamma(trials - k + 1)
            - trials * math.log(2.0) for k in range(successes, trials + 1)]
    top = max(logs)
    return min(1.0, math.exp(top) * sum(math.exp(v - top) for v in logs))


def compare(stage1_right, final_right, num_classes):
    """The verdict on two classifiers' correctness [n] (bool) on the same validation
    images of a K-class problem: a dict with their accuracies, b, c, the one-sided p, the
    share of stage 1's accuracy above chance the final classifier lost, and `worse`."""
    stage1_right = np.asarray(stage1_right, bool)
    final_right = np.asarray(final_right, bool)
    if stage1_right.shape != final_right.shape:
        raise ValueError(f"the two classifiers were scored on {stage1_right.shape} and "
                         f"{final_right.shape} images")
    b = int(np.sum(stage1_right & ~final_right))
    c = int(np.sum(~stage1_right & final_right))
    p = binomial_tail(b, b + c)
    n = len(final_right)
    stage1 = float(stage1_right.mean()) if n else float("nan")
    final = float(final_right.mean()) if n else float("nan")
    learned = stage1 - 1.0 / num_classes
    lost = (stage1 - final) / learned if learned > 0 else float("nan")
    return {"validation_images": n, "stage1_validation_accuracy": stage1,
            "final_validation_accuracy": final, "only_stage1_right": b, "only_final_right": c,
            "p_value": p, "lost_share": lost,
            "worse": bool(b > c and p < ALPHA and lost > LOST_SHARE_MAX)}


def message(verdict, exported):
    """What the guard found and which classifier the run exports (`exported`: "stage1" or
    "method"), for the console and the closing table: lines of at most 120 characters."""
    found = (f"{100 * verdict['final_validation_accuracy']:.1f}% vs stage 1's "
             f"{100 * verdict['stage1_validation_accuracy']:.1f}% of "
             f"{verdict['validation_images']} images")
    if not verdict["worse"]:
        return f"export guard: passed (noisy validation: {found})"
    return "\n".join([
        "WARNING: the method's classifier is far worse than plain cross-entropy on noisy validation",
        f"  ({found}; McNemar p = {verdict['p_value']:.2g}; "
        f"{100 * verdict['lost_share']:.0f}% of stage 1's accuracy above chance lost)",
        "  exported stage 1's classifier instead; --export_classifier=method exports the method's"
        if exported == "stage1" else "  exported it anyway (--export_classifier=method)"])
