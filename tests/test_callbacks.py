"""Checks of the η schedule and PGACallback, the monitoring, the test evaluation, the
selection of the best validation epoch and the backup."""

import os

import keras
import numpy as np
import pytest

from idn_tf import callbacks
from tb_events import summaries


def test_paper_cifar_schedule():
    schedule = callbacks.pga_schedule(start_epoch=35, every=5)
    on = [e for e in range(1, 161) if schedule(e)]
    assert on == list(range(35, 161, 5))


def test_clothing1m_schedule_every_epoch_from_second():
    schedule = callbacks.pga_schedule(start_epoch=2, every=1)
    assert [schedule(e) for e in range(1, 6)] == [False, True, True, True, True]


@pytest.mark.parametrize("start, every", [(0, 5), (3, 0)])
def test_schedule_rejects_bad_arguments(start, every):
    with pytest.raises(ValueError):
        callbacks.pga_schedule(start, every)


class FakeModel:
    def __init__(self):
        self.eta_update_enabled = keras.Variable(False, dtype="bool", trainable=False)


def test_callback_sets_flag_and_logs_it():
    callback = callbacks.PGACallback(callbacks.pga_schedule(2, 3))
    callback.set_model(FakeModel())
    seen = []
    for epoch in range(7):  # 0-based as Keras counts
        callback.on_epoch_begin(epoch)
        logs = {}
        callback.on_epoch_end(epoch, logs)
        seen.append(logs["eta_update"])
    assert seen == [0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0]


def test_callback_rejects_non_bool_schedule():
    callback = callbacks.PGACallback(lambda epoch: 1)
    callback.set_model(FakeModel())
    with pytest.raises(ValueError, match="bool"):
        callback.on_epoch_begin(0)
    callback = callbacks.PGACallback(lambda epoch: np.bool_(True))
    callback.set_model(FakeModel())
    callback.on_epoch_begin(0)
    assert bool(callback.model.eta_update_enabled.numpy())


# ---------------------------------------------------------------------------------------
# MonitorCallback: the values it writes, against numpy and scikit-learn


def read_events(folder):
    """{tag: {step: summary value}} of every event file in `folder`."""
    values = {}
    for step, value in summaries(folder):
        values.setdefault(value.tag, {})[step] = value
    return values


