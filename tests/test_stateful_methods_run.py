"""--method=coteaching|tanaka|pencil end to end on digits with planted class-pair noise
(ccn r = 0.4): `python -m idn_tf.train` and `train.run` on short schedules.

The checks are against things the run cannot have made up: the planted flips, the
training set's size and batch size (Co-teaching's kept counts), the forget-rate and
phase schedules written out by hand, a numpy re-implementation of the stage-1 T
estimate, the saved weights evaluated afresh, and uninterrupted runs (the cells of the
comparison of every method in conftest.py) that a killed and resumed run must match
exactly (--deterministic).
"""

import json
import os
import shutil

import numpy as np
import pytest

from idn_tf import artifacts, config as config_lib, train
from idn_tf.methods import coteaching as coteaching_method
from idn_tf.data import noise, sources

import cli as cli_lib
import early
import killed as killed_lib

pytestmark = pytest.mark.e2e  # train.run, the CLI, compare, kill and resume

SHORT = dict(dataset="digits", noise="ccn", noise_rate=0.4, epochs=4, lr_decay_epochs=(3,),
             val_fraction=0.0,
             verbose=0, monitor_every=1000, export_dir="", audit_folds=2)
# Each method's own flags: Co-teaching with a given τ (no stage 1) reached after 2
# epochs; Tanaka's labels updated from epoch 2; PENCIL's phases 1, 2, 2, 3.
METHODS = {
    "coteaching": dict(method="coteaching", coteaching_tau="0.3", coteaching_t_k=2),
    "tanaka": dict(method="tanaka", tanaka_start_epoch=2),
    # λ given: the default scales the authors' 600 to 2 phase-2 epochs (19500 at batch 64),
    # which saturates rows to exact 0/1 in float32 within a step.
    "pencil": dict(method="pencil", pencil_joint_start=2, pencil_finetune_start=4,
                   pencil_lambda=600.0),
    "elr": dict(method="elr"),
    # DivideMix's warm-up and ramp-up scaled to 4 epochs: 1 epoch each.
    "dividemix": dict(method="dividemix"),
}
TAU, T_K = 0.3, 2


def flags(params):
    """--name=value flags of a dict of Config fields (tuples comma-separated)."""
    return [f"--{k}={','.join(map(str, v)) if isinstance(v, tuple) else v}"
            for k, v in params.items()]


def command_args(method, run_dir):
    return ["--deterministic", *flags({**SHORT, **METHODS[method]}), f"--run_dir={run_dir}"]


def config(method, run_dir, **extra):
    return config_lib.resolve({**SHORT, **METHODS[method], **extra, "run_dir": str(run_dir)})


def read(run_dir, name):
    return artifacts.read_json(os.path.join(run_dir, name))


def noisy_npz(run_dir):
    with np.load(os.path.join(run_dir, "noisy_labels.npz")) as saved:
        return saved["labels"], saved["clean_labels"]


def h5_arrays(path):
    """Every dataset of an .h5 weights file, by name."""
    import h5py
    out = {}
    with h5py.File(path) as f:
        f.visititems(lambda name, d: out.__setitem__(name, d[()])
                     if isinstance(d, h5py.Dataset) else None)
    return out


def tree_state(folder):
    """{relative path: (size, mtime_ns)} of every file under `folder`."""
    state = {}
    for root, _, files in os.walk(folder):
        for name in files:
            st = os.stat(os.path.join(root, name))
            state[os.path.relpath(os.path.join(root, name), folder)] = (st.st_size, st.st_mtime_ns)
    return state


@pytest.fixture(scope="module")
def digits():
    return sources.load("digits")


@pytest.fixture(scope="module")
def planted(digits):
    """The observed labels ccn r = 0.4, seed 0 plants on digits (made here, not by a run)."""
    return noise.make_noisy_labels(digits, "ccn", 0.4, 0).labels


@pytest.fixture(scope="module")
def whole(method_comparison):
    """method -> run folder of one uninterrupted --deterministic run each: the cells of
    conftest.py's comparison of every method, which ran with SHORT and METHODS (checked
    here). Read only."""
    for method in METHODS:
        cell = method_comparison[method]
        assert read(cell, "config.json") == json.loads(json.dumps(
            config(method, cell).semantic_dict())), method
    return {method: method_comparison[method] for method in METHODS}


