"""Tests for idn_tf.plots: exact PNG sizes, drawn data equal to the inputs, captions."""

import io
import os

import numpy as np
import pytest
from PIL import Image  # a dependency of matplotlib

from idn_tf import plots

CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _png_size(path_or_bytes):
    if isinstance(path_or_bytes, bytes):
        path_or_bytes = io.BytesIO(path_or_bytes)
    with Image.open(path_or_bytes) as image:
        image.load()  # decodes the whole file, not only the header
        return image.size


def _assert_png(path, size):
    assert os.path.getsize(path) > 0
    assert _png_size(path) == size
    assert not [f for f in os.listdir(os.path.dirname(path)) if f.startswith(".tmp-")]


def _stages():
    epoch1, epoch2 = np.arange(1, 7), np.arange(1, 5)
    test1 = np.array([0.2, np.nan, 0.4, np.nan, 0.5, 0.55])  # evaluated every other epoch
    return {
        "stage 1: cross-entropy": {"epoch": epoch1,
                                   "train_observed_accuracy": np.linspace(0.1, 0.8, 6),
                                   "test_accuracy": test1},
        "stage 2: IDN": {"epoch": epoch2,
                         "train_observed_accuracy": np.array([0.7, 0.72, np.nan, 0.75]),
                         "test_accuracy": np.array([0.6, 0.61, 0.62, 0.63])},
    }


def test_accuracy_curves_png_has_the_fixed_size(tmp_path):
    path = str(tmp_path / "new_folder" / "accuracy.png")
    plots.accuracy_curves(path, _stages())
    _assert_png(path, plots.ACCURACY_SIZE)


def test_accuracy_curves_draw_the_finite_inputs_times_100():
    stages = _stages()
    fig = plots.accuracy_curves_figure(stages)
    assert len(fig.axes) == len(stages)
    for ax, (title, curves) in zip(fig.axes, stages.items()):
        assert ax.get_title() == title
        assert ax.get_ylim() == (0, 100)
        train, test = ax.get_lines()
        for line, key in ((train, "train_observed_accuracy"), (test, "test_accuracy")):
            keep = np.isfinite(curves[key])
            np.testing.assert_allclose(line.get_xdata(), curves["epoch"][keep], rtol=0, atol=0)
            np.testing.assert_allclose(line.get_ydata(), 100 * curves[key][keep], rtol=1e-12, atol=0)
        assert [t.get_text() for t in ax.get_legend().get_texts()] == [
            "train, observed labels", "test set"]


def test_accuracy_curves_reject_bad_input():
    with pytest.raises(ValueError, match="at least one stage"):
        plots.accuracy_curves_figure({})
    stages = _stages()
    stages["stage 2: IDN"]["test_accuracy"] = np.array([0.5])
    with pytest.raises(ValueError, match="test_accuracy has shape"):
        plots.accuracy_curves_figure(stages)


def _eta(seed=0):
    rng = np.random.default_rng(seed)
    eta = np.concatenate([rng.beta(0.5, 20, 900), rng.beta(5, 2, 100), [0.0, 1.0]])
    is_wrong = np.r_[np.zeros(900, bool), np.ones(100, bool), [False, True]]
    return eta, is_wrong


def _bar_heights(ax):
    return [np.array([bar.get_height() for bar in container]) for container in ax.containers]


def test_eta_histogram_pngs_have_the_fixed_size(tmp_path):
    eta, is_wrong = _eta()
    for name, wrong in (("with.png", is_wrong), ("without.png", None)):
        path = str(tmp_path / name)
        plots.eta_histogram(path, eta, wrong)
        _assert_png(path, plots.ETA_HISTOGRAM_SIZE)


def test_eta_histogram_bars_are_numpy_histogram_counts():
    eta, is_wrong = _eta()
    edges = np.linspace(0, 1, plots.ETA_BINS + 1)

    (ax,) = plots.eta_histogram_figure(eta, is_wrong).axes
    right, wrong = _bar_heights(ax)
    np.testing.assert_array_equal(right, np.histogram(eta[~is_wrong], bins=edges)[0])
    np.testing.assert_array_equal(wrong, np.histogram(eta[is_wrong], bins=edges)[0])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "right labels (n=901)", "wrong labels (n=101)"]
    assert ax.get_yscale() == "log"

    (ax,) = plots.eta_histogram_figure(eta).axes
    (everything,) = _bar_heights(ax)
    np.testing.assert_array_equal(everything, np.histogram(eta, bins=edges)[0])
    assert everything.sum() == eta.size  # 0 and 1 both land in a bin
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["all labels (n=1,002)"]


