"""ResNet-50 (keras.applications) with a dense K head, for Clothing1M-size images.

The backbone is `keras.applications.ResNet50(include_top=False,
pooling="avg")`, nested as one layer. Its weights are random ("none"),
Keras's ImageNet weights ("imagenet", downloaded on first use) or a local
copy of them (a path). Pretrained weights were trained on caffe-style inputs
(`keras.applications.resnet50.preprocess_input`), which `CaffePreprocessing`
reproduces inside the graph, so the classifier still takes raw uint8 pixels.
"""

import keras

from idn_tf.pretrained import IMAGENET_NOTOP_FILE, WeightsError, check_path, download_failed

MIN_SIZE = 32  # keras.applications.ResNet50 rejects smaller inputs


class BackboneError(ValueError):
    """ResNet-50 cannot be built as asked: input too small, or weights unavailable.

    A user error (bad flag, missing file, no network), which callers report in one line.
    """


@keras.saving.register_keras_serializable(package="idn_tf")
class CaffePreprocessing(keras.layers.Layer):
    """uint8 RGB pixels -> float32 BGR minus the ImageNet channel means, unscaled.

    Same as `keras.applications.resnet50.preprocess_input` (mode "caffe")
    on 0..255 floats, as a serialisable layer.
    """

    BGR_MEAN = (103.939, 116.779, 123.68)

    def call(self, x):
        x = keras.ops.cast(x, "float32")[..., ::-1]
        return x - keras.ops.convert_to_tensor(self.BGR_MEAN, dtype="float32")


def is_pretrained(weights):
    """True unless `weights` asks for a random initialisation ("none" or None)."""
    return weights not in (None, "none")


def resnet50(x, num_classes, weights="none", seed=None):
    """Applies ResNet-50 and a dense head to the float tensor `x` [B, H, W, 3]; logits [B, K].

    Parameters
    ----------
    x : KerasTensor
        Preprocessed images, H and W at least 32; `CaffePreprocessing`
        output when `weights` is pretrained.
    num_classes : int
        K, the width of the head.
    weights : str or None
        "none" (or None) for a random backbone, "imagenet" for Keras's
        download, or the path of a local `.h5` / `.weights.h5` file holding
        the notop ResNet-50 weights (e.g. Keras's `IMAGENET_NOTOP_FILE`).
    seed : int, optional
        Seeds the head's initialiser. keras.applications takes no seed: a
        random backbone is reproducible only via `keras.utils.set_random_seed`.

    Raises
    ------
    BackboneError
        Input too small or not 3-channel for pretrained weights, a weights
        file that does not exist, or ImageNet weights that cannot be
        downloaded.
    """
    height, width, channels = x.shape[1:]
    if min(height, width) < MIN_SIZE:
        raise BackboneError(f"ResNet-50 needs images of at least {MIN_SIZE}×{MIN_SIZE}, got {height}×{width}")
    if is_pretrained(weights) and channels != 3:
        raise BackboneError(f"pretrained ResNet-50 weights need 3 input channels, got {channels}")
    net = backbone(x.shape[1:], weights)
    for layer in net.layers:
        # As in the CIFAR ResNets: under a tf.distribute strategy, batch statistics of the
        # global batch, so the replicas' moving averages stay equal (read at call time).
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = True
    return keras.layers.Dense(
        num_classes, name="logits", dtype="float32",  # precision.py
        kernel_initializer=keras.initializers.GlorotUniform(seed))(net(x))


def backbone(input_shape, weights):
    """keras.applications.ResNet50 without its top, average-pooled (pool-5), with `weights`.

    Takes caffe-preprocessed float images (`CaffePreprocessing`) when `weights` is
    pretrained. Raises BackboneError when the weights cannot be had.
    """
    def build(keras_weights):
        return keras.applications.ResNet50(
            include_top=False, weights=keras_weights, input_shape=tuple(input_shape),
            pooling="avg", name="resnet50_backbone")

    if not is_pretrained(weights):
        return build(None)
    if weights == "imagenet":
        try:
            return build("imagenet")
        except Exception as err:  # get_file raises a bare Exception when offline
            raise BackboneError(download_failed(err)) from err
    try:
        path = check_path(weights)
    except WeightsError as err:
        raise BackboneError(str(err)) from None
    try:
        return build(path)
    except (OSError, ValueError) as err:  # not HDF5 (h5py), or another model's weights
        raise BackboneError(f"{path!r} is not a weights file of the notop ResNet-50 (e.g. "
                            f"{IMAGENET_NOTOP_FILE}): {str(err).splitlines()[0]}") from err