@pytest.fixture(scope="module")
def tau_runs(tmp_path_factory):
    """Co-teaching with τ measured ("actual") and estimated from stage 1 ("estimate"),
    in-process; "actual" for one epoch (τ is fixed before training)."""
    root = tmp_path_factory.mktemp("tau")
    out = {}
    for name, extra in [("actual", dict(coteaching_tau="actual", epochs=1)),
                        ("estimate", dict(coteaching_tau="estimate", epochs=2,
                                          lr_decay_epochs=()))]:
        cfg = config("coteaching", root / name, **extra)
        out[name] = cfg, train.run(cfg)
    return out


# ---------------------------------------------------------------------------------------
# Co-teaching


def test_coteaching_given_tau_schedule_and_kept_counts(whole, digits, planted):
    run_dir = whole["coteaching"]
    res = read(run_dir, "results.json")
    assert read(run_dir, "coteaching_tau.json") == {"tau": TAU, "how": "given"}
    assert res["coteaching_tau"] == TAU
    assert read(run_dir, "coteaching.json")["extra"] == {"coteaching_tau": TAU,
                                                         "coteaching_tau_source": "given"}
    assert not os.path.exists(run_dir / "stage1.json")  # τ given: no stage 1
    assert res["ce_test_accuracy"] is None
    labels, clean = noisy_npz(run_dir)
    np.testing.assert_array_equal(labels, planted)
    np.testing.assert_array_equal(clean, digits.train.labels)

    history = res["method_history"]
    epochs = SHORT["epochs"]
    rates = [min(t / T_K * TAU, TAU) for t in range(epochs)]  # 0-based t
    assert rates == [0.0, 0.15, 0.3, 0.3]
    # The rate lives in a float32 variable.
    np.testing.assert_array_equal(np.float32(history["forget_rate"]), np.float32(rates))
    # Batches of 64 in every epoch, the last one partial; per batch B − floor(R·B + ½) kept.
    n, batch = len(digits.train), config_lib.Config().batch_size
    sizes = np.array([batch] * (n // batch) + ([n % batch] if n % batch else []))
    assert sizes.sum() == n and sizes[-1] < batch  # 1437 = 22·64 + 29
    kept = [int(np.sum(sizes - np.floor(r * sizes + 0.5))) for r in rates]
    assert kept[0] == n and kept[1] < n
    assert history["kept"] == kept
    assert res["method_test_accuracy"] > 0.6


def test_coteaching_saves_and_evaluates_its_first_network(whole, digits):
    import keras
    from idn_tf import stages
    from idn_tf.data import views
    run_dir = whole["coteaching"]
    res = read(run_dir, "results.json")
    cfg = config("coteaching", run_dir)
    data = views.from_config(cfg, digits)
    classifier = stages.new_classifier(cfg, data)
    saved = h5_arrays(run_dir / "classifier.weights.h5")
    # One network's weights, not the pair's.
    assert sum(a.size for a in saved.values()) == sum(
        int(np.prod(w.shape)) for w in classifier.weights)
    classifier.load_weights(str(run_dir / "classifier.weights.h5"))
    logits = keras.ops.convert_to_numpy(classifier(digits.test.images, training=False))
    accuracy = np.mean(np.argmax(logits, axis=1) == digits.test.labels)
    assert res["method_test_accuracy"] == pytest.approx(accuracy, abs=1e-6)
    assert res["method_history"]["test_accuracy"][-1] == res["method_test_accuracy"]
    # The peer's initial weights (another seed) are not the first network's.
    peer = stages.new_classifier(cfg, data, seed=cfg.seed + coteaching_method.PEER_SEED_OFFSET)
    first = stages.new_classifier(cfg, data)
    assert any(not np.array_equal(a, b) for a, b in zip(first.get_weights(), peer.get_weights()))


def test_coteaching_actual_tau_is_the_measured_noise_rate(tau_runs, digits, planted):
    cfg, res = tau_runs["actual"]
    wrong = float(np.mean(planted != digits.train.labels))
    labels, clean = noisy_npz(cfg.run_dir)
    assert float(np.mean(labels != clean)) == wrong
    assert 0.15 < wrong < 0.25  # 4 of 10 classes flipped at 0.4
    saved = read(cfg.run_dir, "coteaching_tau.json")
    assert saved["tau"] == pytest.approx(wrong, abs=1e-12)
    assert "measured" in saved["how"]
    assert res["coteaching_tau"] == pytest.approx(wrong, abs=1e-12)
    assert res["noise_rate_actual"] == pytest.approx(wrong, abs=1e-12)
    assert not os.path.exists(os.path.join(cfg.run_dir, "stage1.json"))
    # Epoch 0 of the schedule forgets nothing.
    assert res["method_history"]["forget_rate"] == [0.0]
    assert res["method_history"]["kept"] == [len(digits.train)]


def _estimated_tau(probs, labels, percentile=97.0):
    """Σ_i π_i (1 − T_ii), T by the "filter outlier" estimator written out here: row i is
    the probabilities of the example with the largest p(i | x) strictly below the
    percentile-th percentile ("higher") of p(i | ·); π the observed labels' frequencies."""
    n, k = probs.shape
    diagonal = np.empty(k)
    for i in range(k):
        column = np.sort(probs[:, i])
        threshold = column[int(np.ceil(percentile / 100 * (n - 1)))]  # "higher" interpolation
        below = np.flatnonzero(probs[:, i] < threshold)
        pick = below[np.argmax(probs[below, i])]
        diagonal[i] = probs[pick, i]
    prior = np.bincount(labels, minlength=k) / n
    return float(np.sum(prior * (1 - diagonal)))


def test_coteaching_estimated_tau_comes_from_stage_one(tau_runs, digits):
    import keras
    from idn_tf import stages, transition
    from idn_tf.data import views
    cfg, res = tau_runs["estimate"]
    run_dir = cfg.run_dir
    assert os.path.isfile(os.path.join(run_dir, "stage1.json"))
    assert res["ce_test_accuracy"] is not None
    labels, _ = noisy_npz(run_dir)
    data = views.from_config(cfg, digits)
    classifier = stages.new_classifier(cfg, data)
    classifier.load_weights(os.path.join(run_dir, "stage1.weights.h5"))
    logits = keras.ops.convert_to_numpy(
        classifier(digits.train.images, training=False)).astype(np.float64)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    expected = _estimated_tau(probs, labels, cfg.forward_percentile)
    saved = read(run_dir, "coteaching_tau.json")
    assert 0.0 <= saved["tau"] < 1.0
    assert saved["tau"] == pytest.approx(expected, abs=1e-5)
    assert res["coteaching_tau"] == saved["tau"]
    assert "Σ π_i (1 − T_ii)" in saved["how"]
    # Near the 20% of labels the planted noise made wrong, even after 2 epochs of stage 1.
    assert 0.1 < saved["tau"] < 0.35
    # The same through the package's own estimator, as a cross-check of the one above.
    t = transition.estimate_transition_matrix(probs, cfg.forward_percentile)
    prior = np.bincount(labels, minlength=10) / len(labels)
    assert transition.noise_rate_from_transition(t, prior) == pytest.approx(expected, abs=1e-9)
    # The schedule ramps to that τ (T_k = 2 here, the default 10 would reach it later).
    np.testing.assert_array_equal(np.float32(res["method_history"]["forget_rate"]),
                                  np.float32([0.0, min(1 / cfg.coteaching_t_k, 1) * saved["tau"]]))


# ---------------------------------------------------------------------------------------
# Tanaka


def _rates(soft, labels, clean):
    """(corrected, kept): among wrong labels, the share whose soft arg max is the clean
    label; among right ones, the share whose arg max keeps it."""
    guess = np.argmax(soft, axis=1)
    wrong = labels != clean
    return (float(np.mean(guess[wrong] == clean[wrong])),
            float(np.mean(guess[~wrong] == labels[~wrong])))


def test_tanaka_learns_soft_labels_that_correct_the_flips(whole, planted):
    run_dir = whole["tanaka"]
    res = read(run_dir, "results.json")
    labels, clean = noisy_npz(run_dir)
    np.testing.assert_array_equal(labels, planted)
    soft = np.load(run_dir / "soft_labels.npy")
    assert soft.shape == (len(labels), 10) and soft.dtype == np.float32
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, atol=1e-5)
    # Updated from epoch 2 and every example visited each epoch: every row is a softmax
    # (all entries positive), none is still its one-hot observed label.
    assert (soft > 0).all()
    assert np.all(soft[np.arange(len(labels)), labels] < 1.0)
    corrected, kept = _rates(soft, labels, clean)
    assert res["soft_labels_corrected"] == pytest.approx(corrected, abs=1e-12)
    assert res["soft_labels_kept"] == pytest.approx(kept, abs=1e-12)
    phase1 = read(run_dir, "tanaka_labels.json")
    assert phase1["extra"] == {"soft_labels_corrected": res["soft_labels_corrected"],
                               "soft_labels_kept": res["soft_labels_kept"]}
    # A good share of the planted flips is undone, and most right labels stay.
    assert corrected > 0.5 and kept > 0.8
    # Per flipped class, the arg max goes back to the clean class more often than not.
    guess = np.argmax(soft, axis=1)
    for source, target in noise.ccn_pairs("digits", 10).items():
        flipped = (clean == source) & (labels == target)
        assert flipped.any()
        assert np.mean(guess[flipped] == source) > 0.5, (source, target)


def test_tanaka_second_phase_is_a_fresh_network(whole):
    run_dir = whole["tanaka"]
    res = read(run_dir, "results.json")
    phase1, phase2 = read(run_dir, "tanaka_labels.json"), read(run_dir, "tanaka.json")
    assert res["method_history"] == phase2["history"]
    assert res["method_test_accuracy"] == phase2["test_accuracy"]
    assert len(phase1["history"]["accuracy"]) == len(phase2["history"]["accuracy"]) == 4
    # A network carried over from phase 1 would start near phase 1's last accuracy.
    assert phase2["history"]["accuracy"][0] < phase1["history"]["accuracy"][-1] - 0.2
    assert phase2["history"]["accuracy"][0] < phase1["history"]["accuracy"][0] + 0.15
    assert os.path.isdir(run_dir / "tb" / "tanaka_labels")
    assert os.path.isdir(run_dir / "tb" / "tanaka")
    assert not os.listdir(run_dir / "backup")


def test_tanaka_restart_reuses_the_first_phase(whole, tmp_path, capsys):
    run_dir = tmp_path / "tanaka"
    shutil.copytree(whole["tanaka"], run_dir)
    for name in ("tanaka.json", "classifier.weights.h5"):
        os.remove(run_dir / name)
    soft_bytes = (run_dir / "soft_labels.npy").read_bytes()
    phase1_bytes = (run_dir / "tanaka_labels.json").read_bytes()
    tb_phase1 = tree_state(run_dir / "tb" / "tanaka_labels")
    res = train.run(config("tanaka", run_dir))
    out = capsys.readouterr().out
    assert "tanaka, phase 1: reusing" in out
    assert "joint optimisation" not in out and "resuming" not in out
    assert "Tanaka et al.'s second phase" in out
    assert (run_dir / "soft_labels.npy").read_bytes() == soft_bytes
    assert (run_dir / "tanaka_labels.json").read_bytes() == phase1_bytes
    assert tree_state(run_dir / "tb" / "tanaka_labels") == tb_phase1
    assert os.path.isfile(run_dir / "tanaka.json")
    assert os.path.isfile(run_dir / "classifier.weights.h5")
    # Phase 2 trained again from the same soft labels: the same curve as before (this
    # run is not --deterministic, so only nearly).
    before = read(whole["tanaka"], "results.json")
    assert len(res["method_history"]["accuracy"]) == 4
    np.testing.assert_allclose(res["method_history"]["test_accuracy"],
                               before["method_history"]["test_accuracy"], atol=0.03)
    assert res["soft_labels_corrected"] == before["soft_labels_corrected"]


# ---------------------------------------------------------------------------------------
# PENCIL


def test_pencil_phases_and_learned_labels(whole, planted):
    run_dir = whole["pencil"]
    res = read(run_dir, "results.json")
    assert res["method_history"]["pencil_phase"] == [1, 2, 2, 3]
    labels, clean = noisy_npz(run_dir)
    np.testing.assert_array_equal(labels, planted)
    soft = np.load(run_dir / "soft_labels.npy")
    assert soft.shape == (len(labels), 10) and soft.dtype == np.float32
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, atol=1e-5)
    # The labels start as softmax(10·onehot(observed)): log y^d_j − log y^d_observed is
    # −10 off the observed class. Phase 2 visits every row, so every row moved; in
    # probabilities a row the network fits well moves by ~1e-6 only (y^d ≈ onehot), so
    # compare the log-ratios (float32 keeps them to ~1e-7).
    log_ratio = np.log(soft.astype(np.float64))
    log_ratio -= log_ratio[np.arange(len(labels)), labels][:, None]
    moved = np.abs(log_ratio + 10.0 * (1 - np.eye(10)[labels])).max(axis=1)
    assert (moved > 1e-5).all(), int(np.sum(moved <= 1e-5))
    assert np.median(moved) > 0.1
    corrected, kept = _rates(soft, labels, clean)
    assert res["soft_labels_corrected"] == pytest.approx(corrected, abs=1e-12)
    assert res["soft_labels_kept"] == pytest.approx(kept, abs=1e-12)
    assert read(run_dir, "pencil.json")["extra"] == {
        "soft_labels_corrected": res["soft_labels_corrected"],
        "soft_labels_kept": res["soft_labels_kept"]}
    assert not os.path.exists(run_dir / "stage1.json")
    assert res["method_test_accuracy"] > 0.6


