"""Checks of the 64–512-filter CIFAR ResNets (`models.resnet_basic`): ELR's ResNet-34 and
DivideMix's PreAct ResNet-18. Each network is built once (module fixtures); no training."""

import keras
import numpy as np
import pytest

from idn_tf import models
from idn_tf.models import resnet_basic


def weight_counts(arch, num_classes, channels=3):
    """(trainable, BN moving statistics) of `arch` by hand, from the authors' PyTorch code.

    Conv k·k·cin·cout (no bias); BN 2·c trainable (gamma, beta) + 2·c moving statistics;
    dense 512·K + K. resnet34 (ELR's ResNet_Zoo.py): stem conv+BN; a block is two 3×3
    conv+BN, plus a 1×1 conv+BN projection where the shape changes. preact_resnet18
    (DivideMix's PreResNet.py): stem conv+BN; a block is BN(cin), 3×3 conv, BN(cout),
    3×3 conv, plus a 1×1 conv without BN where the shape changes.
    """
    blocks = {"resnet34": (3, 4, 6, 3), "preact_resnet18": (2, 2, 2, 2)}[arch]
    convs, bns, cin = [9 * channels * 64], [64], 64
    for stage, (cout, count) in enumerate(zip((64, 128, 256, 512), blocks)):
        for block in range(count):
            project = stage > 0 and block == 0
            convs += [9 * cin * cout, 9 * cout * cout] + ([cin * cout] if project else [])
            if arch == "resnet34":
                bns += [cout, cout] + ([cout] if project else [])
            else:
                bns += [cin, cout]
            cin = cout
    trainable = sum(convs) + 2 * sum(bns) + 512 * num_classes + num_classes
    return trainable, 2 * sum(bns)


def trainable_count(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def uint8_images(batch, shape=(32, 32, 3), seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(batch, *shape), dtype=np.uint8)


@pytest.fixture(scope="module", params=["resnet34", "preact_resnet18"])
def net(request):
    model = models.build_classifier(request.param, (32, 32, 3), 10, [0.49, 0.48, 0.45],
                                    [0.2] * 3, seed=0)
    return request.param, model


def test_parameter_counts_match_the_hand_formula(net):
    arch, model = net
    trainable, moving = weight_counts(arch, 10)
    assert trainable_count(model) == trainable
    assert model.count_params() == trainable + moving
    # The figures the PyTorch models print (sum of p.numel() over parameters) for K = 10:
    # ELR's ResNet-34 21,282,122; DivideMix's ResNet18 (kuangliu's PreActResNet18,
    # 11,171,146, plus its stem's BN: 128).
    assert trainable == {"resnet34": 21_282_122, "preact_resnet18": 11_171_274}[arch]


def test_uint8_in_logits_out(net):
    arch, model = net
    assert model.input.dtype == "uint8" and tuple(model.input.shape) == (None, 32, 32, 3)
    assert model.get_layer("standardize") is not None  # preprocessing in the graph
    out = model(uint8_images(2), training=False).numpy()
    assert out.shape == (2, 10) and np.isfinite(out).all()
    assert not np.allclose(out[0], out[1])  # two different images, two different outputs


def test_layer_structure(net):
    arch, model = net
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    blocks = sum(resnet_basic.BLOCKS[arch])
    assert len(convs) == 1 + 2 * blocks + 3  # stem, two per block, three projections
    assert sorted(c.kernel_size for c in convs).count((1, 1)) == 3
    assert all(not c.use_bias for c in convs)
    assert all(n.synchronized and n.momentum == 0.9 and n.epsilon == 1e-5 for n in norms)
    assert len(norms) == (1 + 2 * blocks + 3 if arch == "resnet34" else 1 + 2 * blocks)
    # 32 -> 4 at the last stage (three stride-2 stages), then the pooled dense layer.
    pooled = [layer for layer in model.layers
              if isinstance(layer, keras.layers.GlobalAveragePooling2D)][0]
    assert tuple(pooled.input.shape[1:]) == (4, 4, 512)


def test_preact_identity_shortcut_adds_the_pre_activated_input(net):
    """DivideMix's block adds shortcut(ReLU(BN(x))): the identity carries the activation."""
    arch, model = net
    adds = [layer for layer in model.layers if isinstance(layer, keras.layers.Add)]
    assert len(adds) == sum(resnet_basic.BLOCKS[arch])
    sources = [[t._keras_history.operation for t in add.input] for add in adds]
    if arch == "preact_resnet18":
        identity = [s for s in sources if not any(isinstance(op, keras.layers.Conv2D)
                                                  and op.kernel_size == (1, 1) for op in s)]
        assert len(identity) == 5  # 8 blocks, 3 with a projection
        assert all(isinstance(s[1], keras.layers.ReLU) for s in identity)
        # no ReLU after a sum: the next block's BN (or the pooling) reads it directly
        assert not any(isinstance(layer, keras.layers.ReLU) and
                       isinstance(layer.input._keras_history.operation, keras.layers.Add)
                       for layer in model.layers)
    else:
        relus_after_add = [layer for layer in model.layers if isinstance(layer, keras.layers.ReLU)
                           and isinstance(layer.input._keras_history.operation, keras.layers.Add)]
        assert len(relus_after_add) == len(adds)


def test_seeded_initialisers():
    a = models.build_classifier("preact_resnet18", (8, 8, 3), 4, [0.5] * 3, [0.2] * 3, seed=3)
    b = models.build_classifier("preact_resnet18", (8, 8, 3), 4, [0.5] * 3, [0.2] * 3, seed=3)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    kernels = [w for w in a.get_weights() if w.ndim == 4 and w.shape[:2] == (3, 3)]
    assert not np.allclose(kernels[1], kernels[2])  # each layer its own seed


@pytest.mark.e2e  # writes 45-85 MB
def test_keras_file_round_trip(net, tmp_path):
    arch, model = net
    path = tmp_path / f"{arch}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    images = uint8_images(2, seed=1)
    np.testing.assert_allclose(loaded(images, training=False), model(images, training=False),
                               rtol=1e-5, atol=1e-5)
