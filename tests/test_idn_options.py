"""The method's options of docs/method.md §7.6, each against an independent computation:
the stratified folds by counting, the temporal ensemble of --q_ensemble against a float64
numpy loop of the whole stage-2 step over two epochs, the K-fold ψ against classifiers
re-fitted here on the folds' rows, --psi_source=selected against stage 1's saved selected
classifier and its validation history; and that the paper's setting stays as it was.
"""

import csv
import dataclasses
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from idn_tf import callbacks, compare, config as config_lib, model, posterior, stages, train
from idn_tf.data import dataset, holdout, views
from idn_tf.errors import ConfigError
from idn_tf.methods import idn

import mirrored

K, N, LR = 3, 12, 0.1
BETA, ETA_LR, EPS = 0.6, 0.3, 1e-4
FLAGS_DIR = os.path.join(os.path.dirname(__file__), os.pardir, "flags")


# ---------------------------------------------------------------------------------------
# The folds of --psi_source=crossval

@pytest.mark.parametrize("folds", [2, 4, 5])
def test_folds_are_disjoint_cover_every_row_and_are_stratified(folds):
    rng = np.random.default_rng(3)
    labels = rng.choice(4, size=203, p=[0.5, 0.3, 0.15, 0.05])
    parts = holdout.fold_rows(labels, folds, seed=7)
    assert len(parts) == folds
    joined = np.concatenate(parts)
    assert sorted(joined.tolist()) == list(range(len(labels)))  # each row once
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    for c in range(4):  # every class split as evenly as it can be
        per_fold = [int(np.sum(labels[p] == c)) for p in parts]
        assert max(per_fold) - min(per_fold) <= 1, (c, per_fold)
    again = holdout.fold_rows(labels, folds, seed=7)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))
    other = holdout.fold_rows(labels, folds, seed=8)
    assert not all(np.array_equal(a, b) for a, b in zip(parts, other))


def test_too_few_rows_for_the_folds_is_refused():
    with pytest.raises(dataset.DataError, match="--psi_folds"):
        holdout.fold_rows(np.zeros(3, np.int64), 4, seed=0)


# ---------------------------------------------------------------------------------------
# --q_ensemble: the stage-2 step with a temporal ensemble, against numpy

def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def numpy_steps(weights, images, labels, batches, psi, eta, beta, epochs):
    """The stage-2 steps written out: p, e ← βe + (1 − β)p, q ∝ e·[(1 − η)ỹ + ηψ] (Eq. 8),
    an SGD step on mean −Σ q log p (dz = (p − q)/B), then the paper's η step (Eq. 11/12)
    with that q, the equations as printed (--eta_numerics=literal; η ≥ 0.05 here, where the
    authors' floor would not bind either). Returns (weights, ensemble [N, K], η [N])."""
    kernel, bias = (np.asarray(w, np.float64) for w in weights)
    x_all = images.reshape(len(images), -1).astype(np.float64) / 255
    ensemble, eta = np.zeros((len(images), K)), np.asarray(eta, np.float64).copy()
    for _ in range(epochs):
        for ids in batches:
            x, y = x_all[ids], labels[ids]
            p = softmax(x @ kernel + bias)
            e = beta * ensemble[ids] + (1 - beta) * p
            onehot = np.eye(K)[y]
            u = e * ((1 - eta[ids])[:, None] * onehot + (eta[ids] * psi[ids])[:, None])
            q = u / u.sum(axis=1, keepdims=True)
            g = (p - q) / len(ids)
            kernel, bias = kernel - LR * x.T @ g, bias - LR * g.sum(axis=0)
            q_k = q[np.arange(len(ids)), y]
            step = ETA_LR * ((1 - q_k) + q_k * eta[ids] * (psi[ids] - 1)) / (eta[ids] + EPS)
            eta[ids] = np.clip(eta[ids] + step, 0.0, 1.0)
            ensemble[ids] = e
    return [kernel, bias], ensemble, eta


def idn_model(weights, psi, eta_init, beta):
    m = model.IDNModel(mirrored.dense_classifier(weights), psi=psi.astype(np.float32),
                       eta_init=eta_init, eta_lr=ETA_LR, eta_eps=EPS, q_ensemble=beta,
                       eta_numerics="literal")
    m.compile(optimizer=keras.optimizers.SGD(learning_rate=LR))
    m.eta_update_enabled.assign(True)
    return m


