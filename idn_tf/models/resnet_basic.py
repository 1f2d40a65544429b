"""The 64–512-filter CIFAR ResNets of the noisy-label literature's PyTorch code.

A 3×3 stem conv with 64 filters (stride 1, no max-pool), four stages of basic blocks
with 64, 128, 256 and 512 filters (stride 2 at the first block of stages 2–4), global
average pooling (the authors' `avg_pool2d(out, 4)` on the 4×4 maps of a 32×32 input)
and a dense layer with bias. Two variants:

- `resnet34`: ELR's and SOP's backbone (Liu et al. 2020, 2022; ELR's
  `model/ResNet_Zoo.py`, the kuangliu/pytorch-cifar ResNet): stem conv-BN-ReLU;
  post-activation blocks conv-BN-ReLU-conv-BN, + shortcut, ReLU, blocks [3, 4, 6, 3];
  where the shape changes the shortcut is a 1×1 strided conv + BN (projection).
  21.28 M trainable parameters for K = 10.
- `preact_resnet18`: DivideMix's backbone (Li et al. 2020, `PreResNet.py`): stem
  conv-BN-ReLU; pre-activation blocks [2, 2, 2, 2]: a = ReLU(BN(x)), then
  conv(a) → BN-ReLU → conv, plus a shortcut taken from `a` (an identity of `a`, or
  where the shape changes a 1×1 strided conv of `a` without BN), no ReLU after the
  sum; no BN-ReLU after the last block (the authors' forward pools the last block's
  sum directly). Their identity shortcut carries the pre-activated `a`, not `x` as
  in He et al.'s pre-activation paper: their `self.shortcut` is an empty
  `nn.Sequential` applied to `a`. We follow their code. 11.17 M trainable parameters.

Strided 3×3 convs pad one pixel on every side (PyTorch's `padding=1`), so output pixel
i is centred on input pixel 2i like the 1×1 projection's, as in `resnet_cifar`.
BatchNormalization takes PyTorch's defaults (momentum 0.1 = Keras's 0.9, epsilon
1e-5) and is synchronized across replicas, as in `resnet_cifar`. Initialisers are the
existing ResNets' (He-normal convs, Glorot-uniform dense, each seeded from `seed`),
not PyTorch's default Kaiming-uniform(a=√5): the same for every backbone here.
No kernel regulariser: weight decay is coupled L2 in the train step.
"""

import keras

STAGE_FILTERS = (64, 128, 256, 512)
BLOCKS = {"resnet34": (3, 4, 6, 3), "preact_resnet18": (2, 2, 2, 2)}


class _Layers:
    """Builds the weighted layers of one network, each with its own initialiser seed."""

    def __init__(self, seed):
        self.seed, self.count = seed, 0

    def _next_seed(self):
        self.count += 1
        return None if self.seed is None else self.seed + self.count - 1

    def conv(self, x, filters, size=3, strides=1):
        if size == 3 and strides > 1:
            x = keras.layers.ZeroPadding2D(1)(x)
        padding = "same" if size == 3 and strides == 1 else "valid"
        return keras.layers.Conv2D(
            filters, size, strides=strides, padding=padding, use_bias=False,
            kernel_initializer=keras.initializers.HeNormal(self._next_seed()))(x)

    @staticmethod
    def bn(x):
        return keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, synchronized=True)(x)

    def logits(self, x, num_classes):
        x = keras.layers.GlobalAveragePooling2D()(x)
        return keras.layers.Dense(
            num_classes, name="logits", dtype="float32",  # precision.py
            kernel_initializer=keras.initializers.GlorotUniform(self._next_seed()))(x)


def _stages(blocks):
    """(filters, strides) of every block, in order."""
    for stage, (filters, count) in enumerate(zip(STAGE_FILTERS, blocks)):
        for block in range(count):
            yield filters, 2 if stage > 0 and block == 0 else 1


def resnet34(x, num_classes, seed=None, blocks=BLOCKS["resnet34"]):
    """Applies ResNet-34 (module docstring) to the float tensor `x` [B, H, W, C];
    returns logits [B, K]."""
    layers = _Layers(seed)
    x = keras.layers.ReLU()(layers.bn(layers.conv(x, STAGE_FILTERS[0])))
    for filters, strides in _stages(blocks):
        shortcut = x
        if strides > 1 or x.shape[-1] != filters:
            shortcut = layers.bn(layers.conv(x, filters, size=1, strides=strides))
        y = keras.layers.ReLU()(layers.bn(layers.conv(x, filters, strides=strides)))
        y = layers.bn(layers.conv(y, filters))
        x = keras.layers.ReLU()(keras.layers.Add()([y, shortcut]))
    return layers.logits(x, num_classes)


def preact_resnet18(x, num_classes, seed=None, blocks=BLOCKS["preact_resnet18"]):
    """Applies DivideMix's PreAct ResNet-18 (module docstring) to the float tensor `x`
    [B, H, W, C]; returns logits [B, K]."""
    layers = _Layers(seed)
    x = keras.layers.ReLU()(layers.bn(layers.conv(x, STAGE_FILTERS[0])))
    for filters, strides in _stages(blocks):
        a = keras.layers.ReLU()(layers.bn(x))
        shortcut = a
        if strides > 1 or x.shape[-1] != filters:
            shortcut = layers.conv(a, filters, size=1, strides=strides)
        y = layers.conv(a, filters, strides=strides)
        y = layers.conv(keras.layers.ReLU()(layers.bn(y)), filters)
        x = keras.layers.Add()([y, shortcut])
    return layers.logits(x, num_classes)


BUILDERS = {"resnet34": resnet34, "preact_resnet18": preact_resnet18}
