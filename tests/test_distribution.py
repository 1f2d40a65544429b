"""tf.distribute: η under MirroredStrategy on 2 logical CPUs, TF_CONFIG parsing, the chief."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from idn_tf import distribution
from idn_tf.config import ConfigError

# Runs in its own process: logical devices must be set before TensorFlow starts.
MIRRORED = r"""
import json, sys
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from idn_tf import callbacks, model

N, K, B = 49, 3, 8          # the last batch holds 1 example: one replica gets none
rng = np.random.default_rng(0)
images = rng.integers(0, 256, size=(N, 2, 2, 1)).astype(np.uint8)
labels = rng.integers(0, K, size=N)
psi = rng.uniform(0.1, 0.9, N).astype(np.float32)
kernel = rng.normal(size=(4, K)).astype(np.float32)
order = rng.permutation(N)  # the same batches for both runs

def data():
    return tf.data.Dataset.from_tensor_slices(
        {"image": images[order], "label": labels[order], "index": order}).batch(B)

def train(strategy):
    with strategy.scope():
        # Linear in the pixels, no batch statistics: the forward pass of an example does
        # not depend on how the batch is split across replicas.
        inputs = keras.Input((2, 2, 1), dtype="uint8")
        x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
        classifier = keras.Model(inputs, keras.layers.Dense(K)(x))
        classifier.set_weights([kernel, np.zeros(K, np.float32)])
        idn = model.IDNModel(classifier, psi=psi, eta_init=0.2, eta_lr=0.3, weight_decay=0.01)
        idn.compile(optimizer=keras.optimizers.SGD(0.5, momentum=0.9))
    # 9 test rows in batches of 8: the last splits 1/0 across the two replicas.
    test = tf.data.Dataset.from_tensor_slices({"image": images[:9], "label": labels[:9]}).batch(8)
    history = idn.fit(data(), validation_data=test, epochs=3, verbose=0,
                      callbacks=[callbacks.PGACallback(lambda e: True)])
    idn.logs = history.history
    return idn