def test_eta_histogram_leaves_out_non_finite_eta():
    eta = np.array([0.1, np.nan, 0.5, np.inf])
    (ax,) = plots.eta_histogram_figure(eta, bins=10).axes
    (counts,) = _bar_heights(ax)
    assert counts.sum() == 2
    assert "2 non-finite left out" in ax.get_title()
    with pytest.raises(ValueError, match="is_wrong has shape"):
        plots.eta_histogram_figure(eta, is_wrong=np.zeros(3, bool))


def _examples(n, shape, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
    indices = rng.permutation(1000)[:n]
    observed = rng.integers(0, 10, n)
    estimated = observed.copy()
    estimated[1::2] = (observed[1::2] + 1) % 10
    return images, indices, observed, estimated


def test_highest_eta_grid_pngs_have_the_fixed_size(tmp_path):
    images, indices, observed, estimated = _examples(16, (8, 8, 1))
    path = str(tmp_path / "gray.png")
    plots.highest_eta_grid(path, images, indices, observed, estimated, CLASS_NAMES,
                           clean=observed, eta=np.linspace(1, 0.5, 16))
    _assert_png(path, plots.HIGHEST_ETA_SIZE)

    images, indices, observed, estimated = _examples(5, (32, 32, 3))
    path = str(tmp_path / "rgb.png")
    plots.highest_eta_grid(path, images, indices, observed, estimated, CLASS_NAMES)
    _assert_png(path, plots.HIGHEST_ETA_SIZE)


def test_highest_eta_captions():
    images, indices, observed, estimated = _examples(4, (8, 8, 1))
    clean = observed.copy()
    clean[0] = -1
    fig = plots.highest_eta_figure(images, indices, observed, estimated, CLASS_NAMES,
                                   clean=clean, eta=np.array([0.912, 0.5, 0.25, 0.125]))
    texts = fig.texts
    assert len(texts) == 4
    assert texts[1].get_text() == (
        f"#{indices[1]}  η=0.50\nobserved: {CLASS_NAMES[observed[1]]}\n"
        f"estimated: {CLASS_NAMES[estimated[1]]}\nclean: {CLASS_NAMES[clean[1]]}")
    assert texts[0].get_text().startswith(f"#{indices[0]}  η=0.91\n")
    assert texts[0].get_text().endswith("\nclean: unknown")
    # Black without a clean label, green when the estimate is the clean label, red when not.
    assert [t.get_color() for t in texts] == ["black", "firebrick", "darkgreen", "firebrick"]

    fig = plots.highest_eta_figure(images[:1], indices[:1], [3], [12], class_names=None)
    assert fig.texts[0].get_text() == f"#{indices[0]}\nobserved: 3\nestimated: 12"


def test_figure_to_array_and_png():
    images, indices, observed, estimated = _examples(16, (8, 8, 1))
    fig = plots.highest_eta_figure(images, indices, observed, estimated, CLASS_NAMES)
    array = plots.figure_to_array(fig)
    width, height = plots.HIGHEST_ETA_SIZE
    assert array.shape == (1, height, width, 3)
    assert array.dtype == np.uint8
    png = plots.figure_to_png(fig)
    assert png.startswith(b"\x89PNG")
    assert _png_size(png) == plots.HIGHEST_ETA_SIZE


def test_highest_eta_images_are_drawn_by_whole_factor_nearest_neighbour():
    colors = np.array([[250, 10, 10], [10, 250, 10], [10, 10, 250]], dtype=np.uint8)
    images = np.broadcast_to(colors[:, None, None, :], (3, 32, 32, 3))
    fig = plots.highest_eta_figure(images, [0, 1, 2], [0, 1, 2], [0, 1, 2], CLASS_NAMES)
    array = plots.figure_to_array(fig)[0]
    for color in colors:
        count = np.all(array == color, axis=-1).sum()
        factor = np.sqrt(count / (32 * 32))  # each source pixel became factor × factor
        assert factor >= 1 and factor == int(factor), count
    gray = np.full((1, 8, 8, 1), 77, dtype=np.uint8)
    array = plots.figure_to_array(plots.highest_eta_figure(gray, [0], [0], [0], CLASS_NAMES))[0]
    assert np.all(array == [77, 77, 77], axis=-1).sum() >= 64


def test_highest_eta_shrinks_images_larger_than_their_cell():
    images, indices, observed, estimated = _examples(9, (400, 400, 3))
    fig = plots.highest_eta_figure(images, indices, observed, estimated, CLASS_NAMES)
    width, height = plots.HIGHEST_ETA_SIZE
    assert plots.figure_to_array(fig).shape == (1, height, width, 3)


def test_highest_eta_rejects_bad_images():
    with pytest.raises(ValueError, match="at least one image"):
        plots.highest_eta_figure(np.zeros((0, 8, 8, 1), np.uint8), [], [], [], CLASS_NAMES)
    with pytest.raises(ValueError, match="images must be"):
        plots.highest_eta_figure(np.zeros((1, 8, 8, 2), np.uint8), [0], [0], [0], CLASS_NAMES)