def case(seed=0):
    rng = np.random.default_rng(seed)
    weights = [(rng.normal(size=(4, K)) * 2).astype(np.float32),
               (rng.normal(size=K) * 0.3).astype(np.float32)]
    images = rng.integers(0, 256, size=(N, 2, 2, 1)).astype(np.uint8)
    labels = rng.integers(0, K, size=N).astype(np.int64)
    psi = rng.uniform(0.2, 0.95, size=N)
    eta = rng.uniform(0.05, 0.6, size=N).astype(np.float32)
    return weights, images, labels, psi, eta


@pytest.mark.parametrize("compiled", [False, True])
def test_the_ensemble_q_and_eta_after_two_epochs_match_a_numpy_loop(compiled):
    weights, images, labels, psi, eta = case()
    order = [np.array([7, 2, 10, 4, 0, 9]), np.array([5, 11, 1, 3, 6, 8])]
    m = idn_model(weights, psi, eta, BETA)
    m.run_eagerly = not compiled
    data = {"image": images, "label": labels, "index": np.arange(N, dtype=np.int64)}
    ds = tf.data.Dataset.from_tensor_slices({k: v[np.concatenate(order)] for k, v in data.items()})
    m.fit(ds.batch(6), epochs=2, verbose=0)
    expected_w, ensemble, expected_eta = numpy_steps(weights, images, labels, order, psi, eta,
                                                     BETA, epochs=2)
    np.testing.assert_allclose(m.ensemble_table.numpy(), ensemble, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m.ensemble_table.numpy().sum(axis=1), 1 - BETA ** 2, rtol=1e-5)
    np.testing.assert_allclose(m.eta.numpy(), expected_eta, rtol=1e-5, atol=1e-6)
    for actual, desired, old in zip(m.classifier.get_weights(), expected_w, weights):
        assert np.abs(desired - old).max() > 1e-3
        np.testing.assert_allclose(actual, desired, rtol=1e-5, atol=1e-6)


def test_the_ensemble_changes_the_step_and_zero_is_the_paper():
    """The same case without the ensemble is the paper's step (q from the batch's p); with
    it the second epoch's q, so the weights, differ (the numpy loop at β = 0 is the check)."""
    weights, images, labels, psi, eta = case(1)
    order = [np.arange(N)]
    data = {"image": images, "label": labels, "index": np.arange(N, dtype=np.int64)}
    ds = tf.data.Dataset.from_tensor_slices(data).batch(N)
    paper = idn_model(weights, psi, eta, 0.0)
    assert paper.ensemble_table is None and len(paper.weights) == 5  # kernel, bias, η, ψ, flag
    paper.fit(ds, epochs=2, verbose=0)
    expected_w, _, expected_eta = numpy_steps(weights, images, labels, order, psi, eta, 0.0, 2)
    np.testing.assert_allclose(paper.eta.numpy(), expected_eta, rtol=1e-5, atol=1e-6)
    for actual, desired in zip(paper.classifier.get_weights(), expected_w):
        np.testing.assert_allclose(actual, desired, rtol=1e-5, atol=1e-6)
    ensembled = idn_model(weights, psi, eta, 0.9)
    ensembled.fit(ds, epochs=2, verbose=0)
    gap = np.abs(ensembled.classifier.get_weights()[0] - paper.classifier.get_weights()[0]).max()
    assert gap > 1e-5  # float32 round-off is ~1e-7 here
    expected_w, _, _ = numpy_steps(weights, images, labels, order, psi, eta, 0.9, 2)
    for actual, desired in zip(ensembled.classifier.get_weights(), expected_w):
        np.testing.assert_allclose(actual, desired, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="q_ensemble"):
        idn_model(weights, psi, eta, 1.0)


# ---------------------------------------------------------------------------------------
# --psi_source=crossval and selected, on digits

SHORT = dict(epochs=3, lr_decay_epochs=(2,), eta_start_epoch=2, eta_every=1, verbose=0,
             export_dir="", monitor_every=1000, audit_folds=2)


