"""Reading TensorBoard event files back in tests (keras callbacks/tensorboard_test.py style)."""

import os


def summaries(folder):
    """(step, summary value) of every summary in the event files of `folder`, in file order."""
    import tensorflow as tf
    for name in sorted(os.listdir(folder)):
        for record in tf.data.TFRecordDataset(os.path.join(folder, name)):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                yield event.step, value
