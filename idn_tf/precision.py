"""--precision: the dtype policy of the classifiers, and the loss scale of a training step.

`float32` (the default) computes everything in float32. `mixed_float16` and
`mixed_bfloat16` are Keras's mixed policies: layers compute in the half type, their
weights stay float32. What must stay exact stays float32 under every policy
(docs/precision.md): the logits (each builder's last Dense is a float32 layer), the
log-softmax, the posterior q, the η step and every `tables.ExampleTable`.

float16 needs loss scaling: `wrap` makes the run's optimizer a Keras
`LossScaleOptimizer`; every train_step multiplies its loss by the optimizer's
`scale_loss` before taking gradients, `model.apply_update` adds the weight decay at the
same scale (the optimizer divides it out, and skips a step whose gradients are not
finite, halving the scale), and gradients taken for table rows are divided back with
`loss_scale`. bfloat16 has float32's range and needs none.

TensorFlow is imported inside the functions: the flags are checked before it loads.
"""

import contextlib

POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")
LOSS_SCALED = ("mixed_float16",)


@contextlib.contextmanager
def policy(name):
    """Keras's global dtype policy is `name` inside the block (models built there use it),
    the previous one after."""
    import keras
    if name not in POLICIES:
        raise ValueError(f"unknown precision {name!r}; choose one of {', '.join(POLICIES)}")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def wrap(optimizer, name):
    """`optimizer`, in a LossScaleOptimizer (dynamic scale) when precision `name` needs one."""
    import keras
    if name in LOSS_SCALED and not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def loss_scale(optimizer):
    """The factor the optimizer's `scale_loss` multiplies a loss by: a float32 scalar
    tensor, 1 without loss scaling."""
    import tensorflow as tf
    return tf.cast(optimizer.scale_loss(tf.constant(1.0)), tf.float32)