# ---------------------------------------------------------------------------------------
# Killed and resumed through the CLI


KILLS = [("coteaching", "coteaching"), ("tanaka", "tanaka_labels"), ("tanaka", "tanaka"),
         ("pencil", "pencil"), ("elr", "elr"), ("dividemix", "dividemix")]  # (method, the stage whose epoch-2 backup stops the run)


@early.job("resumed", __name__)
def _resumed(tmp_path_factory):
    root = tmp_path_factory.mktemp("resumed")
    cases = {}
    for method, stage in KILLS:
        cwd = root / f"{method}-{stage}"
        cwd.mkdir()
        cases[method, stage] = killed_lib.Case(cwd, tuple(command_args(method, "run")),
                                               cwd / "run" / "backup" / stage / "epoch-000002")
    resumed, _ = killed_lib.kill_and_resume(cases)
    return {case: (cases[case].cwd / "run", r.killed, r.returncode, r.output)
            for case, r in resumed.items()}


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """(method, stage) -> (run folder, whether it was killed before the end, the rerun's
    return code, the rerun's output). Every run is SIGKILLed once its stage has a backup
    of 2 epochs, then started again with the same command (killed.py: side by side;
    started early)."""
    return early.result("resumed", tmp_path_factory)


@pytest.mark.parametrize("method, stage", KILLS)
def test_killed_run_resumes_and_matches_an_uninterrupted_one(whole, resumed, method, stage):
    run_dir, killed, code, out = resumed[method, stage]
    assert killed, "the run ended before it could be killed"
    assert code == 0, out[-3000:]
    assert f"resuming {stage} after epoch 2" in out
    assert out.count("resuming ") == 1 + (method == "coteaching")  # nothing else resumed
    for name in ("tanaka_labels", "tanaka") if method == "tanaka" else (method,):
        assert not os.path.exists(run_dir / "backup" / name)  # removed once done
    whole_dir = whole[method]

    res, res_whole = read(run_dir, "results.json"), read(whole_dir, "results.json")
    assert res["method_test_accuracy"] == res_whole["method_test_accuracy"]
    # The weights, which decide everything after them, are compared exactly. The logged
    # epoch means to float32 rounding: DivideMix's have differed in their last digit
    # between two processes with bit-identical weights (epoch-2 loss 3.1309230 against
    # 3.1309235, both before the kill; epoch-3 penalty 0.094993308 against 0.094993301,
    # after it), so a logged reduction is not bit-reproducible across processes even under
    # --deterministic while the training step is.
    weights, weights_whole = (h5_arrays(d / "classifier.weights.h5") for d in (run_dir, whole_dir))
    assert weights.keys() == weights_whole.keys()
    for name in weights:
        np.testing.assert_array_equal(weights[name], weights_whole[name], err_msg=name)
    history, history_whole = res["method_history"], res_whole["method_history"]
    assert history.keys() == history_whole.keys()
    for key in history:
        np.testing.assert_allclose(history[key], history_whole[key], rtol=1e-6, atol=1e-12,
                                   err_msg=key)
    assert res["method_monitor"] == res_whole["method_monitor"]
    for key in ("coteaching_tau", "soft_labels_corrected", "soft_labels_kept"):
        assert res.get(key) == res_whole.get(key), key
    if method == "coteaching":
        assert "coteaching: resuming with the forget rate τ = 0.3000" in out
        assert read(run_dir, "coteaching_tau.json") == read(whole_dir, "coteaching_tau.json")
    elif method == "dividemix":  # the split of the last epoch, recomputed on resume
        assert read(run_dir, "dividemix.json")["extra"] == read(whole_dir, "dividemix.json")["extra"]
    else:
        soft = np.load(run_dir / "soft_labels.npy")
        np.testing.assert_array_equal(soft, np.load(whole_dir / "soft_labels.npy"))
    if method == "tanaka":
        assert read(run_dir, "tanaka_labels.json") == read(whole_dir, "tanaka_labels.json")
        assert ("tanaka, phase 1: reusing" in out) == (stage == "tanaka")


