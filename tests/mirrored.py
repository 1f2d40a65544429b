"""A test's training step under a 2-replica MirroredStrategy on logical CPUs, run in a
process of its own (logical devices must be configured before TensorFlow starts).

`run(script, args, tmp_path)` runs PRELUDE + `script` with `args` (JSON) and returns what
the script passed to `dump`. PRELUDE gives the script: `args`; `batch` (args["batch"] as
uint8 images, int64 labels and indices); `data()`, that batch as one global batch;
`mirrored`, the strategy; `dense_classifier(weights)` (below); `shares(key)`, each replica's rows of batch[key];
and `dump(result)`.
"""

import inspect
import json
import os
import subprocess
import sys


def dense_classifier(weights):
    """The tests' tiny classifier: uint8 [2, 2, 1] → x/255 → Dense(K), with `weights`
    (kernel [4, K], bias [K]): logits linear in the pixels."""
    import keras
    import numpy as np
    inputs = keras.Input((2, 2, 1), dtype="uint8")
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    net = keras.Model(inputs, keras.layers.Dense(len(weights[1]))(x))
    net.set_weights([np.asarray(w, np.float32) for w in weights])
    return net


PRELUDE = r"""
import json, sys
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras

args = json.load(open(sys.argv[1]))
batch = {k: np.asarray(v, dtype) for (k, v), dtype in
         zip(args["batch"].items(), (np.uint8, np.int64, np.int64))}
mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


def data():
    return tf.data.Dataset.from_tensor_slices(batch).batch(len(batch["label"]))


def shares(key):
    return [[v.numpy().tolist() for v in mirrored.experimental_local_results(b[key])]
            for b in mirrored.experimental_distribute_dataset(data())][0]


def dump(result):
    json.dump(result, open(sys.argv[2], "w"))

""" + inspect.getsource(dense_classifier)


def run(script, args, tmp_path):
    """The result `script` dumped, run after PRELUDE in a fresh interpreter."""
    args_path, out = tmp_path / "args.json", tmp_path / "out.json"
    args_path.write_text(json.dumps(args))
    result = subprocess.run([sys.executable, "-c", PRELUDE + script, str(args_path), str(out)],
                            capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert result.returncode == 0, result.stderr
    return json.loads(out.read_text())
