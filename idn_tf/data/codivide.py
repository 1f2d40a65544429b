"""DivideMix's batches: each network's labelled and unlabelled rows, from the other's split.

Every epoch has `steps` steps of `batch_size` rows per stream; each step is

    {"x1": labelled rows of network 1, "u1": its unlabelled rows, "x2": ..., "u2": ...}

each {"image", "image2"} (two augmentation draws of the example), "x" with "label"
(observed) and "index". Network 1 trains on network 2's split and vice versa
(`dividemix.CoDivide` publishes the masks at the start of every epoch). A stream is a
shuffle of its set, repeated with a fresh shuffle until the epoch's steps are filled
(`cycled`); an empty set falls back to every example. During warm-up "x1" and "x2" are
two independent shuffles of every example (as the authors' two warm-up loaders) and
"u1"/"u2" repeat them (unused).

The split of an epoch is known only once the epoch starts, while tf.data prefetches
ahead: `SplitFeed.rows` (called from the dataset) waits until `publish` has been called
for its epoch. The shuffles are numpy draws of (seed, epoch, stream), the augmentation
draws stateless functions of (seed, epoch, stream, position), so a resumed run sees the
same batches once its split is recomputed from the restored networks.
"""

import threading

import numpy as np

STREAMS = ("x1", "u1", "x2", "u2")


def cycled(rows, length, rng):
    """`length` rows: shuffles of `rows` one after another (each a fresh `rng` permutation),
    truncated; int64 [length]."""
    rows = np.asarray(rows, np.int64)
    copies = -(-length // len(rows))
    return np.concatenate([rng.permutation(rows) for _ in range(copies)])[:length]


class SplitFeed:
    """The rows of every epoch's four streams, [4, steps·batch_size] (module docstring)."""

    def __init__(self, num_examples, batch_size, steps, seed, warmup_epochs, timeout=3600.0):
        self.num_examples, self.batch_size, self.steps = num_examples, batch_size, steps
        self.seed, self.warmup_epochs, self.timeout = int(seed), int(warmup_epochs), timeout
        self._masks = {}
        self._ready = threading.Condition()

    def publish(self, epoch, labelled_1, labelled_2):
        """Network 1's and network 2's own labelled masks [N] for the 0-based `epoch`."""
        with self._ready:
            self._masks[int(epoch)] = (np.asarray(labelled_1, bool), np.asarray(labelled_2, bool))
            self._ready.notify_all()

    def _wait(self, epoch):
        # The main thread publishes: if it asks itself (tf.data running inline), waiting
        # would never end, so it fails at once.
        main = threading.current_thread() is threading.main_thread()
        with self._ready:
            if not self._ready.wait_for(lambda: epoch in self._masks,
                                        timeout=0 if main else self.timeout):
                raise TimeoutError(f"no DivideMix split was published for epoch {epoch + 1}")
            return self._masks.pop(epoch)

    def rows(self, epoch):
        """int64 [4, steps·batch_size]: the rows of x1, u1, x2, u2 in the 0-based `epoch`."""
        epoch = int(epoch)
        length = self.steps * self.batch_size
        every = np.arange(self.num_examples, dtype=np.int64)

        def draw(stream, rows):
            rng = np.random.default_rng([self.seed, epoch, stream])
            return cycled(rows if len(rows) else every, length, rng)

        if epoch < self.warmup_epochs:
            x1, x2 = draw(0, every), draw(2, every)
            return np.stack([x1, x1, x2, x2])
        own_1, own_2 = self._wait(epoch)
        # Network 1 learns from network 2's split, network 2 from network 1's.
        return np.stack([draw(0, np.flatnonzero(own_2)), draw(1, np.flatnonzero(~own_2)),
                         draw(2, np.flatnonzero(own_1)), draw(3, np.flatnonzero(~own_1))])


def dataset(images, labels, feed, augment="none", padding=4, epochs=1, initial_epoch=0):
    """Batches of the four streams for epochs initial_epoch … epochs − 1 (`feed.steps` a
    epoch); `images` uint8 [N, H, W, C] and observed `labels` [N] in memory."""
    import tensorflow as tf

    from idn_tf.data import pipeline
    images_t = tf.constant(images)
    labels_t = tf.constant(np.asarray(labels, np.int64))
    transform = pipeline.augmenter(augment, images.shape[1:], padding)

    def epoch_batches(epoch):
        rows = tf.numpy_function(lambda e: feed.rows(int(e)), [epoch], tf.int64, stateful=True)
        rows.set_shape([len(STREAMS), None])
        epoch_seed = tf.stack([tf.constant(feed.seed, tf.int64), epoch])

        def example(position, rows_of_streams):
            element = {}
            for s, name in enumerate(STREAMS):
                row = rows_of_streams[s]
                image = tf.gather(images_t, row)
                if transform is None:
                    views = (image, image)
                else:
                    seed = tf.random.experimental.stateless_fold_in(
                        tf.random.experimental.stateless_fold_in(epoch_seed, s), position)
                    first, second = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
                    views = (transform(image, first), transform(image, second))
                element[name] = {"image": views[0], "image2": views[1]}
                if name.startswith("x"):
                    element[name].update(label=tf.gather(labels_t, row), index=row)
            return element

        return (tf.data.Dataset.from_tensor_slices(tf.transpose(rows)).enumerate()
                .map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
                .batch(feed.batch_size))

    data = tf.data.Dataset.range(initial_epoch, epochs).flat_map(epoch_batches)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return data.with_options(options).prefetch(tf.data.AUTOTUNE)
