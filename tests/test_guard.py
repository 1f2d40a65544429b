"""The export guard (`guard`, `runner.guarded_export_choice`): McNemar's one-sided exact
test against scipy, and a run made to collapse exporting stage 1's classifier."""

import json
import os

import numpy as np
import pytest
from scipy import stats

from idn_tf import guard


@pytest.mark.parametrize("trials", [0, 1, 2, 5, 13, 31, 60, 145, 1000])
def test_binomial_tail_is_scipys_one_sided_binomial_test(trials):
    for successes in sorted({0, 1, trials // 3, trials // 2, trials // 2 + 1, trials - 1, trials}):
        if not 0 <= successes <= trials:
            continue
        expected = 1.0 if trials == 0 else stats.binomtest(
            successes, trials, 0.5, alternative="greater").pvalue
        assert guard.binomial_tail(successes, trials) == pytest.approx(expected, rel=1e-9, abs=1e-300)


def correctness(both, only_stage1, only_final, neither):
    stage1 = [True] * both + [True] * only_stage1 + [False] * only_final + [False] * neither
    final = [True] * both + [False] * only_stage1 + [True] * only_final + [False] * neither
    return np.array(stage1), np.array(final)


def test_hand_worked_verdicts():
    # 30 images, K = 10 (chance 0.1): stage 1 right on 12, the final classifier on 2, both
    # on the same 2. b = 10, c = 0: P(X >= 10 | 10) = 1/1024; lost (0.4 - 2/30) / 0.3 = 1.11.
    verdict = guard.compare(*correctness(2, 10, 0, 18), 10)
    assert (verdict["only_stage1_right"], verdict["only_final_right"]) == (10, 0)
    assert verdict["p_value"] == pytest.approx(1 / 1024)
    assert verdict["lost_share"] == pytest.approx((12 / 30 - 2 / 30) / (12 / 30 - 0.1))
    assert verdict["stage1_validation_accuracy"] == pytest.approx(12 / 30)
    assert verdict["final_validation_accuracy"] == pytest.approx(2 / 30)
    assert verdict["worse"]
    # As large a loss on 10 images: b = 4, P = 1/16, not significant.
    verdict = guard.compare(*correctness(1, 4, 0, 5), 10)
    assert verdict["p_value"] == pytest.approx(1 / 16) and verdict["lost_share"] > 0.5
    assert not verdict["worse"]
    # k-means digits, seed 4 (BENCHMARKS.md): 16 images right only by stage 1, none only by
    # the method, which was better on test. Significant, but 13% of 0.838 lost: not worse.
    verdict = guard.compare(*correctness(120, 16, 0, 9), 10)
    assert verdict["p_value"] == pytest.approx(0.5 ** 16)
    assert verdict["lost_share"] == pytest.approx((16 / 145) / (136 / 145 - 0.1))
    assert not verdict["worse"]
    # b = 8, c = 2: P(X >= 8 | 10) = 56/1024.
    assert guard.compare(*correctness(10, 8, 2, 11), 10)["p_value"] == pytest.approx(56 / 1024)
    # The final classifier better, stage 1 at chance, no images: never worse.
    assert not guard.compare(*correctness(100, 0, 50, 0), 10)["worse"]
    assert not guard.compare(*correctness(0, 3, 0, 27), 10)["worse"]
    assert not guard.compare(*correctness(0, 0, 0, 0), 10)["worse"]


def test_messages_say_which_classifier_was_exported():
    verdict = guard.compare(*correctness(2, 10, 0, 18), 10)
    assert "exported stage 1's classifier instead" in guard.message(verdict, "stage1")
    assert "exported it anyway" in guard.message(verdict, "method")
    for exported in ("stage1", "method"):
        assert max(map(len, guard.message(verdict, exported).splitlines())) <= 120
    assert guard.message(guard.compare(*correctness(20, 1, 1, 5), 10), "method").startswith(
        "export guard: passed")


# η from the first epoch at α₁ = 50: every η jumps to 1, q becomes the network's own
# prediction and the classifier stays near chance, while stage 1 learns digits.
COLLAPSE = dict(epochs=3, eta_start_epoch=1, eta_every=1, eta_lr=50.0, lr_decay_epochs=(2,),
                verbose=0, audit_folds=0)


def served_probabilities(path, images):
    import tensorflow as tf
    serve = tf.saved_model.load(path).signatures["serving_default"]
    return serve(images=tf.constant(images))["probabilities"].numpy()


def selected_probabilities(cfg, data, run_dir, stage, images):
    """Softmax of the run's <stage>.selected.npz classifier (built on the run's training
    view: its standardisation statistics are those rows')."""
    from idn_tf import callbacks, stages
    classifier = stages.new_classifier(cfg, data)
    classifier.set_weights(callbacks.load_weights_list(os.path.join(run_dir, f"{stage}.selected.npz")))
    logits = classifier.predict(images, verbose=0).astype(np.float64)
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


@pytest.mark.e2e
def test_a_collapsed_run_exports_stage_1s_classifier_and_says_so(tmp_path, capsys):
    from idn_tf import config as config_lib, inputs, train
    run_dir, exports = str(tmp_path / "run"), str(tmp_path / "exports")
    cfg = config_lib.Config(run_dir=run_dir, export_dir=exports, **COLLAPSE)
    res = train.run(cfg)
    out = capsys.readouterr().out
    verdict = res["export_guard"]
    assert verdict["worse"] and res["exported_classifier"] == "stage1"
    # The guard's accuracies are those Keras logged for the selected epochs.
    assert verdict["stage1_validation_accuracy"] == pytest.approx(res["ce_validation_accuracy"], abs=1e-6)
    assert verdict["final_validation_accuracy"] == pytest.approx(res["method_validation_accuracy"], abs=1e-6)
    assert verdict["validation_images"] == 145
    assert res["method_test_accuracy_selected"] < res["ce_test_accuracy_selected"]
    warning = "WARNING: the method's classifier is far worse than plain cross-entropy"
    assert out.count(warning) == 2  # before the export and in the closing table
    assert "exported stage 1's (plain cross-entropy) classifier" in out
    with open(os.path.join(run_dir, "results.json")) as f:
        assert json.load(f)["exported_classifier"] == "stage1"
    data = inputs.load_data(cfg)
    with np.load(os.path.join(run_dir, "noisy_labels.npz")) as saved:  # the run's training view:
        data, _ = inputs.split_validation(data, saved["labels"], saved["validation_rows"])
    images = data.dataset.test.images[:64]
    served = served_probabilities(res["saved_model"], images)
    np.testing.assert_allclose(served, selected_probabilities(cfg, data, run_dir, "stage1", images),
                               atol=1e-5)

    # Asked for the method's classifier: the same run folder, nothing retrained, a new
    # version holding the method's selected classifier, and the warning kept.
    forced = train.run(config_lib.Config(run_dir=run_dir, export_dir=exports,
                                         export_classifier="method", **COLLAPSE))
    out = capsys.readouterr().out
    assert forced["exported_classifier"] == "method"
    assert "exported it anyway" in out and "reusing" in out
    assert forced["saved_model"] != res["saved_model"]
    served = served_probabilities(forced["saved_model"], images)
    np.testing.assert_allclose(served, selected_probabilities(cfg, data, run_dir, "stage2", images),
                               atol=1e-5)
