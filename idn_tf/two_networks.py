"""Two networks of one architecture trained together: what Co-teaching and DivideMix share.

`model.TwoNetworkModel` (the Keras model both subclass) holds the first network,
`classifier`, and its `peer`, checks (`model.check_pair`) that they are two networks of the
same weight shapes, and is built when both are, so both networks' weights (and the optimizer's state for both) are in the model's weights:
`callbacks.Backup` checkpoints and restores the pair as one unit. `networks` builds
the pair for a stage: the first network as every stage builds its classifier
(`stages.new_classifier`, --seed), the peer with --seed + `PEER_SEED_OFFSET`, so the
two start from different weights. This module imports no TensorFlow (the methods'
registry reads `PEER_SEED_OFFSET` before TensorFlow starts).
"""

# The second network is initialised as `stages.new_classifier` with --seed + this.
PEER_SEED_OFFSET = 10007


def networks(config, data):
    """(first network, peer): fresh classifiers of --arch from --seed and --seed +
    `PEER_SEED_OFFSET` (call in the stage's `stages.model_scope`)."""
    from idn_tf import stages
    return (stages.new_classifier(config, data),
            stages.new_classifier(config, data, seed=config.seed + PEER_SEED_OFFSET))
