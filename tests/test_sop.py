"""Checks of SOP (Liu et al. 2022; `idn_tf.sop`, `idn_tf.methods.sop`) against numpy.

Every expected value is computed here in float64 numpy from the authors' loss
(shengliu66/SOP, `overparametrization_loss`), with hand-derived gradients that are
themselves checked against finite differences, and one batch worked by hand: never from
`sop`'s own output.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from idn_tf import config as config_lib
from idn_tf import methods, sop
from idn_tf.methods.sop import cosine_learning_rate

import mirrored

K, N, LR = 3, 12, 0.1
LR_U, LR_V = 30.0, 20.0
EPS = 1e-4
BATCH_IDS = np.array([7, 2, 10, 4, 0, 9, 5, 11])   # one batch's rows: 1, 3, 6, 8 unused
SOP = methods.get("sop")


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


# --- the numpy reference: the loss and its hand-derived gradients ----------------------

def sop_numpy(z, labels, u, v, balance=0.0, eps=EPS, v_held=None):
    """(L, dL/dz, dL/du, dL/dv) of the authors' batch loss (module docstring of `sop`),
    float64. Clamps pass the gradient inside their range, bounds included (torch's).
    The corrected prediction q takes V from `v_held` (default v): it has no gradient to
    v (the authors' V.detach()), so finite differences in v hold it fixed."""
    b, k = z.shape
    y = np.eye(k)[labels]
    p = softmax(z)
    u2, v2 = u ** 2 * y, v ** 2 * (1 - y)          # u [B, 1] broadcast over the classes
    big_u, big_v = np.clip(u2, 0, 1), np.clip(v2, 0, 1)
    d_u = 2 * u * y * (u2 <= 1)                    # dU/du, per class
    d_v = 2 * v * (1 - y) * (v2 <= 1)              # dV/dv
    held = big_v if v_held is None else np.clip(v_held ** 2 * (1 - y), 0, 1)
    q0 = p + big_u - held
    r = np.maximum(q0, eps)
    s = r.sum(axis=1, keepdims=True)
    t = r / s
    q = np.clip(t, eps, 1)
    h = np.eye(k)[z.argmax(axis=1)]
    res = h + big_u - big_v - y
    loss = np.mean(-(y * np.log(q)).sum(axis=1) + (res ** 2).sum(axis=1))
    g_q = -y / q / b
    if balance:
        mean = q.mean(axis=0)
        clipped = np.clip(mean, eps, 1)
        loss += balance * -np.log(clipped).mean()
        g_q = g_q + balance * (-1 / (k * clipped) * ((mean >= eps) & (mean <= 1))) / b
    g_t = g_q * ((t >= eps) & (t <= 1))
    g_r = g_t / s - (g_t * r).sum(axis=1, keepdims=True) / s ** 2   # t = r / Σ r
    g_q0 = g_r * (q0 >= eps)
    g_z = p * (g_q0 - (g_q0 * p).sum(axis=1, keepdims=True))        # softmax's Jacobian
    g_u = (g_q0 * d_u).sum(axis=1, keepdims=True) + (2 * res / b * d_u).sum(axis=1,
                                                                          keepdims=True)
    g_v = -2 * res / b * d_v                                        # V enters MSE only
    return loss, g_z, g_u, g_v


def random_case(seed, b=6, clamps=False):
    """Logits [B, K], labels [B], u [B, 1], v [B, K]; with `clamps`, rows where u² > 1 and
    where v² pushes p − V below ε."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(b, K)) * 1.5
    labels = rng.integers(0, K, size=b)
    u = rng.uniform(-0.6, 0.6, size=(b, 1))
    v = rng.uniform(-0.6, 0.6, size=(b, K))
    if clamps:
        u[0] = 1.3                                   # U clipped at 1: no gradient to u_0
        v[1] = 0.99                                  # p − V < ε off the label
    return z, labels, u, v


def numeric_gradient(f, x, h=1e-6):
    """Central differences of the scalar f at x."""
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        hi, lo = x.copy(), x.copy()
        hi[i] += h
        lo[i] -= h
        g[i] = (f(hi) - f(lo)) / (2 * h)
    return g


def test_numpy_gradients_match_finite_differences():
    z, labels, u, v = random_case(0)
    _, g_z, g_u, g_v = sop_numpy(z, labels, u, v, balance=0.3)
    for g, f, x in ((g_z, lambda a: sop_numpy(a, labels, u, v, 0.3)[0], z),
                    (g_u, lambda a: sop_numpy(z, labels, a, v, 0.3)[0], u),
                    (g_v, lambda a: sop_numpy(z, labels, u, a, 0.3, v_held=v)[0], v)):
        np.testing.assert_allclose(g, numeric_gradient(f, x), rtol=1e-5, atol=1e-8)


def test_a_batch_worked_by_hand():
    """B = 1, K = 2, label 0, p = (3/4, 1/4), u = 1/2, v = (0.3, 0.2):
    U = (1/4, 0), V = (0, 0.04) (v_0 is masked by 1 − ỹ); q = (1, 0.21)/1.21;
    CE = log 1.21; h = (1, 0), MSE = 0.25² + 0.04² = 0.0641.
    dCE/du = 2u(1/S − 1/(p_0 + u²)) = 1/1.21 − 1, dMSE/du = 4u·0.25 = 0.5;
    dMSE/dv_1 = −4 v_1 (−0.04) = 0.032; dCE/dz = −p_0 p_1 (1, −1)/(p_0 + u²) = (−3/16, 3/16)."""
    logits = tf.constant([[np.log(3.0), 0.0]], tf.float64)
    u = tf.constant([[0.5]], tf.float64)
    v = tf.constant([[0.3, 0.2]], tf.float64)
    with tf.GradientTape() as tape:
        tape.watch([logits, u, v])
        ce, mse, q = sop.sop_terms(logits, tf.constant([0]), u, v)
        loss = tf.reduce_mean(ce + mse)
    g_z, g_u, g_v = tape.gradient(loss, [logits, u, v])
    np.testing.assert_allclose(q.numpy(), [[1 / 1.21, 0.21 / 1.21]], rtol=1e-6)
    np.testing.assert_allclose(ce.numpy(), [np.log(1.21)], rtol=1e-6)
    np.testing.assert_allclose(mse.numpy(), [0.0641], rtol=1e-5)
    np.testing.assert_allclose(g_u.numpy(), [[0.5 + 1 / 1.21 - 1]], rtol=1e-5)
    np.testing.assert_allclose(g_v.numpy(), [[0.0, 0.032]], rtol=1e-5, atol=1e-12)
    np.testing.assert_allclose(g_z.numpy(), [[-3 / 16, 3 / 16]], rtol=1e-5)


@pytest.mark.parametrize("clamps", [False, True])
@pytest.mark.parametrize("balance", [0.0, 0.4])
def test_terms_and_their_gradients_match_numpy(clamps, balance):
    z, labels, u, v = random_case(1 + clamps, clamps=clamps)
    loss, g_z, g_u, g_v = sop_numpy(z, labels, u, v, balance)
    tensors = [tf.constant(a, tf.float64) for a in (z, u, v)]
    with tf.GradientTape() as tape:
        tape.watch(tensors)
        ce, mse, q = sop.sop_terms(tensors[0], tf.constant(labels), tensors[1], tensors[2])
        value = tf.reduce_mean(ce + mse)
        if balance:
            value += balance * sop.balance_term(q)
    got = tape.gradient(value, tensors)
    np.testing.assert_allclose(value.numpy(), loss, rtol=1e-10)
    for actual, desired in zip(got, (g_z, g_u, g_v)):
        np.testing.assert_allclose(actual.numpy(), desired, rtol=1e-8, atol=1e-12)
    if clamps:  # u_0² > 1 is clipped: u_0 gets nothing; the ε floor is hit in row 1
        assert g_u[0, 0] == 0.0 and got[1].numpy()[0, 0] == 0.0
        off_label = np.arange(K) != labels[1]
        assert np.min(softmax(z)[1][off_label] - np.clip(v[1] ** 2, 0, 1)[off_label]) < EPS


def test_the_network_gets_no_gradient_from_mse_and_v_none_from_ce():
    z, labels, u, v = random_case(3)
    tensors = [tf.constant(a, tf.float64) for a in (z, u, v)]
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(tensors)
        ce, mse, _ = sop.sop_terms(tensors[0], tf.constant(labels), tensors[1], tensors[2])
    g_mse_z = tape.gradient(mse, tensors[0])
    g_ce_v = tape.gradient(ce, tensors[2])
    assert g_mse_z is None or np.all(g_mse_z.numpy() == 0)
    assert g_ce_v is None or np.all(g_ce_v.numpy() == 0)
    assert np.abs(tape.gradient(ce, tensors[1]).numpy()).max() > 1e-3


# --- the Keras model -----------------------------------------------------------------

def initial_weights(seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=(4, K)) * 2).astype(np.float32).astype(np.float64),
            (rng.normal(size=K) * 0.3).astype(np.float32).astype(np.float64)]


def examples(seed=1):
    rng = np.random.default_rng(seed)
    return {"image": rng.integers(0, 256, size=(N, 2, 2, 1)).astype(np.uint8),
            "label": rng.integers(0, K, size=N).astype(np.int64),
            "index": np.arange(N, dtype=np.int64)}


def start_tables(seed=2):
    """u, v rows far from the authors' 1e-8 start, so the step's every term is visible;
    row 7 has u² > 1 (clipped), row 2 a v that floors p − V at ε."""
    rng = np.random.default_rng(seed)
    u = rng.uniform(-0.7, 0.7, size=(N, 1)).astype(np.float32)
    v = rng.uniform(-0.7, 0.7, size=(N, K)).astype(np.float32)
    u[7], v[2] = 1.2, 0.999
    return u, v


def sop_model(weights, balance=0.0, run_eagerly=False):
    m = sop.SOPModel(mirrored.dense_classifier(weights), N, K, lr_u=LR_U, lr_v=LR_V,
                     balance=balance, weight_decay=0.0)
    m.compile(optimizer=keras.optimizers.SGD(learning_rate=LR), run_eagerly=run_eagerly)
    return m


def features(batch):
    return batch["image"].reshape(len(batch["image"]), -1).astype(np.float64) / 255.0


@pytest.mark.parametrize("run_eagerly", [False, True], ids=["compiled", "eager"])
@pytest.mark.parametrize("balance", [0.0, 0.5])
def test_one_step_matches_numpy(balance, run_eagerly):
    weights, data = initial_weights(), examples()
    u, v = start_tables()
    m = sop_model(weights, balance, run_eagerly)
    m.u_table.assign(u)
    m.v_table.assign(v)
    batch = {k: a[BATCH_IDS] for k, a in data.items()}
    x = features(batch)
    z = x @ weights[0] + weights[1]
    loss, g_z, g_u, g_v = sop_numpy(z, batch["label"], u[BATCH_IDS].astype(np.float64),
                                    v[BATCH_IDS].astype(np.float64), balance)
    history = m.fit(tf.data.Dataset.from_tensor_slices(batch).batch(len(BATCH_IDS)),
                    epochs=1, verbose=0).history
    expected = [weights[0] - LR * x.T @ g_z, weights[1] - LR * g_z.sum(axis=0)]
    for actual, desired, old in zip(m.classifier.get_weights(), expected, weights):
        assert np.abs(desired - old).max() > 1e-3
        np.testing.assert_allclose(actual, desired, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(history["loss"][0], loss, rtol=1e-5)
    others = np.setdiff1d(np.arange(N), BATCH_IDS)
    new_u, new_v = m.u_table.numpy(), m.v_table.numpy()
    np.testing.assert_array_equal(new_u[others], u[others])
    np.testing.assert_array_equal(new_v[others], v[others])
    # u ← u − lr_u ∂L/∂u, v ← v − lr_v ∂L/∂v; L the batch mean (the 1/B is in the gradient).
    np.testing.assert_allclose(new_u[BATCH_IDS], u[BATCH_IDS] - LR_U * g_u, rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(new_v[BATCH_IDS], v[BATCH_IDS] - LR_V * g_v, rtol=1e-5,
                               atol=1e-5)
    assert new_u[7, 0] == u[7, 0]                 # clipped: no step
    assert np.abs(new_v[BATCH_IDS] - v[BATCH_IDS]).max() > 1e-2


def test_tables_start_small_and_seeded():
    m = sop.SOPModel(mirrored.dense_classifier(initial_weights()), N, K, init_std=1e-8, seed=5)
    u, v = m.u_table.numpy(), m.v_table.numpy()
    assert u.shape == (N, 1) and v.shape == (N, K)
    rng = np.random.default_rng(5)
    np.testing.assert_array_equal(u, rng.normal(0, 1e-8, (N, 1)).astype(np.float32))
    np.testing.assert_array_equal(v, rng.normal(0, 1e-8, (N, K)).astype(np.float32))


def test_tables_survive_save_and_load(tmp_path):
    m = sop_model(initial_weights())
    u, v = start_tables()
    m.u_table.assign(u)
    m.v_table.assign(v)
    m.fit(tf.data.Dataset.from_tensor_slices(examples()).batch(4), epochs=1, verbose=0)
    path = str(tmp_path / "sop.weights.h5")
    m.save_weights(path)
    other = sop_model(initial_weights(seed=9))
    other.load_weights(path)
    np.testing.assert_array_equal(other.u_table.numpy(), m.u_table.numpy())
    np.testing.assert_array_equal(other.v_table.numpy(), m.v_table.numpy())
    assert np.abs(m.u_table.numpy() - u).max() > 1e-3


def test_noise_estimate_and_the_corrected_labels():
    u = np.array([[0.9], [0.1]], np.float32)
    v = np.array([[0.0, 0.95, 0.2], [0.3, 0.1, 2.0]], np.float32)
    s = sop.noise_estimate(u, v, np.array([0, 1]))
    np.testing.assert_allclose(s, [[0.81, -0.9025, -0.04], [-0.09, 0.01, -1.0]], rtol=1e-6)


# --- under MirroredStrategy ----------------------------------------------------------

MIRRORED_SOP = r"""
from idn_tf import sop

u0, v0 = (np.asarray(args[k], np.float32) for k in ("u", "v"))


def train(strategy):
    with strategy.scope():
        classifier = dense_classifier(args["weights"])
        m = sop.SOPModel(classifier, len(u0), v0.shape[1], lr_u=args["lr_u"],
                         lr_v=args["lr_v"], balance=args["balance"], weight_decay=0.0)
        m.u_table.assign(u0)
        m.v_table.assign(v0)
        m.compile(optimizer=keras.optimizers.SGD(learning_rate=args["lr"]))
    loss = m.fit(data(), epochs=1, verbose=0).history["loss"][0]
    out = {"weights": [w.tolist() for w in classifier.get_weights()], "loss": loss}
    for name, table in (("u", m.u_table), ("v", m.v_table)):
        out[name] = table.numpy().tolist()
        copies = getattr(table.variable.value, "values", None)
        out[name + "_copies"] = None if copies is None else [c.numpy().tolist() for c in copies]
    return out


dump({"replicas": mirrored.num_replicas_in_sync, "shares": shares("index"),
      "one": train(tf.distribute.get_strategy()), "mirrored": train(mirrored)})
"""


@pytest.mark.e2e
def test_under_mirrored_strategy_matches_one_device(tmp_path):
    weights, data = initial_weights(seed=3), examples(seed=4)
    u, v = start_tables(seed=5)
    batch = {k: a[BATCH_IDS] for k, a in data.items()}
    balance = 0.5  # its batch mean spans both replicas' halves
    got = mirrored.run(MIRRORED_SOP, {
        "batch": {k: a.tolist() for k, a in batch.items()},
        "weights": [w.tolist() for w in weights], "lr": LR, "lr_u": LR_U, "lr_v": LR_V,
        "balance": balance, "u": u.tolist(), "v": v.tolist()}, tmp_path)
    assert got["replicas"] == 2
    first, second = got["shares"]
    assert len(first) == len(second) == 4 and sorted(first + second) == sorted(BATCH_IDS)
    x = features(batch)
    loss, g_z, g_u, g_v = sop_numpy(x @ weights[0] + weights[1], batch["label"],
                                    u[BATCH_IDS].astype(np.float64),
                                    v[BATCH_IDS].astype(np.float64), balance)
    expected = [weights[0] - LR * x.T @ g_z, weights[1] - LR * g_z.sum(axis=0)]
    for run in (got["one"], got["mirrored"]):
        for actual, desired in zip(run["weights"], expected):
            np.testing.assert_allclose(actual, desired, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(run["loss"], loss, rtol=1e-5)
        np.testing.assert_allclose(np.asarray(run["u"])[BATCH_IDS], u[BATCH_IDS] - LR_U * g_u,
                                   rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(np.asarray(run["v"])[BATCH_IDS], v[BATCH_IDS] - LR_V * g_v,
                                   rtol=1e-5, atol=1e-5)
    assert got["one"]["u_copies"] is None
    for name in ("u", "v"):  # every replica's copy holds every row's step
        copies = got["mirrored"][name + "_copies"]
        assert len(copies) == 2
        np.testing.assert_array_equal(copies[0], copies[1])
        np.testing.assert_array_equal(copies[0], got["mirrored"][name])


# --- the method: its schedule, rates and checks --------------------------------------

def test_cosine_schedule_is_torchs_cosine_annealing():
    # The authors' 300 epochs from 0.02: 0.02 at epoch 0, the midpoint at 150, 0.0002 + a
    # hair at the last epoch (299), as CosineAnnealingLR(T_max=300, eta_min=0.0002).
    assert cosine_learning_rate(0, 0.02, 300) == pytest.approx(0.02)
    assert cosine_learning_rate(150, 0.02, 300) == pytest.approx(0.0101)
    assert cosine_learning_rate(299, 0.02, 300) == pytest.approx(
        0.0002 + 0.0198 * (1 + np.cos(np.pi * 299 / 300)) / 2)
    assert cosine_learning_rate(75, 0.02, 300) == pytest.approx(
        0.0002 + 0.0198 * (1 + np.sqrt(0.5)) / 2)


def test_rates_keep_the_authors_lr_times_epochs_over_batch():
    assert SOP.rates(config_lib.resolve({"method": "sop", "epochs": 300, "batch_size": 128})) \
        == (10.0, 10.0)
    # digits: 40 epochs at batch 64 → 10 × (64/128) × (300/40) = 37.5.
    assert SOP.rates(config_lib.resolve({"method": "sop"})) == (37.5, 37.5)
    given = config_lib.resolve({"method": "sop", "sop_lr_u": 1.0, "sop_lr_v": 100.0})
    assert SOP.rates(given) == (1.0, 100.0)


@pytest.mark.parametrize("field, value", [("sop_lr_u", -1.0), ("sop_lr_v", -0.5),
                                          ("sop_init_std", 0.0), ("sop_balance", -0.1),
                                          ("sop_lr_schedule", "step")])
def test_bad_values_name_the_flag(field, value):
    with pytest.raises(config_lib.ConfigError, match=f"--{field}"):
        config_lib.resolve({"method": "sop", field: value})


def test_the_authors_schedule_replaces_the_step_decay():
    c = config_lib.resolve({"method": "sop"})
    assert SOP.stage_config(c).lr_decay_epochs == () and c.lr_decay_epochs == (10, 20, 30)
    recipe = config_lib.resolve({"method": "sop", "sop_lr_schedule": "recipe"})
    assert SOP.stage_config(recipe).lr_decay_epochs == (10, 20, 30)
    assert not SOP.needs_stage1(c)


# --- the flagfiles -------------------------------------------------------------------

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def flagfile_values(name):
    """{flag: value} of a flagfile's --flag=value lines (nested flagfiles left as they are)."""
    lines = (ROOT / "flags" / name).read_text().splitlines()
    return dict(line[2:].split("=", 1) for line in lines if line.startswith("--"))


AUTHORS = {"method": "sop", "arch": "resnet34", "epochs": "300", "batch_size": "128",
           "lr": "0.02", "momentum": "0.9", "normalize": "standardize", "weight_decay": "5e-4",
           "sop_lr_schedule": "authors", "sop_lr_u": "10", "sop_lr_v": "10",
           "sop_init_std": "1e-8"}


@pytest.mark.parametrize("name, values", [
    ("method_sop.cfg", AUTHORS),
    ("method_sop_cifar100.cfg", {**AUTHORS, "weight_decay": "1e-3", "sop_lr_u": "1"})])
def test_flagfiles_hold_the_authors_settings_and_resolve_on_a_row(name, values):
    from test_config import _config_from_flagfile
    found = flagfile_values(name)
    if "flagfile" in found:  # the CIFAR-100 one sets its differences on top of the other
        found = {**flagfile_values(found.pop("flagfile").split("/")[-1]), **found}
    assert found == values
    # On top of a row's flagfile.
    cfg = _config_from_flagfile("table2_cifar10_ccn_0.4.cfg", f"--flagfile=flags/{name}")
    assert cfg.arch == "resnet34"
    assert SOP.rates(cfg) == (float(values["sop_lr_u"]), float(values["sop_lr_v"]))
    assert SOP.stage_config(cfg).lr_decay_epochs == ()
    # 0.02 in the first epoch, 0.0002 (+ 0.3%: one step short of T_max) in the last.
    assert cosine_learning_rate(0, cfg.lr, cfg.epochs) == pytest.approx(0.02)
    assert cosine_learning_rate(cfg.epochs - 1, cfg.lr, cfg.epochs) == pytest.approx(
        0.0002, rel=3e-3)
