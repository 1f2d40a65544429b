"""Per-example tables (idn_tf/tables.py ExampleTable) against a numpy array kept alongside:
start values, gather, scatter (eagerly and in a compiled step), whole-table assign, and the
table as a non-trainable weight saved with its owner. (Under a 2-replica MirroredStrategy the
tables are checked through the models that own them: test_distribution.py, test_baselines.py,
test_coteaching.py and test_soft_labels.py, in subprocesses.)"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from idn_tf import tables


class Owner(keras.layers.Layer):
    """A layer holding one table (as IDNModel holds η), built outside any strategy."""

    def __init__(self, shape, initial=0.0, dtype="float32", **kwargs):
        super().__init__(**kwargs)
        self.table = tables.ExampleTable(self, "rows", shape, initial, dtype)


def test_scalar_start_value_shape_and_dtype():
    table = Owner((5, 3), 0.25).table
    assert table.shape == (5, 3) and table.numpy().dtype == np.float32
    np.testing.assert_array_equal(table.numpy(), np.full((5, 3), 0.25, np.float32))
    assert not table.mirrored
    ints = Owner((4,), 7, dtype="int64").table
    assert ints.numpy().dtype == np.int64
    np.testing.assert_array_equal(ints.numpy(), [7, 7, 7, 7])


def test_array_start_values_are_broadcast_to_the_shape():
    per_class = np.array([0.1, 0.2, 0.7])
    table = Owner((4, 3), per_class).table
    np.testing.assert_allclose(table.numpy(), np.tile(per_class, (4, 1)).astype(np.float32))
    rows = np.arange(12, dtype=np.float64).reshape(4, 3) / 10
    np.testing.assert_allclose(Owner((4, 3), rows).table.numpy(), rows.astype(np.float32))
    with pytest.raises(ValueError):
        Owner((4, 3), np.ones(4))  # (4,) does not broadcast to (4, 3)


def test_the_table_is_one_non_trainable_weight_of_its_owner():
    owner = Owner((6,), 0.5, name="owner")
    assert owner.trainable_weights == []
    assert [w.path for w in owner.non_trainable_weights] == ["owner/rows"]
    assert owner.non_trainable_weights[0] is owner.table.variable


def test_gather_is_numpy_indexing_with_repeats_and_any_order():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(10, 4)).astype(np.float32)
    table = Owner((10, 4), values).table
    for ids in ([3], [9, 0, 9, 4], list(range(10))[::-1], []):
        got = table.gather(tf.constant(ids, tf.int64)).numpy()
        np.testing.assert_array_equal(got, values[np.asarray(ids, np.int64)].reshape(-1, 4))
    assert table.gather(tf.constant([1, 2], tf.int32)).shape == (2, 4)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "tf.function"])
def test_scatter_writes_exactly_the_given_rows(compiled):
    rng = np.random.default_rng(1)
    expected = rng.normal(size=(12, 3)).astype(np.float32)
    owner = Owner((12, 3), expected)
    table = owner.table
    scatter = tf.function(table.scatter) if compiled else table.scatter
    for _ in range(4):
        ids = rng.choice(12, size=5, replace=False)
        values = rng.normal(size=(5, 3))
        scatter(tf.constant(ids, tf.int32), tf.constant(values, tf.float64))  # both cast
        expected[ids] = values.astype(np.float32)
        np.testing.assert_array_equal(table.numpy(), expected)


def test_scatter_of_no_rows_changes_nothing():
    table = Owner((3,), 0.5).table
    table.scatter(tf.zeros([0], tf.int64), tf.zeros([0]))
    np.testing.assert_array_equal(table.numpy(), [0.5, 0.5, 0.5])


def test_a_row_given_twice_in_one_scatter_gets_one_of_its_values():
    # README: repeated examples in one batch share a row, which a step writes once.
    table = Owner((4, 2), 0.0).table
    table.scatter(tf.constant([1, 3, 1]), tf.constant([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]))
    got = table.numpy()
    np.testing.assert_array_equal(got[[0, 2, 3]], [[0, 0], [0, 0], [2, 2]])
    assert got[1].tolist() in ([1.0, 1.0], [3.0, 3.0])


def test_scatter_inside_a_training_step_of_the_owner():
    """A model's train_step reads its batch's rows and writes them back, as the method's η:
    here row ← row + 1 for the batch's ids, over an epoch of 3 batches with one id twice."""

    class Counter(keras.Model):
        def __init__(self):
            super().__init__()
            self.count = tables.ExampleTable(self, "count", (7,), 0.0)

        def train_step(self, batch):
            ids = batch["index"]
            self.count.scatter(ids, self.count.gather(ids) + 1.0)
            return {"rows": tf.size(ids)}

    model = Counter()
    model.compile()
    ids = np.array([0, 2, 4, 6, 1, 3, 5, 6])
    model.fit(tf.data.Dataset.from_tensor_slices({"index": ids}).batch(3), epochs=2, verbose=0)
    expected = np.zeros(7)
    for _ in range(2):
        for start in range(0, len(ids), 3):
            expected[ids[start:start + 3]] += 1  # distinct within each batch of 3
    np.testing.assert_array_equal(model.count.numpy(), expected)
    assert expected[6] == 4


def test_assign_replaces_the_whole_table_in_its_shape_and_dtype():
    table = Owner((2, 3), 0.0).table
    table.assign(np.arange(6, dtype=np.float64))  # reshaped and cast
    np.testing.assert_array_equal(table.numpy(), np.arange(6, dtype=np.float32).reshape(2, 3))
    assert table.numpy().dtype == np.float32
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError)):
        table.assign(np.zeros(5))


def test_the_table_is_saved_and_loaded_with_the_owners_weights(tmp_path):
    def model(initial):
        inputs = keras.Input((1,))
        layer = Owner((5, 2), initial, name="owner")
        outputs = keras.layers.Dense(1, name="dense")(inputs)
        net = keras.Model(inputs, outputs)
        net.owner = layer  # tracked as an attribute of the model
        return net, layer

    net, layer = model(0.0)
    rows = np.random.default_rng(2).normal(size=(5, 2)).astype(np.float32)
    layer.table.assign(rows)
    net.save_weights(str(tmp_path / "m.weights.h5"))
    fresh, fresh_layer = model(1.0)
    np.testing.assert_array_equal(fresh_layer.table.numpy(), np.ones((5, 2), np.float32))
    fresh.load_weights(str(tmp_path / "m.weights.h5"))
    np.testing.assert_array_equal(fresh_layer.table.numpy(), rows)
