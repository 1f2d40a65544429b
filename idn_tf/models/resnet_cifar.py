"""The CIFAR ResNets of He et al. 2016 ("Deep Residual Learning", section 4.2).

A 3×3 conv with 16 filters, then three stages of n basic blocks with 16, 32
and 64 filters (stride 2 at the first block of stages 2 and 3), global
average pooling and a dense layer: depth 6n+2, e.g. ResNet-20 (n=3) …
ResNet-110 (n=18). Shortcuts are the paper's option A, parameter-free: the
identity, or where the shape changes a stride-2 subsample with zero-padded
channels (`ZeroPadShortcut`). ResNet-32 has 0.464 M trainable parameters.

No kernel regulariser: weight decay is coupled L2 in the train step.
"""

import keras

DEPTHS = {"resnet20": 20, "resnet32": 32, "resnet44": 44, "resnet56": 56, "resnet110": 110}
STAGE_FILTERS = (16, 32, 64)


@keras.saving.register_keras_serializable(package="idn_tf")
class ZeroPadShortcut(keras.layers.Layer):
    """Option-A shortcut: x[:, ::s, ::s, :], channels zero-padded to `channels`.

    The padding is split evenly, (channels − C) // 2 zeros before the input
    channels and the rest after, as in the common reference implementations.
    A custom layer rather than a Lambda so `.keras` files load without
    deserialising Python bytecode.
    """

    def __init__(self, channels, strides=2, **kwargs):
        super().__init__(**kwargs)
        self.channels = int(channels)
        self.strides = int(strides)

    def call(self, x):
        extra = self.channels - x.shape[-1]
        if extra < 0:
            raise ValueError(f"cannot shrink {x.shape[-1]} channels to {self.channels}")
        x = x[:, ::self.strides, ::self.strides, :]
        return keras.ops.pad(x, [[0, 0], [0, 0], [0, 0], [extra // 2, extra - extra // 2]])

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "strides": self.strides}


def resnet_cifar(x, num_classes, depth, seed=None):
    """Applies ResNet-`depth` to the float tensor `x` [B, H, W, C]; returns logits [B, K].

    `depth` = 6n+2. `seed` makes the He-normal conv and Glorot dense
    initialisers deterministic (each layer its own).
    """
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"depth must be 6n+2 with n >= 1, got {depth}")
    blocks_per_stage = (depth - 2) // 6
    offsets = iter(range(depth))  # one initialiser seed per weighted layer

    def conv_bn(x, filters, strides=1):
        if strides > 1:
            # Symmetric padding, so output pixel i is centred on input pixel
            # s·i, the pixel the option-A shortcut keeps ("same" would pad
            # only bottom/right and centre it on s·i + 1 for even sizes).
            x = keras.layers.ZeroPadding2D(1)(x)
        offset = next(offsets)
        x = keras.layers.Conv2D(
            filters, 3, strides=strides, padding="valid" if strides > 1 else "same",
            use_bias=False,  # BatchNormalization's beta is the bias
            kernel_initializer=keras.initializers.HeNormal(None if seed is None else seed + offset),
        )(x)
        # PyTorch's BatchNorm2d defaults (running-average momentum 0.1 = Keras's 0.9,
        # epsilon 1e-5), as in the paper's implementation, rather than Keras's 0.99 / 1e-3.
        # synchronized: under a tf.distribute strategy the batch statistics (and so the
        # moving averages) are the global batch's, equal on every replica; without it
        # each replica's copy drifts on its share of the batch.
        return keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5,
                                               synchronized=True)(x)

    x = keras.layers.ReLU()(conv_bn(x, STAGE_FILTERS[0]))
    for stage, filters in enumerate(STAGE_FILTERS):
        for block in range(blocks_per_stage):
            strides = 2 if stage > 0 and block == 0 else 1
            shortcut = x
            if strides > 1 or x.shape[-1] != filters:
                shortcut = ZeroPadShortcut(filters, strides)(x)
            y = keras.layers.ReLU()(conv_bn(x, filters, strides))
            y = conv_bn(y, filters)
            x = keras.layers.ReLU()(keras.layers.Add()([y, shortcut]))
    x = keras.layers.GlobalAveragePooling2D()(x)
    offset = next(offsets)
    return keras.layers.Dense(
        num_classes, name="logits", dtype="float32",  # precision.py
        kernel_initializer=keras.initializers.GlorotUniform(None if seed is None else seed + offset),
    )(x)
