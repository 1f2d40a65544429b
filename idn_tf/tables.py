"""Per-example tables: model state with one row per training example (η, ψ, soft labels).

A table is a non-trainable variable of the Keras model that owns it, of shape [N, ...]
and indexed by the examples' `index`. Being a weight of the model, it is saved with
the model's weights, so `callbacks.Backup` checkpoints and restores it with the rest
of a stage. A training step reads its batch's rows (`gather`) and writes them back
(`scatter`): O(B) work whatever N is.

Under a tf.distribute strategy the variable is mirrored: each replica holds a copy and
can write only its own. `scatter` therefore gathers the ids and values of every
replica and applies the same scatter on each, so that the copies stay equal (docs/method.md §7.5:
the other aggregation modes drop updates or fail). An epoch's last batch may leave a
replica with no rows; it still takes part in the gather.
"""

import keras
import numpy as np
import tensorflow as tf


class ExampleTable:
    """One non-trainable [N, ...] variable of `owner`, read and written by rows.

    Parameters
    ----------
    owner : keras.Model or keras.layers.Layer
        The model whose weights hold the table (created with `owner.add_weight`, under
        the strategy scope the owner is built in).
    name : str
        The weight's name.
    shape : tuple
        (N, ...): one row per example.
    initial : scalar or array broadcastable to `shape`
        The table's starting value.
    """

    def __init__(self, owner, name, shape, initial=0.0, dtype="float32"):
        self.shape = tuple(int(d) for d in shape)
        scalar = np.ndim(initial) == 0
        self.variable = owner.add_weight(
            shape=self.shape, dtype=dtype, trainable=False, autocast=False, name=name,
            initializer=keras.initializers.Constant(float(initial) if scalar else 0.0))
        if not scalar:
            self.assign(np.broadcast_to(np.asarray(initial), self.shape))

    @property
    def mirrored(self):
        """Whether the table has one copy per replica (a tf.distribute strategy)."""
        return isinstance(self.variable.value, tf.distribute.DistributedValues)

    def gather(self, ids):
        """The rows `ids` [B] of the table: [B, ...]."""
        # `.value` is the backing tf.Variable: Keras variables have no sparse ops.
        return tf.gather(self.variable.value, ids)

    def scatter(self, ids, values):
        """table[ids] = values (ids [B], values [B, ...]): the one way a table is written.

        Called in a replica context under a strategy: every replica must call it in
        the same step, since it all-gathers the replicas' rows.
        """
        ids = tf.cast(ids, tf.int64)
        values = tf.cast(values, self.variable.dtype)
        if self.mirrored:
            context = tf.distribute.get_replica_context()
            # Placed on this replica's copy of the table: MultiWorkerMirroredStrategy
            # sends a collective to its input's device and refuses a tensor without
            # one ("destinations can not be empty").
            with tf.device(self.variable.value.device):
                ids, values = tf.identity(ids), tf.identity(values)
            ids = context.all_gather(ids, axis=0)
            values = context.all_gather(values, axis=0)
            self.variable.value.scatter_update(tf.IndexedSlices(values, ids))
        else:
            self.variable.value.scatter_nd_update(ids[:, None], values)

    def assign(self, values):
        """Replaces the whole table (outside a training step, e.g. when a run is reused)."""
        self.variable.assign(tf.cast(tf.reshape(values, self.shape), self.variable.dtype))

    def numpy(self):
        return self.variable.numpy()