# ---------------------------------------------------------------------------------------
# compare and a flag error


def test_compare_runs_the_three_methods(tmp_path):
    args = ("--dataset=digits", "--noise=ccn", "--noise_rate=0.4",
            "--methods=coteaching,tanaka,pencil", "--seeds=0", "--epochs=2",
            "--lr_decay_epochs=", "--coteaching_tau=0.3", "--coteaching_t_k=1",
            # Tanaka's and PENCIL's schedules left to scale to the 2 epochs.
            "--verbose=0", "--monitor_every=1000", "--compare_dir=cmp")
    result = cli_lib.run("idn_tf.compare", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    folder = tmp_path / "cmp"
    table = (folder / "comparison.md").read_text()
    with np.load(folder / "labels" / "seed-0.npz") as saved:
        labels = saved["labels"]
    for method, row_name in [("coteaching", "Co-teaching"), ("tanaka", "Tanaka"),
                             ("pencil", "PENCIL")]:
        cell = folder / f"{method}-0"
        res = read(cell, "results.json")
        np.testing.assert_array_equal(noisy_npz(cell)[0], labels)
        assert not os.path.exists(cell / "stage1.json")  # τ given: no cell needs stage 1
        rows = [line for line in table.splitlines() if line.startswith(f"| {row_name} |")]
        assert len(rows) == 1, table
        columns = [c.strip().strip("*") for c in rows[0].strip("|").split("|")]
        # selected | last | best | per seed (selected) | seeds done
        last, selected, best = (100 * res[f"method_test_accuracy{k}"]
                                for k in ("", "_selected", "_best"))
        assert columns[1:] == [f"{selected:.2f} ± 0.00", f"{last:.2f} ± 0.00",
                               f"{best:.2f} ± 0.00", f"{selected:.2f}", "1/1"], rows[0]
    assert read(folder / "tanaka-0", "results.json")["method_history"]["accuracy"]
    # Scaled to 2 epochs: phase 2 after round(2·70/320) = 0 epochs, phase 3 after
    # round(2·200/320) = 1.
    assert read(folder / "pencil-0", "results.json")["method_history"]["pencil_phase"] == [2, 3]


@pytest.mark.parametrize("module, known", [("idn_tf.train", "none"), ("idn_tf.train", "some"),
                                           ("idn_tf.compare", "none")])
def test_actual_tau_without_clean_labels_is_one_error_line(tmp_path, digits, module, known,
                                                            zygote, tmp_path_factory):
    arrays = dict(x_train=digits.train.images[..., 0], y_train=digits.train.labels,
                  x_test=digits.test.images[..., 0], y_test=digits.test.labels)
    if known == "some":  # clean labels given for all but one example
        clean = digits.train.labels.copy()
        clean[5] = -1
        arrays["clean_train"] = clean
    np.savez(tmp_path / "mine.npz", **arrays)
    where = ("--run_dir=run",) if module == "idn_tf.train" else (
        "--methods=coteaching", "--seeds=0", "--compare_dir=run")
    method = ("--method=coteaching",) if module == "idn_tf.train" else ()
    # In a fork of cli.Zygote: the command stops at its flags and data.
    result = zygote.run(module, ("--dataset=npz", f"--npz_path={tmp_path / 'mine.npz'}",
                                 "--noise=none", *method, "--coteaching_tau=actual",
                                 "--epochs=1", "--export_dir=", *where),
                        tmp_path, cli_lib.env(), tmp_path_factory.mktemp("outputs"))
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith("error: --coteaching_tau=actual"), errors[0]
    assert "clean labels" in errors[0]
    assert not os.path.exists(tmp_path / "run")  # stopped before any folder was made
