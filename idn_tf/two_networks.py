"""Two networks of one architecture trained together: what Co-teaching and DivideMix share.

`TwoNetworkModel` holds the first network, `classifier`, and its `peer`, checks that
they are two networks of the same weight shapes, and is built when both are, so both
networks' weights (and the optimizer's state for both) are in the model's weights:
`callbacks.Backup` checkpoints and restores the pair as one unit. `networks` builds
the pair for a stage: the first network as every stage builds its classifier
(`stages.new_classifier`, --seed), the peer with --seed + `PEER_SEED_OFFSET`, so the
two start from different weights.
"""

from idn_tf import model

# The second network is initialised as `stages.new_classifier` with --seed + this.
PEER_SEED_OFFSET = 10007


def networks(config, data):
    """(first network, peer): fresh classifiers of --arch from --seed and --seed +
    `PEER_SEED_OFFSET` (call in the stage's `stages.model_scope`)."""
    from idn_tf import stages
    return (stages.new_classifier(config, data),
            stages.new_classifier(config, data, seed=config.seed + PEER_SEED_OFFSET))


def check_pair(first, peer, method):
    """ValueError unless `first` and `peer` are two networks with the same weight shapes
    (`method` names the caller in the message)."""
    if peer is first:
        raise ValueError(f"{method} needs two networks: peer is the classifier itself")
    if first.built and peer.built:
        shapes = [tuple(w.shape) for w in first.weights]
        peer_shapes = [tuple(w.shape) for w in peer.weights]
        if shapes != peer_shapes:
            raise ValueError("classifier and peer must have the same architecture; their "
                             f"weight shapes are {shapes} and {peer_shapes}")


class TwoNetworkModel(model.CrossEntropyModel):
    """`classifier` and `peer` of the same architecture (module docstring).

    `classifier` is what evaluation, selection and export use: by default the first
    network; a subclass may pass `inference` (a model built on both networks, e.g.
    DivideMix's average) and keeps the first network as `network`.
    """

    method = "two-network training"

    def __init__(self, classifier, peer, weight_decay=0.0, inference=None, **kwargs):
        check_pair(classifier, peer, self.method)
        super().__init__(classifier if inference is None else inference,
                         weight_decay=weight_decay, **kwargs)
        if inference is not None:
            self.network = classifier
        self.peer = peer
        self.built = classifier.built and peer.built