@pytest.mark.e2e
def test_crossval_psi_equals_classifiers_refitted_on_the_folds(tmp_path):
    from idn_tf import inputs
    config = config_lib.Config(run_dir=str(tmp_path / "run"), **SHORT)
    os.makedirs(config.run_dir)
    full = inputs.load_data(config)
    labels = np.asarray(full.train.labels) + 0  # clean labels as observed: any labels do
    rows = holdout.validation_rows(labels, config.val_fraction, config.seed)
    data, train_labels = full.hold_out(rows, labels)
    psi = stages.crossval_psi(config, data, train_labels, 3)
    # Re-fit here, from the raw arrays: fold k's rows by counting off the seeded folds, a
    # classifier trained as stage 1 on the others, its probability of each held row's label.
    images, clean = data.train.images, data.train.clean_labels
    expected = np.full(len(train_labels), np.nan)
    for k, held in enumerate(holdout.fold_rows(train_labels, 3, config.seed)):
        fit = np.setdiff1d(np.arange(len(train_labels)), held)
        assert not set(fit) & set(held)
        part = dataset.Split(images[fit], train_labels[fit], clean[fit])
        view = views.ArrayData(dataclasses.replace(data.dataset, train=part),
                               validation=data.validation, rows=data.rows[fit])
        refit_config = dataclasses.replace(config, run_dir=str(tmp_path / f"refit{k}"))
        classifier, _ = stages.train_cross_entropy(refit_config, view, train_labels[fit])
        probs = np.exp(model.predict_log_probs(classifier, images[held], 64))
        expected[held] = probs[np.arange(len(held)), train_labels[held]]
    assert np.isfinite(expected).all()
    np.testing.assert_allclose(psi, expected, rtol=1e-5, atol=1e-7)
    # Out of sample: the in-sample ψ of a classifier trained on every row is higher.
    classifier, _ = stages.train_cross_entropy(dataclasses.replace(
        config, run_dir=str(tmp_path / "all")), data, train_labels)
    in_sample = stages.estimate_psi(classifier, data, train_labels, 64)
    assert in_sample.mean() > psi.mean()


def audit_psi(run_dir):
    with open(os.path.join(run_dir, "label_audit.csv")) as f:
        found = {int(r["index"]): float(r["psi"]) for r in csv.DictReader(f)
                 if r["split"] == "train"}
    return np.array([found[i] for i in sorted(found)])


@pytest.mark.e2e
def test_selected_psi_is_stage_one_at_its_best_validation_epoch(tmp_path):
    from idn_tf import inputs
    cfg = config_lib.Config(run_dir=str(tmp_path / "run"), psi_source="selected", noise="ccn",
                            **SHORT)
    results = train.run(cfg)
    with open(os.path.join(cfg.run_dir, "stage1.json")) as f:
        stage1 = json.load(f)
    val = np.array(stage1["history"]["val_accuracy"])
    loss = np.array(stage1["history"]["val_loss"])
    best = [e for e in range(len(val)) if val[e] == val.max()]
    epoch = 1 + min(best, key=lambda e: (loss[e], e))  # ties: lowest loss, then earliest
    assert stage1["selection"]["epoch"] == epoch == results["ce_selected_epoch"]
    # ψ recomputed from the saved selected weights, on the trained rows.
    with np.load(os.path.join(cfg.run_dir, "noisy_labels.npz")) as saved:
        labels, held = saved["labels"], saved["validation_rows"]
    data, train_labels = inputs.split_validation(inputs.load_data(cfg), labels, held)
    classifier = stages.new_classifier(cfg, data)
    classifier.set_weights(callbacks.load_weights_list(os.path.join(cfg.run_dir,
                                                                    "stage1.selected.npz")))
    probs = np.exp(model.predict_log_probs(classifier, data.train.images, 64))
    expected = probs[np.arange(len(train_labels)), train_labels]
    order = np.argsort(data.rows)
    np.testing.assert_allclose(audit_psi(cfg.run_dir), expected[order], rtol=1e-4, atol=1e-6)
    final = np.load(os.path.join(cfg.run_dir, "psi.npy"))  # stage 1's last epoch: not used
    if epoch != cfg.epochs:
        assert np.abs(final - expected).max() > 1e-3


