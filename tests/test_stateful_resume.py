"""The stateful baselines' per-example state (and Co-teaching's second network) survive a
stop and a restart from `callbacks.Backup`, as the method's η does: training 2 epochs,
then 3 more in a fresh model restored from the backup, ends exactly where 5 uninterrupted
epochs end (same data order, SGD with momentum, so the optimizer's state counts too)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from idn_tf import callbacks, coteaching, elr, soft_labels, sop

import mirrored

pytestmark = pytest.mark.e2e  # three 5-epoch trainings per test (~3-10 s)

K, N, BATCH, EPOCHS, STOP = 3, 24, 8, 5, 2


def dataset():
    rng = np.random.default_rng(0)
    data = {"image": rng.integers(0, 256, (N, 2, 2, 1)).astype(np.uint8),
            "label": rng.integers(0, K, N).astype(np.int64),
            "index": np.arange(N, dtype=np.int64)}
    return data, tf.data.Dataset.from_tensor_slices(data).batch(BATCH)


def weights(seed):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(4, K)), rng.normal(size=K) * 0.3]


def tanaka(labels):
    # A 3-epoch window of predictions: its slots wrap around after the stop.
    return (soft_labels.TanakaModel(mirrored.dense_classifier(weights(1)), labels, K,
                                    average_epochs=3, weight_decay=1e-3),
            [soft_labels.TanakaLabelUpdate(start=2)])


def pencil(labels):
    return (soft_labels.PencilModel(mirrored.dense_classifier(weights(1)), labels, K,
                                    label_lr=50.0, weight_decay=1e-3),
            [soft_labels.PencilPhase(joint_start=2, finetune_start=5)])


def elr_model(labels):
    return elr.ELRModel(mirrored.dense_classifier(weights(1)), len(labels), K, beta=0.7,
                        lam=3.0, weight_decay=1e-3), []


def co_teaching(labels):
    del labels
    return (coteaching.CoTeachingModel(mirrored.dense_classifier(weights(1)),
                                       mirrored.dense_classifier(weights(2)), weight_decay=1e-3),
            [coteaching.ForgetRateCallback(noise_rate=0.25, t_k=2)])


def sop_noise(labels):
    # u, v start at N(0, 0.3²), not the authors' 1e-8, so their steps show within 5 epochs.
    return (sop.SOPModel(mirrored.dense_classifier(weights(1)), len(labels), K, lr_u=5.0,
                         lr_v=5.0, balance=0.1, init_std=0.3, weight_decay=1e-3), [])


def state(model):
    """Every weight of the model (tables, phase or forget rate, both networks) and the
    optimizer's variables, as numpy arrays."""
    return ([v.numpy() for v in model.weights]
            + [v.numpy() for v in model.optimizer.variables])


def train(make, backup_dir, epochs):
    """A fresh model trained up to `epochs` through Backup(`backup_dir`), resuming from it."""
    data, ds = dataset()
    keras.utils.set_random_seed(0)
    model, extra = make(data["label"])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1, momentum=0.9))
    initial, _ = callbacks.Backup.latest(backup_dir)
    model.fit(ds, epochs=epochs, initial_epoch=initial, verbose=0, shuffle=False,
              callbacks=[*extra, callbacks.Backup(backup_dir)])
    return model


@pytest.mark.parametrize("make", [tanaka, pencil, co_teaching, elr_model, sop_noise],
                         ids=["tanaka", "pencil", "coteaching", "elr", "sop"])
def test_a_stopped_run_resumes_to_the_same_state(make, tmp_path):
    whole = train(make, str(tmp_path / "whole"), EPOCHS)
    stopped = train(make, str(tmp_path / "parts"), STOP)
    assert callbacks.Backup.latest(str(tmp_path / "parts"))[0] == STOP
    resumed = train(make, str(tmp_path / "parts"), EPOCHS)
    before, after, expected = state(stopped), state(resumed), state(whole)
    assert len(after) == len(expected)
    # The state moved after the stop (the check below is not trivially true).
    assert any(not np.array_equal(a, b) for a, b in zip(before, expected))
    for a, b in zip(after, expected):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    if make is pencil:  # the label logits learned in phase 2, both before and after the stop
        table = resumed.label_table.numpy()
        assert np.abs(table - 10.0 * np.eye(K)[dataset()[0]["label"]]).max() > 0.1
    if make is elr_model:  # every row visited once per epoch from t = 0: Σ_k t_ik = 1 − β^5
        np.testing.assert_allclose(resumed.targets_table.numpy().sum(axis=1), 1 - 0.7 ** EPOCHS,
                                   rtol=1e-5)
    if make is sop_noise:  # u and v moved after the stop
        for table in ("u_table", "v_table"):
            assert np.abs(getattr(resumed, table).numpy()
                          - getattr(stopped, table).numpy()).max() > 1e-3
    if make is tanaka:
        assert not np.allclose(resumed.labels_table.numpy(),
                               np.eye(K)[dataset()[0]["label"]])