@pytest.mark.e2e
def test_monitor_writes_the_label_statistics_of_the_final_model(tmp_path):
    import tensorflow as tf
    from sklearn.metrics import roc_auc_score
    from idn_tf import model

    k, n = 3, 60
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, 2, 2, 1)).astype(np.uint8)
    clean = rng.integers(0, k, n)
    labels = np.where(rng.random(n) < 0.4, (clean + 1) % k, clean)
    psi = rng.uniform(0.1, 0.9, n).astype(np.float32)
    inputs = keras.Input((2, 2, 1), dtype="uint8")
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    classifier = keras.Model(inputs, keras.layers.Dense(k, kernel_initializer="ones")(x))
    idn = model.IDNModel(classifier, psi=psi, eta_init=0.3, eta_lr=0.3)
    idn.compile(optimizer=keras.optimizers.SGD(0.5))
    train = tf.data.Dataset.from_tensor_slices(
        {"image": images, "label": labels, "index": np.arange(n)}).batch(16)
    test = tf.data.Dataset.from_tensor_slices({"image": images, "label": clean}).batch(16)
    monitor = callbacks.MonitorCallback(str(tmp_path), images, labels, clean, ("a", "b", "c"),
                                        batch_size=7, every=2)
    history = idn.fit(train, epochs=3, verbose=0,
                      callbacks=[callbacks.PGACallback(lambda epoch: True),
                                 callbacks.TestEvaluation(test), monitor])

    # Epochs 2 (every 2nd) and 3 (the last) are monitored; steps are 0-based.
    events = read_events(str(tmp_path))
    assert {tag: sorted(steps) for tag, steps in events.items()} == {
        tag: [1, 2] for tag in ("accuracy/train_observed", "accuracy/test", "eta/mean",
                                "eta/above_half", "eta/histogram", "labels/wrong_corrected",
                                "labels/right_kept", "labels/eta_auroc", "labels/highest_eta")}
    assert monitor.history["epoch"] == [2, 3]

    # Independent recomputation for the last epoch: numpy forward pass and Eq. 8 as a loop.
    kernel, bias = classifier.get_weights()
    logits = images.reshape(n, -1) / 255.0 @ kernel + bias
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    eta = idn.eta.numpy()
    q = np.array([[p[i, j] * ((1 - eta[i]) * (j == labels[i]) + eta[i] * psi[i])
                   for j in range(k)] for i in range(n)])
    estimated = q.argmax(1)
    wrong = labels != clean
    expected = {
        "accuracy/train_observed": np.mean(p.argmax(1) == labels),
        "accuracy/test": np.mean(p.argmax(1) == clean),  # the test set is the images
        "eta/mean": eta.mean(),
        "eta/above_half": np.mean(eta > 0.5),
        "labels/wrong_corrected": np.mean(estimated[wrong] == clean[wrong]),
        "labels/right_kept": np.mean(estimated[~wrong] == labels[~wrong]),
        "labels/eta_auroc": roc_auc_score(wrong, eta),
    }
    for tag, value in expected.items():
        written = tf.make_ndarray(events[tag][2].tensor)
        np.testing.assert_allclose(written, value, rtol=1e-5, err_msg=tag)
        np.testing.assert_allclose(monitor.history[tag][-1], value, rtol=1e-5, err_msg=tag)
    histogram = tf.make_ndarray(events["eta/histogram"][2].tensor)  # [buckets, (left, right, count)]
    assert histogram[:, 2].sum() == n
    image = tf.make_ndarray(events["labels/highest_eta"][2].tensor)  # [width, height, png...]
    from idn_tf import plots
    assert [int(image[0]), int(image[1])] == list(plots.HIGHEST_ETA_SIZE)
    q_observed = (q / q.sum(1, keepdims=True))[np.arange(n), labels]
    top = np.lexsort((np.arange(n), q_observed, -eta))[:16]  # η, then q of the observed label
    caption = events["labels/highest_eta"][2].metadata.summary_description
    assert caption.count("\n- #") == 15 and caption.startswith(f"- #{top[0]}:")


def test_monitor_of_a_plain_model_writes_only_accuracies(tmp_path):
    from idn_tf import model
    n = 20
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(n, 2, 2, 1)).astype(np.uint8)
    labels = rng.integers(0, 2, n)
    inputs = keras.Input((2, 2, 1), dtype="uint8")
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    ce = model.CrossEntropyModel(keras.Model(inputs, keras.layers.Dense(2)(x)))
    ce.compile(optimizer=keras.optimizers.SGD(0.1))
    import tensorflow as tf
    data = tf.data.Dataset.from_tensor_slices({"image": images, "label": labels}).batch(8)
    monitor = callbacks.MonitorCallback(str(tmp_path), images, labels, np.full(n, -1), ("a", "b"),
                                        batch_size=8)
    ce.fit(data, epochs=2, verbose=0, callbacks=[monitor])
    # No validation data: the test accuracy is NaN, kept in history but not written.
    assert set(read_events(str(tmp_path))) == {"accuracy/train_observed"}
    assert monitor.history["epoch"] == [1, 2]
    assert all(v != v for v in monitor.history["accuracy/test"])


