"""Class-covering batches (`data.covering`) and L_DMI's share of zero-gradient steps.

The checks count classes in the batches themselves (numpy over the labels, and the
records the tf.data pipeline yields), never the code's own bookkeeping; the reported
share of dead steps is compared with the share of batches missing a class, counted in
the dataset the stage trains on.
"""

import numpy as np
import pytest

from idn_tf import config as config_lib, train
from idn_tf.data import covering, sources, views

K, N, B = 100, 1000, 256  # the CIFAR-100 recipe's K and batch size


def _labels(n=N, k=K, seed=0):
    return np.random.default_rng(seed).permutation(np.arange(n) % k).astype(np.int64)


def _batches(order, batch_size):
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def test_cover_order_covers_every_class_and_visits_every_example_once():
    labels = _labels()
    order = covering.cover_order(labels, B, seed=3, epoch=5)
    np.testing.assert_array_equal(np.sort(order), np.arange(N))  # a permutation
    batches = _batches(order, B)
    assert [len(b) for b in batches] == [256, 256, 256, 232]  # as a shuffle's
    assert all(len(np.unique(labels[b])) == K for b in batches)


def test_cover_order_is_a_function_of_seed_and_epoch():
    labels = _labels()
    again = covering.cover_order(labels, B, seed=3, epoch=5)
    np.testing.assert_array_equal(covering.cover_order(labels, B, 3, 5), again)
    assert not np.array_equal(covering.cover_order(labels, B, 3, 6), again)
    assert not np.array_equal(covering.cover_order(labels, B, 4, 5), again)


def test_cover_order_repeats_a_class_smaller_than_the_batches():
    # Hand-worked: 4 rows, batch 2, so 2 batches; class 1 has one row (3), which must be in
    # both; class 0's rows fill the rest, and the row without room waits for the next epoch.
    labels = np.array([0, 0, 0, 1])
    order = covering.cover_order(labels, 2, seed=0, epoch=0)
    batches = _batches(order, 2)
    assert len(batches) == 2 and all(sorted(labels[b]) == [0, 1] for b in batches)
    assert list(order).count(3) == 2 and len(set(order) - {3}) == 2


def test_cover_order_small_last_batch_still_covers():
    # 130 rows, batch 128, 100 classes: the natural last batch (2 rows) cannot cover them.
    labels = np.arange(130) % K
    batches = _batches(covering.cover_order(labels, 128, seed=1, epoch=0), 128)
    assert [len(b) for b in batches] == [128, 100]
    assert all(len(np.unique(labels[b])) == K for b in batches)
    assert set(np.concatenate(batches)) == set(range(130))


def test_cover_order_refuses_a_batch_smaller_than_the_classes():
    with pytest.raises(ValueError, match="cannot cover 100 classes"):
        covering.cover_order(_labels(), 64, 0, 0)


def _fixture(tmp_path):
    """A 100-class npz: random 8x8 uint8 images, 10 per class, clean labels known."""
    rng = np.random.default_rng(0)
    labels = _labels()
    path = tmp_path / "k100.npz"
    np.savez(path, x_train=rng.integers(0, 256, (N, 8, 8, 3), dtype=np.uint8), y_train=labels,
             clean_train=labels, x_test=rng.integers(0, 256, (200, 8, 8, 3), dtype=np.uint8),
             y_test=np.arange(200) % K)
    return path, labels


def _missing_share(dataset, steps):
    """The share of the dataset's first `steps` batches without some class, and the batches."""
    batches = list(dataset.take(steps).as_numpy_iterator())
    return np.mean([len(np.unique(b["label"])) < K for b in batches]), batches


def test_covering_view_batches_cover_every_class(tmp_path):
    path, labels = _fixture(tmp_path)
    data = views.ArrayData(sources.load("npz", npz_path=str(path)), augment="pad_crop_flip")
    cover = covering.CoveringView(data)
    steps = cover.steps_per_epoch(labels, B)
    share, batches = _missing_share(cover.train_dataset(labels, B, 0, epochs=2), 2 * steps)
    assert steps == 4 and share == 0.0
    for b in batches:  # the records are the rows' own: labels, and images up to augmentation
        np.testing.assert_array_equal(b["label"], labels[b["index"]])
        assert b["image"].shape[1:] == (8, 8, 3) and b["image"].dtype == np.uint8
    first = np.concatenate([b["index"] for b in batches[:steps]])
    np.testing.assert_array_equal(np.sort(first), np.arange(N))
    # The view's shuffled batches nearly always miss a class at K = 100, B = 256.
    assert _missing_share(data.train_dataset(labels, B, 0, epochs=2), 2 * steps)[0] == 1.0


@pytest.mark.e2e
@pytest.mark.parametrize("batches", ["cover", "random"])
def test_ldmi_dead_steps_reported(tmp_path, batches):
    """The reported share of zero-gradient steps: 0 with covering batches (the acceptance:
    <= 5% at the CIFAR-100 recipe's batch 256 and K = 100), and the share of batches that
    miss a class, counted in the dataset itself, with shuffled ones."""
    path, labels = _fixture(tmp_path)
    cfg = config_lib.resolve(dict(
        dataset="npz", npz_path=str(path), method="ldmi", dmi_batches=batches, batch_size=B,
        epochs=2, lr_decay_epochs=(), dmi_lr=1e-3, verbose=0, monitor_every=1000,
        export_dir="", run_dir=str(tmp_path / "run")))
    res = train.run(cfg)
    if batches == "cover":
        assert res["dmi_dead_steps"] == 0.0
        return
    data = views.from_config(cfg, sources.load("npz", npz_path=str(path)))
    expected, _ = _missing_share(data.train_dataset(labels, B, cfg.seed, cfg.epochs), 8)
    assert expected > 0.9
    np.testing.assert_allclose(res["dmi_dead_steps"], expected)
    np.testing.assert_allclose(res["method_history"]["dead_steps"], [expected] * 2)
