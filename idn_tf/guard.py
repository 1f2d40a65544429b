"""The export guard: is the classifier a run would export worse than its stage 1 (plain
cross-entropy on the same labels) on the noisy validation split, by more than chance on
that many images explains? (docs/validation.md, "The export guard")

The two classifiers are compared on the same validation images, so the test is paired:
McNemar's exact test (Dietterich, Neural Computation 1998), one-sided. Of the images
exactly one of them gets right, b are stage 1's and c the final classifier's; if the two
were equally accurate, b would be Binomial(b + c, 1/2). The guard fires when b > c and
P(X ≥ b) < `ALPHA`. Pure Python and numpy; `runner` asks it before the export.
"""

import math

import numpy as np

ALPHA = 0.05


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


def compare(stage1_right, final_right):
    """The verdict on two classifiers' correctness [n] (bool) on the same validation
    images: a dict with their accuracies, b, c, the one-sided p and `worse` (fires)."""
    stage1_right = np.asarray(stage1_right, bool)
    final_right = np.asarray(final_right, bool)
    if stage1_right.shape != final_right.shape:
        raise ValueError(f"the two classifiers were scored on {stage1_right.shape} and "
                         f"{final_right.shape} images")
    b = int(np.sum(stage1_right & ~final_right))
    c = int(np.sum(~stage1_right & final_right))
    p = binomial_tail(b, b + c)
    n = len(final_right)
    return {"validation_images": n,
            "stage1_validation_accuracy": float(stage1_right.mean()) if n else float("nan"),
            "final_validation_accuracy": float(final_right.mean()) if n else float("nan"),
            "only_stage1_right": b, "only_final_right": c, "p_value": p,
            "worse": bool(b > c and p < ALPHA)}


def message(verdict, exported):
    """One plain line for the console and the closing table: what the guard found and
    which classifier the run exports (`exported`: "stage1" or "method")."""
    found = (f"noisy validation: this classifier {100 * verdict['final_validation_accuracy']:.1f}%, "
             f"stage 1 (plain cross-entropy) {100 * verdict['stage1_validation_accuracy']:.1f}% "
             f"of {verdict['validation_images']} images ({verdict['only_stage1_right']} right "
             f"only by stage 1, {verdict['only_final_right']} only by this one; McNemar "
             f"p = {verdict['p_value']:.3g})")
    if not verdict["worse"]:
        return f"export guard: passed; {found}"
    if exported == "stage1":
        return (f"WARNING: the method's classifier is worse than plain cross-entropy: {found}. "
                "Exported stage 1's classifier instead; --export_classifier=method exports "
                "the method's")
    return (f"WARNING: the method's classifier is worse than plain cross-entropy: {found}. "
            "Exported it anyway (--export_classifier=method)")
