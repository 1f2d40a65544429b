"""Plain cross-entropy on the observed labels: stage 1 itself, the CE baseline."""

from idn_tf.methods.base import Method


class CrossEntropy(Method):
    name = "ce"
    title = "CE"
    row = "CE test accuracy (stage 1)"
    mixes_clean = True

    @property
    def stage_names(self):
        return ()  # its final classifier is stage 1's

    def train(self, run):
        return run.stage1


METHOD = CrossEntropy()