def test_backup_keeps_the_last_good_epoch_and_restores_it(tmp_path):
    from idn_tf import model
    inputs = keras.Input((2, 2, 1), dtype="uint8")
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    net = model.IDNModel(keras.Model(inputs, keras.layers.Dense(3)(x)),
                         psi=np.full(4, 0.5, np.float32))
    net.compile(optimizer=keras.optimizers.SGD(0.1))
    backup = callbacks.Backup(str(tmp_path))
    backup.set_model(net)
    net.eta.assign(np.array([0.1, 0.2, 0.3, 0.4], np.float32))
    backup.on_epoch_end(0, {"loss": 1.5, "accuracy": 0.5})
    good = net.get_weights()
    net.eta.assign(np.ones(4, np.float32))
    backup.on_epoch_end(1, {"loss": float("nan"), "accuracy": 0.1})  # not saved
    assert callbacks.Backup.latest(str(tmp_path))[0] == 1
    assert sorted(os.listdir(tmp_path)) == ["epoch-000001"]

    restored = callbacks.Backup(str(tmp_path))
    restored.set_model(net)
    restored.on_train_begin()
    np.testing.assert_array_equal(net.eta.numpy(), np.float32([0.1, 0.2, 0.3, 0.4]))
    for a, b in zip(net.get_weights(), good):
        np.testing.assert_array_equal(a, b)
    assert net._initial_epoch == 1
    assert restored.history == {"loss": [1.5], "accuracy": [0.5]}
    backup.on_epoch_end(1, {"loss": 1.0, "accuracy": 0.6})  # the next good epoch replaces it
    assert sorted(os.listdir(tmp_path)) == ["epoch-000002"]


# ---------------------------------------------------------------------------------------
# TestEvaluation and BestEpoch


def _tiny(k=3, seed=0):
    """A CrossEntropyModel around a linear classifier of 2x2 uint8 images."""
    from idn_tf import model
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((2, 2, 1), dtype="uint8")
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    ce = model.CrossEntropyModel(keras.Model(inputs, keras.layers.Dense(k)(x)))
    ce.compile(optimizer=keras.optimizers.SGD(0.5))
    return ce


def _records(images, labels, batch=8):
    import tensorflow as tf
    return tf.data.Dataset.from_tensor_slices(
        {"image": images, "label": labels, "index": np.arange(len(labels))}).batch(batch)


def _numpy_accuracy(classifier, images, labels):
    kernel, bias = classifier.get_weights()
    logits = images.reshape(len(images), -1) / 255.0 @ kernel + bias
    return float(np.mean(logits.argmax(1) == labels))


def test_test_evaluation_logs_every_kth_and_the_last_epoch_against_numpy(tmp_path):
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (40, 2, 2, 1), dtype=np.uint8)
    labels, test_labels = rng.integers(0, 3, 40), rng.integers(0, 3, 40)
    ce = _tiny()
    seen = []

    class Record(keras.callbacks.Callback):  # what the logs hold after the evaluation
        def on_epoch_end(self, epoch, logs=None):
            seen.append((logs["test_accuracy"],
                         _numpy_accuracy(self.model.classifier, images, test_labels)))

    evaluation = callbacks.TestEvaluation(_records(images, test_labels), every=2,
                                          log_dir=str(tmp_path))
    ce.fit(_records(images, labels), epochs=5, verbose=0, callbacks=[evaluation, Record()])
    evaluated = [e for e, (logged, _) in enumerate(seen, 1) if logged == logged]
    assert evaluated == [2, 4, 5]
    for logged, expected in seen:
        if logged == logged:
            assert logged == pytest.approx(expected, abs=1e-6)
    events = read_events(str(tmp_path))
    assert sorted(events["epoch_accuracy"]) == [1, 3, 4]  # 0-based steps


def _logs(accuracy, loss, train_loss=1.0):
    return {"loss": train_loss, "val_accuracy": accuracy, "val_loss": loss}


