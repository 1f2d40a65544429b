"""Every --method end to end on digits with planted class-pair noise (ccn r = 0.4).

Each run is a real `train.run` on a short schedule (most of them cells of the comparison
of every method in conftest.py); the checks are against things the
run cannot have made up: the planted flips (9→1, 2→0, 4→7, 3↔5), the stage-1 files
it started from, a transition matrix given to it, and the results it wrote.
"""

import dataclasses
import json
import os
import shutil

import numpy as np
import pytest

from idn_tf import artifacts, config as config_lib, methods, train
from idn_tf.data import noise, sources

SHORT = dict(dataset="digits", noise="ccn", noise_rate=0.4, epochs=4, lr_decay_epochs=(3,),
             val_fraction=0.0,
             eta_start_epoch=2, eta_every=1, verbose=0, monitor_every=1000, export_dir="",
             audit_folds=2)
PAIRS = noise.ccn_pairs("digits", 10)


def _planted_transition(rate=0.4):
    """The planted T: row i = P(observed | clean i) of ccn noise at `rate`."""
    t = np.eye(10)
    for source, target in PAIRS.items():
        t[source, source] = 1 - rate
        t[source, target] = rate
    return t


@pytest.fixture(scope="module")
def runs(tmp_path_factory, method_comparison):
    """method -> (config, results) of one short run each, all on the same labels: copies
    of the cells of conftest.py's comparison of every method (which ran with SHORT and
    `extra`, checked here; copies, as tests here restart them), and a run of forward with
    the planted T given."""
    root = tmp_path_factory.mktemp("methods")
    np.save(root / "planted.npy", _planted_transition())
    out = {}
    for name, extra in [("ce", dict(method="ce")),
                        ("idn", dict(method="idn")),
                        ("forward", dict(method="forward")),
                        ("forward_given", dict(method="forward",
                                               transition_matrix=str(root / "planted.npy"))),
                        ("bootstrap_soft", dict(method="bootstrap_soft")),
                        ("bootstrap_hard", dict(method="bootstrap_hard")),
                        ("ldmi", dict(method="ldmi", dmi_lr=1e-4))]:
        cfg = config_lib.resolve({**SHORT, **extra, "run_dir": str(root / name)})
        if name not in method_comparison:
            out[name] = cfg, train.run(cfg)
            continue
        shutil.copytree(method_comparison[name], root / name)
        assert artifacts.read_json(root / name / "config.json") == json.loads(
            json.dumps(cfg.semantic_dict())), name
        out[name] = cfg, artifacts.read_json(root / name / "results.json")
    return out


def _labels(cfg):
    with np.load(os.path.join(cfg.run_dir, "noisy_labels.npz")) as saved:
        return saved["labels"]


@pytest.mark.e2e
def test_every_method_learns_from_the_planted_labels(runs):
    digits = sources.load("digits")
    planted = noise.make_noisy_labels(digits, "ccn", 0.4, 0).labels
    for name, (cfg, res) in runs.items():
        assert np.array_equal(_labels(cfg), planted), name
        assert res["method"] == cfg.method
        # Chance is 0.1; four epochs of any of these methods reach well above it.
        assert res["method_test_accuracy"] > 0.6, (name, res["method_test_accuracy"])
        assert os.path.isfile(os.path.join(cfg.run_dir, "results.json"))


@pytest.mark.e2e
def test_ce_is_stage_one_alone(runs):
    cfg, res = runs["ce"]
    assert res["method_test_accuracy"] == res["ce_test_accuracy"]
    assert not os.path.exists(os.path.join(cfg.run_dir, "classifier.weights.h5"))
    assert not os.path.exists(os.path.join(cfg.run_dir, "eta.npy"))
    # The method's run trains the same stage 1 (same flags, seed and labels).
    assert runs["idn"][1]["ce_test_accuracy"] == res["ce_test_accuracy"]


@pytest.mark.e2e
def test_stage_one_runs_only_when_the_method_needs_it(runs):
    for name, (cfg, res) in runs.items():
        ran = os.path.isfile(os.path.join(cfg.run_dir, "stage1.json"))
        assert ran == (name in ("ce", "idn", "forward", "ldmi")), name
        assert (res["ce_test_accuracy"] is not None) == ran, name


