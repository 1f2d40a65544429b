"""The run's figures: accuracy curves (paper Fig. 4), the η histogram and the
training examples with the highest η (paper Fig. 5).

Pure functions of numpy arrays. Figures are `matplotlib.figure.Figure` objects
drawn on an Agg canvas, never through pyplot: there is no global figure
registry, so nothing has to be closed (an unreferenced Figure is garbage like
any object) and drawing from a callback's thread is safe. No TensorFlow here;
`figure_to_array` gives the uint8 batch that `tf.summary.image` takes.

Every figure has a fixed size in pixels (the *_SIZE constants, width × height)
and PNGs are saved without bbox_inches="tight", so a file is exactly that size
whatever its content.
"""

import io
import math

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from idn_tf import artifacts

DPI = 100
ACCURACY_SIZE = (1200, 450)
ETA_HISTOGRAM_SIZE = (800, 500)
HIGHEST_ETA_SIZE = (800, 900)
ETA_BINS = 50
SWEEP_SIZE = (800, 500)

_TRAIN_COLOR = "tab:orange"
_TEST_COLOR = "tab:blue"
_VALIDATION_COLOR = "tab:green"
_RIGHT_COLOR = "tab:blue"
_WRONG_COLOR = "tab:red"


def figure_to_png(fig):
    """The figure as PNG bytes, at the figure's own size and dpi."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi)
    return buf.getvalue()


def figure_to_array(fig):
    """The rendered figure as uint8 [1, H, W, 3] (RGB), ready for tf.summary.image.

    The background is opaque, so the alpha channel carries nothing and is dropped.
    """
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    return rgba[None, :, :, :3].copy()


def accuracy_curves_figure(stages):
    """Paper Fig. 4: one panel per stage, accuracy (%) against epoch.

    stages: ordered mapping, panel title (e.g. "stage 1: cross-entropy") -> dict of
      "epoch": 1-based epoch numbers, [E];
      "train_observed_accuracy": accuracy on the un-augmented training images
        against the observed (noisy) labels, fraction in [0, 1], [E];
      "test_accuracy": accuracy on the test set, fraction in [0, 1], [E];
      optionally "validation_accuracy": accuracy on the validation split against its
        labels (observed ones for the noisy split);
      and "validation_epoch", "test_epoch": those curves' own epochs (default "epoch").
    NaN entries (an epoch without that evaluation) are left out and the line joins
    the remaining points, so a metric evaluated every few epochs still draws a line.
    """
    if not stages:
        raise ValueError("accuracy_curves needs at least one stage")
    fig = _new_figure(ACCURACY_SIZE, layout="constrained")
    axes = fig.subplots(1, len(stages), sharey=True, squeeze=False)[0]
    for ax, (title, curves) in zip(axes, stages.items()):
        first = np.asarray(curves["epoch"])
        for key, label, color in (
            ("train_observed_accuracy", "train, observed labels", _TRAIN_COLOR),
            ("validation_accuracy", "validation split", _VALIDATION_COLOR),
            ("test_accuracy", "test set", _TEST_COLOR),
        ):
            if key not in curves:
                continue
            epoch = np.asarray(curves.get(key.replace("accuracy", "epoch"), first))
            accuracy = np.asarray(curves[key], dtype=np.float64)
            if accuracy.shape != epoch.shape:
                raise ValueError(f"{title!r}: {key} has shape {accuracy.shape}, epoch {epoch.shape}")
            keep = np.isfinite(accuracy)
            ax.plot(epoch[keep], 100.0 * accuracy[keep], color=color, label=label,
                    marker="." if keep.sum() <= 30 else None)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if first.size:
            ax.set_xlim(min(1, first.min()), max(2, first.max()))
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    axes[0].set_ylim(0, 100)
    axes[0].set_ylabel("accuracy (%)")
    return fig


def stage_curves(monitor, history=None):
    """The accuracy curves of a stage, as `accuracy_curves` takes them: the training
    accuracy from its MonitorCallback history (empty if none); the validation and test
    accuracy of every epoch from its logs (`history`), where it has them."""
    monitor, history = monitor or {}, history or {}
    curves = {"epoch": monitor.get("epoch", []),
              "train_observed_accuracy": monitor.get("accuracy/train_observed", []),
              "test_accuracy": monitor.get("accuracy/test", [])}
    epochs = list(range(1, len(history.get("loss", [])) + 1))
    for key, logged in (("validation", "val_accuracy"), ("test", "test_accuracy")):
        if history.get(logged) and len(history[logged]) == len(epochs):
            curves.update({f"{key}_epoch": epochs, f"{key}_accuracy": history[logged]})
    if not curves["epoch"] and epochs:
        curves["epoch"] = epochs[-1:]  # the panel's range
        curves["train_observed_accuracy"] = [float("nan")]
    return curves


def accuracy_curves(path, stages):
    """Draws `accuracy_curves_figure(stages)` into the PNG file `path`."""
    _write_png(path, accuracy_curves_figure(stages))


def sweep_figure(flag, values, series):
    """The paper's Fig. 3 for any flag: accuracy (%) against the swept value (numbers,
    or the choices of a choice flag, evenly spaced).

    series: ordered mapping, method title -> dict of "validation" and "test": lists of
    (mean, std) per value, fractions in [0, 1] (NaN: no cell done). Validation solid,
    test dashed, one colour per method, ± std as error bars.
    """
    fig = _new_figure(SWEEP_SIZE, layout="constrained")
    ax = fig.subplots()
    numeric = all(not isinstance(v, str) for v in values)
    x = np.asarray(values if numeric else range(len(values)), np.float64)
    for i, (title, curves) in enumerate(series.items()):
        color = f"C{i}"
        for key, style in (("validation", "-"), ("test", "--")):
            mean, std = (np.asarray(v, np.float64) for v in zip(*curves[key]))
            keep = np.isfinite(mean)
            ax.errorbar(x[keep], 100 * mean[keep], yerr=100 * std[keep], fmt=style + "o",
                        color=color, capsize=3, label=f"{title}: {key}")
    ax.set_xlabel(flag)
    ax.set_ylabel("accuracy (%), selected epoch")
    if not numeric:  # a choice flag: one tick per value
        ax.set_xticks(x, [str(v) for v in values])
    elif len(x) and (x > 0).all() and x.max() / x.min() >= 100:
        ax.set_xscale("log")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    return fig


def sweep_plot(path, flag, values, series):
    """Draws `sweep_figure(flag, values, series)` into the PNG file `path`."""
    _write_png(path, sweep_figure(flag, values, series))


def eta_histogram_figure(eta, is_wrong=None, bins=ETA_BINS):
    """Histogram of the confusing probabilities η on [0, 1], log-scale counts.

    eta: [N]. is_wrong: optional bool [N], True where the observed label differs
    from the clean label; then the right and the wrong labels get one histogram
    each, overlaid (not stacked, so every bar's height is its own count, which a
    log axis needs), with their numbers of examples in the legend. Counts are
    np.histogram(..., bins=bins, range=(0, 1)); non-finite η are left out and
    counted in the title.
    """
    eta = np.asarray(eta, dtype=np.float64).ravel()
    finite = np.isfinite(eta)
    edges = np.linspace(0.0, 1.0, bins + 1)
    if is_wrong is None:
        groups = [("all labels", eta[finite], "tab:gray")]
    else:
        is_wrong = np.asarray(is_wrong, dtype=bool).ravel()
        if is_wrong.shape != eta.shape:
            raise ValueError(f"is_wrong has shape {is_wrong.shape}, eta {eta.shape}")
        groups = [("right labels", eta[finite & ~is_wrong], _RIGHT_COLOR),
                  ("wrong labels", eta[finite & is_wrong], _WRONG_COLOR)]

    fig = _new_figure(ETA_HISTOGRAM_SIZE, layout="constrained")
    ax = fig.subplots()
    for label, values, color in groups:
        counts, _ = np.histogram(values, bins=edges)
        ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color=color,
               alpha=0.55 if len(groups) > 1 else 0.9, label=f"{label} (n={values.size:,})")
    ax.set_yscale("log")
    ax.set_ylim(bottom=0.7)  # a bar of one example stays visible
    ax.set_xlim(0, 1)
    ax.set_xlabel("confusing probability η")
    ax.set_ylabel("examples (log scale)")
    title = f"η of {eta.size:,} training examples"
    if not finite.all():
        title += f" ({(~finite).sum():,} non-finite left out)"
    ax.set_title(title)
    ax.legend(loc="upper center")
    return fig


def eta_histogram(path, eta, is_wrong=None, bins=ETA_BINS):
    """Draws `eta_histogram_figure(eta, is_wrong, bins)` into the PNG file `path`."""
    _write_png(path, eta_histogram_figure(eta, is_wrong, bins))


def highest_eta_figure(images, indices, observed, estimated, class_names, clean=None, eta=None):
    """Paper Fig. 5: a grid of training images, each captioned with its labels.

    images: uint8 [n, H, W, C] with C = 1 (drawn in grey) or 3 (RGB), or [n, H, W].
    indices, observed, estimated: int [n] — training-set index, observed label,
      estimated label (argmax q). clean: optional int [n], the clean label, -1 where
      unknown. eta: optional float [n]. class_names: sequence of K names, or None
      to print class numbers.
    The grid is ceil(√n) columns wide (4 × 4 for 16). A caption reads e.g.
    "#123 η=0.91 / observed: cat / estimated: dog / clean: dog"; with a known clean
    label it is green when the estimate is right and red when it is not.
    The images are scaled by nearest neighbour (by a whole factor when enlarged)
    into one RGB mosaic drawn 1:1 with figimage, and captions are figure text: no
    Axes, whose ticks and title layout would triple the time of a figure that goes
    into TensorBoard every epoch.
    """
    images = np.asarray(images)
    n = len(images)
    if n == 0:
        raise ValueError("highest_eta_figure needs at least one image")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"images must be [n, H, W, 1 or 3], got shape {images.shape}")
    columns = math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    fontsize = 8.0 * min(1.0, 4.0 / columns)
    lines = 3 + (clean is not None)
    width, height = HIGHEST_ETA_SIZE
    cell_w, cell_h = width // columns, height // rows
    pad = max(2, cell_w // 25)
    caption_h = math.ceil(lines * 1.2 * fontsize * DPI / 72) + pad
    box = (max(1, cell_h - caption_h - 2 * pad), max(1, cell_w - 2 * pad))  # for the image, pixels

    mosaic = np.full((height, width, 3), 255, dtype=np.uint8)
    fig = _new_figure(HIGHEST_ETA_SIZE)
    for i in range(n):
        row, column = divmod(i, columns)
        top, left = row * cell_h, column * cell_w
        image = _resize_nearest(images[i], box)
        y = top + pad + caption_h  # right under its caption
        x = left + (cell_w - image.shape[1]) // 2
        mosaic[y:y + image.shape[0], x:x + image.shape[1]] = image

        caption = [f"#{int(indices[i])}" + ("" if eta is None else f"  η={float(eta[i]):.2f}"),
                   f"observed: {_name(class_names, observed[i])}",
                   f"estimated: {_name(class_names, estimated[i])}"]
        color = "black"
        if clean is not None:
            caption.append(f"clean: {_name(class_names, clean[i])}")
            if clean[i] >= 0:
                color = "darkgreen" if estimated[i] == clean[i] else "firebrick"
        fig.text((left + cell_w / 2) / width, 1.0 - (top + pad) / height, "\n".join(caption),
                 ha="center", va="top", fontsize=fontsize, color=color, linespacing=1.2)
    fig.figimage(mosaic, origin="upper", resize=False, zorder=0)
    return fig


def highest_eta_grid(path, images, indices, observed, estimated, class_names, clean=None, eta=None):
    """Draws `highest_eta_figure(...)` into the PNG file `path`."""
    _write_png(path, highest_eta_figure(images, indices, observed, estimated, class_names,
                                        clean=clean, eta=eta))


def _new_figure(size, layout=None):
    width, height = size
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, layout=layout)
    FigureCanvasAgg(fig)  # attaches itself as fig.canvas
    return fig


def _resize_nearest(image, box):
    """[H, W, 1 or 3] uint8 -> RGB, nearest-neighbour scaled to fit `box` (rows, cols).

    Enlarges by the largest whole factor that fits, so every source pixel becomes an
    equal square; shrinks (an image larger than its cell) by index sampling.
    """
    h, w = image.shape[:2]
    scale = min(box[0] / h, box[1] / w)
    if scale >= 1:
        scale = math.floor(scale)
    out_h, out_w = max(1, int(h * scale)), max(1, int(w * scale))
    rows = np.minimum((np.arange(out_h) / scale).astype(int), h - 1)
    cols = np.minimum((np.arange(out_w) / scale).astype(int), w - 1)
    image = image[rows][:, cols]
    return np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image


def _name(class_names, label):
    label = int(label)
    if label < 0:
        return "unknown"
    if class_names is None or label >= len(class_names):
        return str(label)
    return str(class_names[label])


def _write_png(path, fig):
    """Renders `fig` and renames it into place, so a reader never sees half a PNG."""
    artifacts.write_bytes(path, figure_to_png(fig))