@pytest.mark.e2e
def test_crossval_psi_from_the_audits_folds_is_their_training_rows(tmp_path):
    # --psi_folds equal to --audit_folds: ψ from the audit's folds, whose audit_probs.npy
    # also holds the validation rows after the trained ones; ψ takes the trained rows.
    cfg = config_lib.Config(run_dir=str(tmp_path / "run"), psi_source="crossval",
                            psi_folds=SHORT["audit_folds"], **SHORT)
    train.run(cfg)
    with np.load(os.path.join(cfg.run_dir, "noisy_labels.npz")) as saved:
        labels, held = saved["labels"], saved["validation_rows"]
    trained = np.setdiff1d(np.arange(len(labels)), held)
    n = len(trained)
    probs = np.load(os.path.join(cfg.run_dir, "audit_probs.npy"))
    assert probs.shape == (n + len(held), 10)
    expected = np.maximum(probs[np.arange(n), labels[trained]], np.finfo(np.float32).tiny)
    psi = np.load(os.path.join(cfg.run_dir, "psi_folds.npy"))
    np.testing.assert_array_equal(psi, expected.astype(np.float32))
    np.testing.assert_allclose(audit_psi(cfg.run_dir), psi, rtol=1e-6)  # stage 2's ψ


# ---------------------------------------------------------------------------------------
# The preset, the schedule option, and the paper's setting

def test_the_paper_setting_records_what_it_recorded_before():
    """At their paper settings the options are not in a run's recorded configuration, so
    folders written before they existed (and today's figures) are still this setting."""
    semantic = config_lib.Config().semantic_dict()
    assert not set(idn.OPTIONS) & set(semantic)
    crossval = config_lib.Config(psi_source="crossval").semantic_dict()
    assert crossval["psi_source"] == "crossval" and crossval["psi_folds"] == 4
    assert "psi_folds" not in config_lib.Config(psi_folds=7).semantic_dict()
    assert config_lib.Config(q_ensemble=0.7).semantic_dict()["q_ensemble"] == 0.7
    assert "q_ensemble" not in config_lib.Config(method="ce", q_ensemble=0.7).semantic_dict()


def parse_flagfile(path):
    from idn_tf import flagdefs
    flagdefs.FLAGS.unparse_flags()
    flagdefs.FLAGS(["prog", f"--flagfile={path}"])
    try:
        return flagdefs.explicit_fields()
    finally:
        flagdefs.FLAGS.unparse_flags()


def test_the_preset_is_its_flagfile_and_sits_between_recipe_and_flags(monkeypatch):
    given = parse_flagfile(os.path.join(FLAGS_DIR, "idn_plus.cfg"))
    assert given == {"preset": "idn_plus", **config_lib.PRESETS["idn_plus"]}
    # The order, with a preset that sets something (idn_plus sets nothing today).
    monkeypatch.setitem(config_lib.PRESETS, "idn_plus", {"eta_min": 0.002, "q_ensemble": 0.5})
    for dataset_name in ("digits", "cifar10", "cifar100"):
        base = config_lib.resolve({"dataset": dataset_name})
        plus = config_lib.resolve({"dataset": dataset_name, "preset": "idn_plus"})
        assert (plus.eta_min, plus.q_ensemble) == (0.002, 0.5)  # over the recipe
        changed = {f for f in config_lib.field_names() if getattr(plus, f) != getattr(base, f)}
        assert changed - {"run_dir", "model_name"} == {"preset", "eta_min", "q_ensemble"}
        assert plus.run_name() == base.run_name()[:-2] + "-idn_plus-0"
    explicit = config_lib.resolve({"preset": "idn_plus", "eta_min": 0.001})
    assert (explicit.eta_min, explicit.q_ensemble) == (0.001, 0.5)  # under the flags given
    assert "preset" not in explicit.semantic_dict()  # what it sets is recorded, not its name
    with pytest.raises(ConfigError, match="--preset"):
        config_lib.resolve({"preset": "idn_best"})


def test_late_decay_keeps_only_the_last_step():
    cfg = config_lib.Config(stage2_lr_decay="late", lr_decay_epochs=(10, 20, 30))
    assert idn.METHOD.stage_config(cfg).lr_decay_epochs == (30,)
    schedule = stages.learning_rate(idn.METHOD.stage_config(cfg), steps_per_epoch=5)
    assert [float(schedule(s)) for s in (0, 100, 149, 150)] == pytest.approx(
        [0.05, 0.05, 0.05, 0.005])
    assert idn.METHOD.stage_config(config_lib.Config()) == config_lib.Config()
    assert idn.METHOD.stage_config(dataclasses.replace(cfg, lr_decay_epochs=())).lr_decay_epochs == ()


