"""The method registry is the only list of method names, and a method added from outside
the package runs through `python -m idn_tf.train` and `idn_tf.compare` unchanged.

The extra method here is cross-entropy with label smoothing (Szegedy et al., 2016):
targets (1 − ε)·onehot(ỹ) + ε/K. It is defined in this file only: its Keras model, its
`Method` and its flag; registering it is the one line a new method adds to
`idn_tf/methods/__init__.py`.
"""

import ast
import json
import os
import pathlib

import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from idn_tf import compare, config as config_lib, flagdefs, methods, model, train
from idn_tf.methods.base import Method

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "idn_tf"
# Where method names may be written out: the methods themselves and the flags' help.
ALLOWED = {PACKAGE / "flagdefs.py"} | set((PACKAGE / "methods").glob("*.py"))
# The Keras models of the baselines: their own logs may carry their names (PENCIL's
# "pencil_phase" in a stage's history), a method's name itself they may not.
MODEL_LAYER = {PACKAGE / name for name in ("baselines.py", "soft_labels.py", "coteaching.py",
                                                 "elr.py", "sop.py", "dividemix.py")}
# The baselines' names (the method's own, idn, and ce are the defaults of the package).
NAMES = ("tanaka", "pencil", "coteaching", "ldmi", "forward", "bootstrap_soft",
         "bootstrap_hard", "elr", "sop", "dividemix")


def _literals(path):
    """(line, text) of every string constant in the module (f-strings' parts included)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)]


def _names_a_method(text, prefixes=True):
    """A literal that is a method name or (`prefixes`) a name or file of one (tanaka_labels,
    forward.json, pencil_alpha): what a module would have to edit when a method is added
    or renamed."""
    return any(text == name or (prefixes and text.startswith((f"{name}_", f"{name}.")))
               for name in NAMES)


def test_no_module_outside_the_methods_writes_a_method_name():
    found = [f"{path.relative_to(PACKAGE.parent)}:{line}: {text!r}"
             for path in sorted(PACKAGE.rglob("*.py")) if path not in ALLOWED
             for line, text in _literals(path)
             if _names_a_method(text, prefixes=path not in MODEL_LAYER)]
    assert not found, "method names outside idn_tf/methods/ and flagdefs.py:\n" + "\n".join(found)


def test_the_literal_check_finds_what_it_looks_for():
    assert _names_a_method("tanaka") and _names_a_method("tanaka_labels")
    assert _names_a_method("forward.json") and _names_a_method("pencil_alpha")
    assert not _names_a_method("forward pass") and not _names_a_method("stage1")
    assert _names_a_method("pencil", prefixes=False)
    assert not _names_a_method("pencil_phase", prefixes=False)


# ---------------------------------------------------------------------------------------
# A tenth method, from outside the package.

class SmoothedCrossEntropyModel(model.CrossEntropyModel):
    """Cross-entropy against (1 − ε)·onehot(ỹ) + ε/K."""

    def __init__(self, classifier, smoothing, **kwargs):
        super().__init__(classifier, **kwargs)
        self.smoothing = float(smoothing)

    def targets(self, batch, log_probs):
        k = tf.shape(log_probs)[-1]
        onehot = tf.one_hot(batch["label"], k, dtype=log_probs.dtype)
        return (1.0 - self.smoothing) * onehot + self.smoothing / tf.cast(k, log_probs.dtype)


class LabelSmoothing(Method):
    name = "label_smoothing"
    title = "CE + label smoothing"
    row = "label smoothing test accuracy"
    about = "cross-entropy with label smoothing"
    fields = {"smoothing_epsilon": 0.1}

    def check(self, c):
        if not 0.0 <= c.smoothing_epsilon < 1.0:
            raise config_lib.ConfigError(f"--smoothing_epsilon: must be in [0, 1), got "
                                         f"{c.smoothing_epsilon}")

    def needs_stage1(self, config):
        return False

    def build(self, run, inputs):
        from idn_tf import stages
        return SmoothedCrossEntropyModel(stages.new_classifier(run.config, run.data),
                                         run.config.smoothing_epsilon,
                                         weight_decay=run.config.weight_decay)


@pytest.fixture(scope="module")
def smoothing():
    """The extra method registered (with its flag) for this module's tests only."""
    method = methods.register(LabelSmoothing())
    if "smoothing_epsilon" not in flagdefs.FLAGS:
        flags.DEFINE_float("smoothing_epsilon", 0.1, "label smoothing ε of the test method.")
    yield method
    methods.unregister(method.name)