@pytest.mark.e2e
def test_forward_estimates_the_planted_pairs(runs):
    cfg, res = runs["forward"]
    t = np.load(os.path.join(cfg.run_dir, "transition_matrix.npy"))
    assert t.shape == (10, 10)
    np.testing.assert_allclose(t.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(res["transition_matrix"]), t, rtol=1e-6)
    # Each flipped class's largest off-diagonal entry is its planted target.
    for source, target in PAIRS.items():
        off = np.delete(t[source], source)
        assert np.argmax(off) == (target if target < source else target - 1), (source, t[source])
    # Classes with no planted flip keep almost all their mass on the diagonal.
    for c in set(range(10)) - set(PAIRS):
        assert t[c, c] > 0.8, (c, t[c])


@pytest.mark.e2e
def test_forward_with_a_given_matrix_uses_it_and_skips_stage_one(runs):
    cfg, res = runs["forward_given"]
    t = np.load(os.path.join(cfg.run_dir, "transition_matrix.npy"))
    np.testing.assert_allclose(t, _planted_transition(), rtol=1e-6)
    assert res["ce_test_accuracy"] is None


@pytest.mark.e2e
def test_ldmi_starts_from_stage_one_and_trains_it(runs):
    cfg, res = runs["ldmi"]
    stage1 = res["ce_history"]
    history = res["method_history"]
    # Its first epoch starts where stage 1 ended: its training accuracy on the observed
    # labels is near stage 1's last, far above a fresh network's first epoch.
    assert history["accuracy"][0] > stage1["accuracy"][0] + 0.1
    assert np.all(np.isfinite(history["loss"]))
    # The DMI stage moved the weights (classifier.weights.h5 is not stage 1's).
    import h5py
    def arrays(name):
        out = []
        with h5py.File(os.path.join(cfg.run_dir, name)) as f:
            f.visititems(lambda _, d: out.append(d[()]) if isinstance(d, h5py.Dataset) else None)
        return out
    before, after = arrays("stage1.weights.h5"), arrays("classifier.weights.h5")
    assert len(before) == len(after)
    assert max(np.abs(a - b).max() for a, b in zip(after, before)) > 1e-4
    assert res["method_test_accuracy"] != res["ce_test_accuracy"]


@pytest.mark.e2e
def test_ldmi_trains_at_its_own_constant_rate(runs):
    from tb_events import summaries
    cfg, _ = runs["ldmi"]
    rates = [float(v.simple_value) if v.HasField("simple_value") else
             float(np.frombuffer(v.tensor.tensor_content, np.float32)[0])
             if v.tensor.tensor_content else float(v.tensor.float_val[0])
             for _, v in summaries(os.path.join(cfg.run_dir, "tb", "ldmi", "train"))
             if v.tag == "epoch_learning_rate"]
    assert len(rates) == cfg.epochs
    np.testing.assert_allclose(rates, 1e-4, rtol=1e-6)


def _true_transition(cfg, labels=None):
    from idn_tf.data import views
    from idn_tf.methods import forward
    data = views.from_config(cfg, sources.load(cfg.dataset))
    if labels is None:
        labels = noise.make_noisy_labels(data.dataset, cfg.noise, cfg.noise_rate, cfg.seed,
                                         **cfg.noise_options()).labels
    return forward.true_transition(methods.Run(cfg, data, labels, None, None)), data, labels


def test_forward_true_transition_is_the_generating_ccn_matrix():
    cfg = config_lib.resolve({**SHORT, "method": "forward", "transition_matrix": "true"})
    (matrix, how), _, _ = _true_transition(cfg)
    np.testing.assert_allclose(matrix, _planted_transition(0.4), atol=1e-7)
    assert "generating matrix of ccn" in how


def test_forward_true_transition_of_symmetric_noise():
    cfg = config_lib.resolve({**SHORT, "noise": "symmetric", "noise_rate": 0.3,
                              "method": "forward", "transition_matrix": "true"})
    (matrix, _), _, _ = _true_transition(cfg)
    expected = np.full((10, 10), 0.3 / 9)
    np.fill_diagonal(expected, 0.7)
    np.testing.assert_allclose(matrix, expected, atol=1e-7)