one = train(tf.distribute.get_strategy())
mirrored = train(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
copies = [v.numpy().tolist() for v in mirrored.eta.value.values]
json.dump({
    "replicas": mirrored.distribute_strategy.num_replicas_in_sync,
    "devices": [v.device for v in mirrored.eta.value.values],
    "copies": copies,
    "one_device": one.eta.numpy().tolist(),
    "kernel_one": one.classifier.get_weights()[0].tolist(),
    "kernel_mirrored": mirrored.classifier.get_weights()[0].tolist(),
    "logs_one": {k: [float(x) for x in v] for k, v in one.logs.items()},
    "logs_mirrored": {k: [float(x) for x in v] for k, v in mirrored.logs.items()},
}, open(sys.argv[1], "w"))
"""


@pytest.mark.e2e
def test_mirrored_eta_copies_are_equal_and_match_one_device(tmp_path):
    out = tmp_path / "out.json"
    result = subprocess.run([sys.executable, "-c", MIRRORED, str(out)], capture_output=True,
                            text=True, timeout=300,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert result.returncode == 0, result.stderr
    got = json.loads(out.read_text())
    assert got["replicas"] == 2 and len(set(got["devices"])) == 2
    first, second = (np.array(c) for c in got["copies"])
    np.testing.assert_array_equal(first, second)  # every replica's copy, bit for bit
    one = np.array(got["one_device"])
    assert np.mean(one != 0.2) > 0.5, "η barely moved; the comparison would prove little"
    # Not bit for bit: the replicas' gradient sum adds in another order (measured ≤ 2e-6).
    np.testing.assert_allclose(first, one, atol=1e-5)
    np.testing.assert_allclose(got["kernel_mirrored"], got["kernel_one"], rtol=1e-5, atol=1e-6)
    # The epoch logs are the global batch's, not a replica's (test set split 1/0 at its end).
    for key in ("val_accuracy", "val_loss", "loss", "accuracy", "eta_mean"):
        np.testing.assert_allclose(got["logs_mirrored"][key], got["logs_one"][key], rtol=1e-5,
                                   err_msg=key)


def cluster(task_type="worker", index=0, **extra):
    return json.dumps({"cluster": {"worker": ["localhost:2222", "localhost:2223"], **extra},
                       "task": {"type": task_type, "index": index}})


def test_tf_config_parsed_and_chief_found():
    assert distribution.parse_tf_config(cluster())["task"]["index"] == 0
    assert distribution.is_chief("multi_worker", {"TF_CONFIG": cluster(index=0)})
    assert not distribution.is_chief("multi_worker", {"TF_CONFIG": cluster(index=1)})
    with_chief = cluster(index=0, chief=["localhost:2224"])
    assert not distribution.is_chief("multi_worker", {"TF_CONFIG": with_chief})
    assert distribution.is_chief("multi_worker", {"TF_CONFIG": cluster("chief", 0, chief=["h:1"])})
    assert distribution.is_chief("mirrored", {})  # one process: always the chief
    assert distribution.worker_label({"TF_CONFIG": cluster(index=1)}) == " (worker 1)"


@pytest.mark.parametrize("text, message", [
    ("", "not set"),
    ("{nope", "not valid JSON"),
    ("[1, 2]", "not a JSON object"),
    ('{"task": {"type": "worker", "index": 0}}', 'no "cluster"'),
    ('{"cluster": {"worker": []}, "task": {"type": "worker", "index": 0}}', "non-empty list"),
    ('{"cluster": {"worker": ["localhost"]}, "task": {"type": "worker", "index": 0}}', "host:port"),
    ('{"cluster": {"ps": ["h:1"]}, "task": {"type": "ps", "index": 0}}', "neither"),
    ('{"cluster": {"worker": ["h:1"]}, "task": {"type": "chief", "index": 0}}', '"type"'),
    ('{"cluster": {"worker": ["h:1"]}, "task": {"type": "worker", "index": 1}}', '"index"'),
    ('{"cluster": {"worker": ["h:1"]}, "task": {"type": "worker", "index": "0"}}', '"index"'),
])
def test_malformed_tf_config_is_one_line_naming_it(text, message):
    with pytest.raises(ConfigError, match="TF_CONFIG") as error:
        distribution.parse_tf_config(text)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_strategy_names_agree_with_config():
    from idn_tf import config
    assert distribution.STRATEGIES == config.STRATEGIES


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.e2e
def test_two_workers_train_one_eta_table_and_only_the_chief_writes(tmp_path):
    """Two processes on 127.0.0.1 run MultiWorkerMirroredStrategy from TF_CONFIG."""
    workers = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    processes = []
    for index in range(2):
        cwd = tmp_path / f"worker{index}"
        cwd.mkdir()
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TF_CONFIG=json.dumps(
            {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}))
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "idn_tf.train", "--strategy=multi_worker", "--epochs=1",
             "--eta_start_epoch=1", "--eta_every=1", "--lr_decay_epochs=", "--verbose=0",
             "--run_dir=run", "--export_dir=exports"],
            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    # The same run on one device, for comparison, in this process while the workers run
    # (`train.run` of the flags above, without the export).
    from idn_tf import config, train
    try:
        train.run(config.Config(strategy="one_device", epochs=1, eta_start_epoch=1, eta_every=1,
                                lr_decay_epochs=(), verbose=0, export_dir="",
                                run_dir=str(tmp_path / "single" / "run")))
    finally:
        outputs = [p.communicate(timeout=600) for p in processes]
    for p, (out, err) in zip(processes, outputs):
        assert p.returncode == 0, err[-3000:]
    fingerprints = [[line for line in out.splitlines() if line.startswith("η table:")]
                    for out, _ in outputs]
    assert [len(f) for f in fingerprints] == [1, 1]
    assert fingerprints[0][0].endswith("(worker 0)") and fingerprints[1][0].endswith("(worker 1)")
    digest = [f[0].split("sha256 ")[1].split()[0] for f in fingerprints]
    assert digest[0] == digest[1], "the workers' η tables differ"
    # The chief (worker 0) wrote everything; worker 1 wrote nothing at all.
    import hashlib
    eta = np.load(tmp_path / "worker0" / "run" / "eta.npy")
    assert hashlib.sha256(eta.tobytes()).hexdigest()[:16] == digest[0]
    assert (tmp_path / "worker0" / "run" / "results.json").is_file()
    assert (tmp_path / "worker0" / "exports" / "run" / "1" / "saved_model.pb").is_file()
    assert sorted(os.listdir(tmp_path / "worker1")) == []
    # The cluster trained on the same batches with the same gradients as one device: the first
    # epoch's mean loss of each stage agrees. Not more: the gradient sums add in another order,
    # the difference grows from epoch to epoch (ψ is ~2e-5 apart already) and η's clipping at
    # 0 and 1 amplifies it. (A tiny linear model matches to 1e-6: the mirrored test above.)
    ours = json.loads((tmp_path / "worker0" / "run" / "results.json").read_text())
    alone = json.loads((tmp_path / "single" / "run" / "results.json").read_text())
    for history in ("ce_history", "method_history"):
        np.testing.assert_allclose(ours[history]["loss"][0], alone[history]["loss"][0], rtol=1e-4)


@pytest.mark.e2e
def test_workers_that_see_different_run_folders_stop_in_one_line(tmp_path):
    """A restart where only the chief's folder holds a finished run: both refuse."""
    workers = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    (tmp_path / "worker0" / "run").mkdir(parents=True)
    (tmp_path / "worker1").mkdir()
    common = ["--strategy=multi_worker", "--epochs=1", "--eta_start_epoch=1",
              "--lr_decay_epochs=", "--verbose=0", "--run_dir=run", "--export_dir="]
    # The chief's folder holds a finished run with the same flags (made on one device, in
    # this process: `train.run` of `common`).
    from idn_tf import config, train
    train.run(config.Config(strategy="one_device", epochs=1, eta_start_epoch=1,
                            lr_decay_epochs=(), verbose=0, export_dir="",
                            run_dir=str(tmp_path / "worker0" / "run")))
    assert (tmp_path / "worker0" / "run" / "stage2.json").is_file()
    processes = []
    for index in range(2):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TF_CONFIG=json.dumps(
            {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}))
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "idn_tf.train", *common], cwd=tmp_path / f"worker{index}",
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for p in processes:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 2 and "Traceback" not in err, err[-2000:]
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "different things in their run folders" in errors[0], err


