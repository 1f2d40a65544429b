"""What the tests of the file sources' runs (Clothing1M, class folders) share: the
evaluation crops' probabilities of a classifier, and a SavedModel served without idn_tf."""

import json
import subprocess
import sys

import numpy as np
import tensorflow as tf

from idn_tf.data import streaming

# Decodes each image file as a user would (any size, the first frame of a GIF) and serves it
# through the SavedModel's signature, in a process that never imports idn_tf.
SERVE = r"""
import json, sys
import numpy as np
import tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
serve = model.signatures["serving_default"]
out = {}
for path in sys.argv[2:]:
    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)[None]
    answer = {key: value.numpy()[0] for key, value in serve(images=image).items()}
    out[path] = {"probabilities": answer["probabilities"].tolist(),
                 "class_names": answer["class_names"].decode("utf-8")}
assert "idn_tf" not in sys.modules
print(json.dumps(out))
"""


def eval_probs(classifier, paths, labels, image_size=16, resize=20):
    """softmax of the classifier on the evaluation crops of `paths` (file order)."""
    batches = streaming.eval_dataset(paths, labels, 5, image_size=image_size, resize=resize)
    return np.concatenate([tf.nn.softmax(classifier(b["image"], training=False)).numpy()
                           for b in batches])


def serve(saved_model, paths, **run_options):
    """{path: {"probabilities": [K], "class_names": the predicted class's name}} of the
    SavedModel on the image files `paths`."""
    result = subprocess.run([sys.executable, "-c", SERVE, saved_model, *paths],
                            capture_output=True, text=True, timeout=300, **run_options)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])
