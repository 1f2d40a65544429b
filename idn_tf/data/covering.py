"""Class-covering training batches: every batch holds at least one example of every class
of the observed labels (L_DMI's batches, `methods.ldmi`).

L_DMI's loss −log|det(PᵀỸ / B)| has zero gradient on a batch without some class (PᵀỸ is
singular). At K = 100 and B = 256, nearly every shuffled batch misses a class; covering
batches leave none without one.

`cover_order` is the epoch's order in numpy; `CoveringView` is an in-memory data view
(`views.ArrayData`) whose training batches follow it, every other attribute the view's.
"""

import numpy as np


def cover_order(labels, batch_size, seed, epoch):
    """One epoch's order of training rows, int64 [M], to be cut into batches of
    `batch_size` (the last one smaller): ceil(N / batch_size) batches, each holding one
    example of every class present in `labels` [N] first, filled with the other examples.

    Drawn from numpy's generator seeded by (seed, epoch) alone, so a resumed run sees the
    same batches. Every example is in the epoch once (M = N) when every class has at least
    one example per batch and the natural last batch, N − (S − 1)·batch_size for S batches,
    holds at least one example per class. Otherwise the order is longer: a class with
    fewer examples than batches repeats its examples (and the rows left without room wait
    for the next epoch), and when the last batch would be too small to cover the classes it
    gets exactly one per class while the fill of the full batches repeats examples in turn.

    A slow loop would do: for each class c, shuffle its rows and deal them round-robin,
    one to each batch; shuffle the rows not dealt; give each batch but the last as many of
    them as it has room for, the last the rest.
    """
    labels = np.asarray(labels, np.int64)
    n, batch_size = len(labels), int(batch_size)
    classes = np.unique(labels)
    steps = -(-n // batch_size)
    if len(classes) > batch_size:
        raise ValueError(f"batch size {batch_size} cannot cover {len(classes)} classes")
    rng = np.random.default_rng([int(seed), int(epoch)])
    covers = np.empty((steps, len(classes)), np.int64)  # [batch, class]: one example each
    dealt = np.zeros(n, bool)
    for j, c in enumerate(classes):
        pool = rng.permutation(np.flatnonzero(labels == c))
        covers[:, j] = pool[np.arange(steps) % len(pool)]
        dealt[covers[:, j]] = True
    rest = rng.permutation(np.flatnonzero(~dealt))
    room = (steps - 1) * (batch_size - len(classes))  # the full batches' fill
    if len(rest) < room:  # the last batch is all covers; the full batches repeat fill rows
        pool = rest if len(rest) else rng.permutation(n)
        rest = pool[np.arange(room) % len(pool)]
    # The last batch's fill is capped at its room: a class that repeats takes slots, and
    # the rows that then do not fit wait for the next epoch.
    rest = rest[:room + batch_size - len(classes)]
    fill = np.split(rest, [(b + 1) * (batch_size - len(classes)) for b in range(steps - 1)])
    return np.concatenate([np.concatenate([covers[b], fill[b]]) for b in range(steps)])


class CoveringView:
    """An in-memory data view (`views.ArrayData`) whose training batches cover every
    observed class (`cover_order`); augmentation and records as the view's own
    (`pipeline.train_dataset`)."""

    def __init__(self, view):
        if not hasattr(view.train, "images"):
            raise TypeError("class-covering batches need an in-memory view (views.ArrayData)")
        self.view = view

    def __getattr__(self, name):
        return getattr(self.view, name)

    def train_dataset(self, labels, batch_size, seed, epochs, initial_epoch=0):
        from idn_tf.data import pipeline
        view = self.view

        def order(epoch):
            return cover_order(labels, batch_size, seed, epoch)

        return pipeline.train_dataset(view.train.images, labels, view.train.clean_labels,
                                      batch_size, seed=seed, augment=view.augment,
                                      padding=view.padding, epochs=epochs,
                                      initial_epoch=initial_epoch, order=order)