@pytest.mark.parametrize("strategy", distribution.STRATEGIES)
def test_xla_is_used_on_one_replica_under_every_strategy(strategy):
    assert distribution.xla_plan(True, strategy, 1) == (True, None)
    assert distribution.xla_plan(False, strategy, 1) == (False, None)
    assert distribution.xla_plan(False, strategy, 4) == (False, None)  # not asked: no note


@pytest.mark.parametrize("strategy, replicas", [("mirrored", 2), ("auto", 8), ("multi_worker", 2)])
def test_xla_with_several_replicas_is_off_with_one_line_naming_them(strategy, replicas):
    use, note = distribution.xla_plan(True, strategy, replicas)
    assert use is False
    assert note.startswith("note: --jit_compile is off") and "\n" not in note
    assert f"{replicas} replicas" in note and f"--strategy={strategy}" in note


def test_xla_under_op_determinism_is_off_with_one_line():
    use, note = distribution.xla_plan(True, "one_device", 1, deterministic=True)
    assert use is False and "--deterministic" in note and "\n" not in note
    assert distribution.xla_plan(False, "one_device", 1, deterministic=True) == (False, None)


KERAS_XLA = r"""
def fit(strategy):
    with strategy.scope():
        net = dense_classifier([np.zeros((4, 3)), np.zeros(3)])
        net.compile(optimizer="sgd", jit_compile=True,
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    try:
        net.fit(data().map(lambda b: (b["image"], b["label"])), verbose=0)
    except tf.errors.InvalidArgumentError as e:
        return net.jit_compile, str(e)
    return net.jit_compile, None


mirrored_xla, mirrored_error = fit(mirrored)
tf.config.experimental.enable_op_determinism()
import warnings
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # "Model doesn't support `jit_compile=True`"
    deterministic_xla, deterministic_error = fit(tf.distribute.get_strategy())
dump({"replicas": mirrored.num_replicas_in_sync, "mirrored": [mirrored_xla, mirrored_error],
      "deterministic": [deterministic_xla, deterministic_error]})
"""


@pytest.mark.e2e
def test_keras_itself_refuses_xla_where_xla_plan_turns_it_off(tmp_path):
    """Plain Keras, no idn_tf code, in a process with 2 logical CPUs: `jit_compile=True`
    under MirroredStrategy fails at the first step; under op determinism Keras turns it
    off (and the step runs). When a Keras release changes either, `xla_plan` can follow."""
    import mirrored
    batch = {"image": np.arange(32).reshape(8, 2, 2, 1), "label": np.arange(8) % 3,
             "index": np.arange(8)}
    got = mirrored.run(KERAS_XLA, {"batch": {k: v.tolist() for k, v in batch.items()}}, tmp_path)
    assert got["replicas"] == 2
    assert got["mirrored"][0] is True and "Trying to access resource" in got["mirrored"][1]
    assert got["deterministic"] == [False, None]