def test_psi_selected_needs_a_validation_split():
    with pytest.raises(ConfigError, match="--psi_source"):
        config_lib.validate(config_lib.Config(psi_source="selected", val_fraction=0.0))
    config_lib.validate(config_lib.Config(psi_source="selected", val_fraction=0.0, method="ce"))


# ---------------------------------------------------------------------------------------
# compare: sweeps of a choice flag, stage 1 from another comparison in the folder

def test_a_choice_flag_and_the_preset_can_be_swept(monkeypatch):
    assert compare._sweep("psi_source=selected,crossval", {}) == (
        "psi_source", ["selected", "crossval"])
    with pytest.raises(ConfigError, match="one of final, selected, crossval"):
        compare._sweep("psi_source=selected,best", {})
    with pytest.raises(ConfigError, match="cannot be swept"):
        compare._sweep("noise=ccn,kmeans", {})
    with pytest.raises(ConfigError, match="changes nothing"):  # idn_plus is the paper's today
        compare.Comparison({"dataset": "digits"}, ["idn", "ce"], [0],
                           sweep=("preset", ["none", "idn_plus"]))
    monkeypatch.setitem(config_lib.PRESETS, "idn_plus", {"q_ensemble": 0.5})
    c = compare.Comparison({"dataset": "digits"}, ["idn", "ce"], [0],
                           sweep=("preset", ["none", "idn_plus"]))
    assert list(c.rows) == ["idn-presetnone", "idn-presetidn_plus", "ce"]
    assert c.title("idn-presetidn_plus").endswith("preset = idn_plus")


def test_stage_one_is_looked_for_in_other_run_folders_of_the_comparison(tmp_path):
    c = compare.Comparison({"dataset": "digits"}, ["idn", "tanaka"], [0, 1],
                           compare_dir=str(tmp_path), sweep=None)
    for name in ("idn-psi_sourcecrossval-0", "zz-not-a-run", "idn-1"):
        os.makedirs(tmp_path / name)
    for name in ("idn-psi_sourcecrossval-0", "idn-1"):
        (tmp_path / name / "config.json").write_text("{}")
    found = [os.path.basename(f) for f in c.siblings(("idn", 0))]
    # No other cell of seed 0 trains stage 1 (Tanaka does not), so: the folders with a
    # config.json, in name order (`share_stage1` then checks each one's stage 1 and labels).
    assert found == ["idn-1", "idn-psi_sourcecrossval-0"]
    c = compare.Comparison({"dataset": "digits"}, ["idn", "ce"], [0], compare_dir=str(tmp_path))
    assert [os.path.basename(f) for f in c.siblings(("idn", 0))][0] == "ce-0"


# ---------------------------------------------------------------------------------------
# What stage 2 is (docs/method.md §7.6): a cross-entropy on the observed label weighted by
# the posterior probability that it is the true one

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_paper_stage_two_gradient_is_weighted_cross_entropy(seed):
    rng = np.random.default_rng(seed)
    b, k = 16, 5
    logits = tf.constant(rng.normal(size=(b, k)) * 3)
    labels = rng.integers(0, k, size=b)
    eta = rng.uniform(0, 1, size=b)
    eta[:3] = [0.0, 1.0, 0.5]
    psi = rng.uniform(0.05, 1.0, size=b)
    with tf.GradientTape() as tape:
        tape.watch(logits)
        log_p = tf.nn.log_softmax(logits)
        # the identity is exact for the equations as printed (the floor perturbs it by ~1e-5)
        q = posterior.posterior_from_log_probs(log_p, labels, eta, psi, numerics="literal")
        loss = -tf.reduce_sum(q * log_p)
    grad = tape.gradient(loss, logits).numpy()
    p = softmax(logits.numpy())
    p_obs = p[np.arange(b), labels]
    clean = p_obs * (1 - eta) / (p_obs * (1 - eta) + eta * psi)  # P(ỹ is the true label)
    expected = clean[:, None] * (p - np.eye(k)[labels])
    np.testing.assert_allclose(grad, expected, rtol=1e-6, atol=1e-9)
    assert np.abs(grad[1]).max() < 1e-12  # η = 1: no gradient at all