def test_best_epoch_is_the_highest_validation_accuracy_then_the_lowest_loss():
    ce = _tiny()
    best = callbacks.BestEpoch()
    best.set_model(ce)
    kept = {}
    sequence = [_logs(0.5, 1.0), _logs(0.7, 0.9), _logs(0.7, 0.8), _logs(0.7, 0.85),
                _logs(0.9, 0.5, train_loss=float("nan")),  # a diverged epoch: skipped
                _logs(0.6, 0.1)]
    for epoch, logs in enumerate(sequence):
        ce.classifier.set_weights([w + epoch for w in _tiny(seed=epoch).classifier.get_weights()])
        kept[epoch + 1] = ce.classifier.get_weights()
        best.on_epoch_end(epoch, dict(logs))
    assert best.epoch == 3 and best.value == {"val_accuracy": 0.7, "val_loss": 0.8}
    for a, b in zip(best.weights, kept[3]):
        np.testing.assert_array_equal(a, b)
    # A copy: training on does not change the kept weights.
    ce.classifier.set_weights([w * 0 for w in kept[3]])
    np.testing.assert_array_equal(best.weights[0], kept[3][0])


def test_best_epoch_ignores_the_test_accuracy_entirely():
    ce = _tiny()
    a, b = callbacks.BestEpoch(), callbacks.BestEpoch()
    for callback in (a, b):
        callback.set_model(ce)
    rng = np.random.default_rng(0)
    for epoch in range(6):
        logs = _logs(*rng.random(2))
        a.on_epoch_end(epoch, {**logs, "test_accuracy": rng.random()})
        b.on_epoch_end(epoch, {**logs, "test_accuracy": rng.random()})
    assert a.epoch == b.epoch and a.value == b.value


def test_the_backup_keeps_the_best_epoch_across_a_restart(tmp_path):
    ce = _tiny()
    best = callbacks.BestEpoch()
    backup = callbacks.Backup(str(tmp_path), best=best)
    for callback in (best, backup):
        callback.set_model(ce)
    for epoch, logs in enumerate([_logs(0.4, 1.0), _logs(0.8, 0.7), _logs(0.6, 0.5)]):
        ce.classifier.set_weights([w + epoch for w in ce.classifier.get_weights()])
        best.on_epoch_end(epoch, logs)
        backup.on_epoch_end(epoch, logs)
    chosen = [np.array(w) for w in best.weights]
    # A new process: fresh callbacks restore the best epoch with the last epoch's state.
    fresh = _tiny(seed=9)
    again = callbacks.BestEpoch()
    restored = callbacks.Backup(str(tmp_path), best=again)
    for callback in (again, restored):
        callback.set_model(fresh)
    restored.on_train_begin()
    assert again.epoch == 2 and again.value["val_accuracy"] == 0.8
    for x, y in zip(again.weights, chosen):
        np.testing.assert_array_equal(x, y)
    for x, y in zip(fresh.classifier.get_weights(), ce.classifier.get_weights()):
        np.testing.assert_array_equal(x, y)  # the model itself resumes from the last epoch


class LongLogs(keras.callbacks.Callback):
    """Adds logs a method writes (η's) before the progress line reads them."""

    def on_epoch_end(self, epoch, logs=None):
        logs.update(eta_above_half=0.0, eta_mean=0.01, test_accuracy=0.5, test_loss=1.0)


@pytest.mark.parametrize("verbose", [1, 2])
def test_progress_shows_the_short_logs_and_history_keeps_all(verbose, capsys):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    x, y = np.ones((8, 3), np.float32), np.arange(8) % 2
    history = model.fit(x, y, batch_size=4, epochs=2, validation_data=(x, y),
                        verbose=verbose, callbacks=[LongLogs(), callbacks.Progress()])
    out = capsys.readouterr().out
    assert {"eta_mean", "val_loss", "test_loss"} <= set(history.history)
    assert "eta_" not in out and "val_loss" not in out and "test_loss" not in out
    assert "test_accuracy: 0.5000" in out and out.count("Epoch 2/2") == 1  # Keras's own replaced
    if verbose == 2:  # the epoch line (verbose=1 redraws a bar, with terminal escapes)
        lines = [line for line in out.splitlines() if "step" in line]
        assert len(lines) == 2 and max(map(len, lines)) <= 120
