"""Forward loss correction (Patrini et al., CVPR 2017) with a transition matrix T.

T_ij = P(ỹ = j | y = i): given as a file (--transition_matrix=FILE); the true T
(--transition_matrix=true: the generating matrix of ccn and symmetric noise,
`noise.generating_matrix`, else the row-normalised confusion counts of the clean and
observed training labels, `transition.counted_transition_matrix`); or estimated from
the stage-1 cross-entropy model with the paper's estimator
(`transition.estimate_transition_matrix`, --forward_percentile). The T a stage
trains with is kept in transition_matrix.npy, so a resumed stage goes on with it.
The loss is `baselines.ForwardModel`'s.
"""

import hashlib
import os

import numpy as np

from idn_tf.errors import ConfigError, check
from idn_tf.methods.base import Method

# --transition_matrix's word for the true T (anything else but '' is a file; a file named
# "true" is ./true).
TRUE = "true"


class Forward(Method):
    name = "forward"
    title = "Forward"
    row = "Forward test accuracy"
    about = "forward loss correction (Patrini et al. 2017) with T"
    fields = {"transition_matrix": "", "forward_percentile": 97.0}
    derived_fields = ("transition_matrix_sha256",)
    files = ("transition_matrix.npy",)

    def check(self, c):
        check(0.0 < c.forward_percentile <= 100.0, "forward_percentile",
              f"must be in (0, 100], got {c.forward_percentile}")
        if c.transition_matrix and c.transition_matrix != TRUE:  # a path given must exist
            check(os.path.isfile(c.transition_matrix), "transition_matrix",
                  f"no such file: {c.transition_matrix}")

    def needs_stage1(self, config):
        return not config.transition_matrix  # T is estimated from it

    def used_fields(self, config):
        # A given T is used as given: the percentile of the estimator then does nothing.
        return ("transition_matrix",) + (() if config.transition_matrix else ("forward_percentile",))

    def semantic_extra(self, config):
        if config.transition_matrix in ("", TRUE):  # the true T follows from the noise flags
            return {}
        return {"transition_matrix_sha256": sha256_file(config.transition_matrix)}

    def stage_files(self):
        return self.files

    def preflight(self, config, data):
        """The given T, read and checked (float32 [K, K]), or None; the true T needs every
        clean training label (ConfigError now if one is unknown)."""
        if config.transition_matrix != TRUE:
            return load_transition_matrix(config.transition_matrix, data.num_classes)
        if not (np.asarray(data.train.clean_labels) >= 0).all():
            raise ConfigError(f"--transition_matrix=true: the clean labels of {config.dataset}'s "
                              "training examples are not known; give T as a file, or leave "
                              "--transition_matrix empty to estimate it")
        return None

    def prepare(self, run):
        """T: given, true, the one a resumed stage trained with, or estimated from stage 1."""
        from idn_tf import artifacts, stages
        config, k = run.config, run.data.num_classes
        if run.given is not None or config.transition_matrix == TRUE:
            matrix, how = ((run.given, f"from {config.transition_matrix}")
                           if run.given is not None else true_transition(run))
            print(f"forward: T {how}")
            run.folder.write(artifacts.write_npy, "transition_matrix.npy", matrix)
            return {"transition": matrix, "how": how}

        def estimate():
            matrix = stages.estimate_transition(run.stage1.classifier, run.data,
                                                config.batch_size, config.forward_percentile)
            print(f"forward: T estimated from the stage-1 model ({config.forward_percentile:g}th "
                  f"percentile); mean diagonal {np.mean(np.diag(matrix)):.3f}")
            return matrix

        def resumed(path):
            print(f"forward: resuming with the T estimated before, {path}")
            from idn_tf.runfolder import load_array
            return load_array(path, k, k)

        return {"transition": run.folder.kept("transition_matrix.npy", self.name, estimate,
                                              resumed, artifacts.write_npy),
                "how": f"estimated from the stage-1 model ({config.forward_percentile:g}th "
                       "percentile)"}

    def build(self, run, inputs):
        from idn_tf import baselines, stages
        return baselines.ForwardModel(stages.new_classifier(run.config, run.data),
                                      inputs["transition"], weight_decay=run.config.weight_decay)

    def extra(self, run, inputs, model):
        return {"transition_matrix_source": inputs["how"]}

    def results(self, run, trained):
        k = run.data.num_classes
        matrix = run.folder.array("transition_matrix.npy", k, k)
        return {"transition_matrix": np.asarray(matrix, np.float64).tolist()}


def true_transition(run):
    """(T float32 [K, K], how it was made) from what made the observed labels: the
    generating matrix of --noise=ccn or symmetric, else the confusion counts of the clean
    and observed training labels."""
    config, data = run.config, run.data
    from idn_tf import transition
    from idn_tf.data import noise
    matrix = noise.generating_matrix(config.noise, config.noise_rate, data.num_classes,
                                     data.name)
    if matrix is not None:
        how = f"true: the generating matrix of {config.noise} noise at rate {config.noise_rate:g}"
    else:
        matrix = transition.counted_transition_matrix(data.train.clean_labels, run.labels,
                                                      data.num_classes)
        how = ("true: counted from the clean and observed training labels (mean diagonal "
               f"{np.mean(np.diag(matrix)):.3f})")
    return transition.check_transition_matrix(matrix, data.num_classes), how


def load_transition_matrix(path, num_classes):
    """--transition_matrix (.npy, or text with spaces or commas) read and checked, or
    None if `path` is empty; ConfigError naming the file if it is not a T [K, K]."""
    if not path:
        return None
    from idn_tf import artifacts, transition
    try:
        return transition.check_transition_matrix(artifacts.read_numbers(path, ndmin=2),
                                                  num_classes)
    except (OSError, ValueError) as e:
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"--transition_matrix={path}: {why}") from None


def sha256_file(path):
    """The file's sha256 (its content, not its path, decides the run), or None."""
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


METHOD = Forward()