def test_the_extra_methods_targets_are_smoothed_one_hot(smoothing):
    trainer = SmoothedCrossEntropyModel(tf.keras.Sequential([tf.keras.layers.Dense(3)]), 0.3)
    log_probs = tf.math.log(tf.constant([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]]))
    got = trainer.targets({"label": tf.constant([2, 0])}, log_probs).numpy()
    np.testing.assert_allclose(got, [[0.1, 0.1, 0.8], [0.8, 0.1, 0.1]], atol=1e-6)


def test_a_registered_method_is_a_configuration_like_the_others(smoothing):
    cfg = config_lib.resolve({"method": "label_smoothing", "smoothing_epsilon": 0.2})
    assert cfg.smoothing_epsilon == 0.2 and cfg.run_dir.endswith("-label_smoothing-0")
    assert cfg.semantic_dict()["smoothing_epsilon"] == 0.2
    assert "smoothing_epsilon" not in config_lib.resolve({"method": "ce"}).semantic_dict()
    with pytest.raises(config_lib.ConfigError, match="--smoothing_epsilon"):
        config_lib.resolve({"method": "label_smoothing", "smoothing_epsilon": 1.5})


TINY = ["--epochs=2", "--lr_decay_epochs=1", "--verbose=0", "--monitor_every=1", "--audit_folds=2"]


def _main(module, argv):
    """`python -m idn_tf.<module>` in this process: absl's flag parsing, then its main."""
    flagdefs.FLAGS.unparse_flags()
    flagdefs.FLAGS(["prog", *argv])
    try:
        return module.main(["prog"])
    finally:
        flagdefs.FLAGS.unparse_flags()


@pytest.mark.e2e
def test_the_extra_method_trains_through_train_and_compare(smoothing, tmp_path):
    run_dir = tmp_path / "run"
    assert _main(train, [*TINY, "--method=label_smoothing", "--smoothing_epsilon=0.2",
                         f"--run_dir={run_dir}", "--export_dir="]) == 0
    results = json.loads((run_dir / "results.json").read_text())
    assert results["method"] == "label_smoothing" and results["ce_test_accuracy"] is None
    assert 0.0 < results["method_test_accuracy"] <= 1.0
    assert len(results["method_history"]["loss"]) == 2
    assert (run_dir / "label_smoothing.json").is_file()
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["smoothing_epsilon"] == 0.2
    # A restart reuses its stage.
    assert _main(train, [*TINY, "--method=label_smoothing", "--smoothing_epsilon=0.2",
                         f"--run_dir={run_dir}", "--export_dir="]) == 0
    assert json.loads((run_dir / "results.json").read_text())["method_test_accuracy"] == \
        results["method_test_accuracy"]

    folder = tmp_path / "cmp"
    assert _main(compare, [*TINY, "--methods=ce,label_smoothing", "--seeds=0",
                           f"--compare_dir={folder}"]) == 0
    table = (folder / "comparison.md").read_text()
    assert "| CE + label smoothing |" in table and "| CE |" in table
    cells = {c["method"]: c for c in json.loads((folder / "comparison.json").read_text())["cells"]}
    assert cells["label_smoothing"]["status"] == "done"
    # Both cells trained on the comparison's labels.
    assert cells["label_smoothing"]["labels_sha256"] == cells["ce"]["labels_sha256"]
    assert os.path.isfile(folder / "label_smoothing-0" / "label_smoothing.json")
