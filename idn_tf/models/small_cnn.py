"""A small CNN for small images (digits 8×8, tests, benchmarks).

Conv32-Conv64-MaxPool-Conv64-Dense128-Dense(K), the network of the digits
recipe (docs/method.md §3); ~0.3 M parameters at 8×8×1.
"""

import keras


def small_cnn(x, num_classes, seed=None):
    """Applies the network to the float tensor `x` [B, H, W, C]; returns logits [B, K].

    `seed` makes the Glorot initialisers deterministic (each layer its own).
    """
    def init(offset):
        return keras.initializers.GlorotUniform(seed=None if seed is None else seed + offset)

    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", kernel_initializer=init(0))(x)
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu", kernel_initializer=init(1))(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu", kernel_initializer=init(2))(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(128, activation="relu", kernel_initializer=init(3))(x)
    return keras.layers.Dense(num_classes, kernel_initializer=init(4), name="logits",
                              dtype="float32")(x)  # float32 logits under any policy (precision.py)