def test_forward_true_transition_counts_instance_dependent_noise():
    cfg = config_lib.resolve({**SHORT, "noise": "kmeans", "method": "forward",
                              "transition_matrix": "true"})
    (matrix, how), data, labels = _true_transition(cfg)
    clean = data.train.clean_labels
    expected = np.zeros((10, 10))
    for i in range(10):  # row i: the observed labels of the examples of clean class i
        for j in range(10):
            expected[i, j] = np.sum((clean == i) & (labels == j)) / np.sum(clean == i)
    np.testing.assert_allclose(matrix, expected, atol=1e-6)
    assert "counted" in how


def test_forward_true_transition_needs_the_clean_labels():
    from idn_tf.errors import ConfigError
    from idn_tf.methods import forward

    class Unknown:
        class train:
            clean_labels = np.array([0, -1, 1])
    cfg = config_lib.resolve({"method": "forward", "transition_matrix": "true"})
    with pytest.raises(ConfigError, match="^--transition_matrix=true: the clean labels"):
        forward.METHOD.preflight(cfg, Unknown)


@pytest.mark.parametrize("method, beta, hard", [("bootstrap_soft", 0.7, False),
                                                ("bootstrap_hard", 0.6, True)])
def test_bootstrap_models_take_their_own_flags(method, beta, hard):
    from idn_tf import stages
    from idn_tf.data import views
    cfg = config_lib.resolve({"method": method, "bootstrap_soft_beta": 0.7,
                              "bootstrap_hard_beta": 0.6, "verbose": 0})
    data = views.from_config(cfg, sources.load("digits"))
    with stages.model_scope(cfg):
        built = methods.get(method).build(methods.Run(cfg, data, None, None, None), {})
    assert (built.beta, built.hard) == (beta, hard)


@pytest.mark.e2e
def test_bootstrap_variants_differ(runs):
    soft, hard = runs["bootstrap_soft"][1], runs["bootstrap_hard"][1]
    assert soft["method_history"]["loss"] != hard["method_history"]["loss"]


@pytest.mark.e2e
def test_a_finished_baseline_run_is_reused(runs, capsys):
    cfg, res = runs["forward"]
    again = train.run(cfg)
    out = capsys.readouterr().out
    assert "forward: reusing" in out and "stage 1: reusing" in out
    assert again["method_test_accuracy"] == res["method_test_accuracy"]
    assert again["transition_matrix"] == res["transition_matrix"]


@pytest.mark.e2e
def test_baseline_flags_are_part_of_the_restart_check(runs):
    cfg, _ = runs["bootstrap_soft"]
    with pytest.raises(artifacts.RunDirError, match="bootstrap_soft_beta"):
        train.run(dataclasses.replace(cfg, bootstrap_soft_beta=0.5))
    # Another method's settings (and η's) do not concern it.
    assert dataclasses.replace(cfg, dmi_lr=0.1, eta_lr=0.9).semantic_dict() == cfg.semantic_dict()


@pytest.mark.e2e
def test_the_comparison_table_holds_each_cells_own_results(method_comparison):
    """The comparison of every method (conftest.py), made without a validation split: one
    row per method, made of its cell's results, every cell on the seed's labels (a method
    added to COMPARED_METHODS is checked here too)."""
    folder = next(iter(method_comparison.values())).parent
    table = (folder / "comparison.md").read_text()
    with np.load(folder / "labels" / "seed-0.npz") as saved:
        labels = saved["labels"]
    for method, cell in method_comparison.items():
        res = artifacts.read_json(cell / "results.json")
        with np.load(cell / "noisy_labels.npz") as saved:
            np.testing.assert_array_equal(saved["labels"], labels, err_msg=method)
        rows = [line for line in table.splitlines()
                if line.startswith(f"| {methods.get(method).title} |")]
        assert len(rows) == 1, (method, table)
        columns = [c.strip().strip("*") for c in rows[0].strip("|").split("|")]
        # selected | last | best | per seed | seeds done; no validation split (val_fraction
        # 0): nothing selected, the seeds' last epochs listed.
        assert res["method_test_accuracy_selected"] is None, method
        last, best = (100 * res[f"method_test_accuracy{k}"] for k in ("", "_best"))
        assert columns[1:] == ["–", f"{last:.2f} ± 0.00", f"{best:.2f} ± 0.00", f"{last:.2f}",
                               "1/1"], rows[0]
