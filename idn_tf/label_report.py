"""label_issues.html: the label audit as a page to act on.

A static, self-contained page (inline CSS, no script, no server) in the run folder:

- how many images of each split the audit checked, and a legend of the columns;
- the shortlist: the flagged images (is_label_issue), most suspect first as in
  label_audit.csv (`audit.issue_order`: highest issue score first), at most
  `FLAGGED_MAX` of them;
- a summary table: per observed class, its audited images, how many are flagged and
  their share;
- per observed class, its flagged images of the shortlist and its `UNFLAGGED` most
  suspect unflagged ones, in the same order.

Each image's row: a thumbnail, its split and index, its file (file sources: a link to
the original, relative to the run folder), the observed and estimated class, the issue
score, η, ψ (training rows; "–" for the others) and the classes of at least
`MIN_PROBABILITY` among the `TOP_POSTERIOR` largest of the probabilities the audit decided
from (held-out, or the method's q).

Thumbnails are PNGs of the un-augmented images the classifier saw, in
`label_issues_files/<split>-<index>.png`, referenced by relative path; small images are
enlarged by a whole factor (nearest neighbour) to at least `THUMBNAIL_MIN` pixels.
Everything is written atomically, the page last; thumbnails of an earlier report that
the new page does not show are removed.
"""

import html
import io
import os
import urllib.parse

import numpy as np
from PIL import Image

from idn_tf import artifacts

HTML_NAME = "label_issues.html"
FILES_DIR = "label_issues_files"
FLAGGED_MAX = 500  # the shortlist's length at most (a page, not the whole CSV)
UNFLAGGED = 5  # per class, its most suspect unflagged images shown after its flagged ones
TOP_POSTERIOR = 3
MIN_PROBABILITY = 0.01  # smaller probabilities are left out of the probability cell
THUMBNAIL_MIN = 64
# The split column's values (label_audit.csv), and how the page and the console count them.
SPLITS = {"train": "training", "validation": "validation", "test": "test"}

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin-bottom: 1.5em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: middle; }
th { background: #f2f2f2; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
tr.flagged td.estimated { color: #b00; font-weight: bold; }
img { image-rendering: pixelated; max-width: 128px; max-height: 128px; }
dl.legend { display: grid; grid-template-columns: max-content auto; gap: 2px 12px; }
dl.legend dt { font-weight: bold; }
dl.legend dd { margin: 0; }
"""


def checked(split):
    """How many rows of each split the audit checked: "1292 training, 145 validation"."""
    split = np.asarray(split)
    return ", ".join(f"{int(np.sum(split == key))} {word}" for key, word in SPLITS.items()
                     if key == "train" or np.any(split == key))


def shortlist(columns, limit=FLAGGED_MAX):
    """Positions (in the audit's row order) of the first `limit` flagged rows."""
    return np.flatnonzero(np.asarray(columns["is_label_issue"]).astype(bool))[:limit]


def class_rows(columns, listed, unflagged=UNFLAGGED):
    """{observed label: positions, in the audit's row order, of its rows among `listed`
    (the shortlist) and its first `unflagged` unflagged rows}, for every class with rows,
    in label order."""
    observed = np.asarray(columns["observed_label"])
    flagged = np.asarray(columns["is_label_issue"]).astype(bool)
    in_list = np.isin(np.arange(len(observed)), listed)
    shown = {}
    for label in np.unique(observed):
        members = observed == label
        calm = np.flatnonzero(members & ~flagged)[:unflagged]
        shown[int(label)] = np.union1d(np.flatnonzero(members & in_list), calm)
    return shown


def class_summary(columns, num_classes):
    """[(label, examples, flagged)] for every class 0..K-1 (observed labels)."""
    observed = np.asarray(columns["observed_label"])
    flagged = np.asarray(columns["is_label_issue"]).astype(bool)
    examples = np.bincount(observed, minlength=num_classes)
    flags = np.bincount(observed[flagged], minlength=num_classes)
    return [(k, int(examples[k]), int(flags[k])) for k in range(num_classes)]


def shown_probabilities(probs):
    """The classes the probability cell names, largest first: of the `TOP_POSTERIOR`
    largest of `probs` [K], those of at least `MIN_PROBABILITY` (the largest always)."""
    top = np.argsort(-probs, kind="stable")[:TOP_POSTERIOR]
    return top[(probs[top] >= MIN_PROBABILITY) | (np.arange(len(top)) == 0)]


def row_images(data, rows, n):
    """uint8 images of audit rows `rows` (positions in `audit.audited_rows`' order: the
    data view's N training rows, then the rows of its `audited_splits()`)."""
    rows, others = np.asarray(rows, np.int64), data.audited_splits()
    sources = [data] + [split.examples for split in others]
    starts = np.cumsum([0, n] + [len(split) for split in others])
    part = np.searchsorted(starts, rows, side="right") - 1
    images = [None] * len(rows)
    for k in np.unique(part):
        where = np.flatnonzero(part == k)
        for i, image in zip(where, sources[k].images(rows[where] - starts[k])):
            images[i] = image
    return images


def thumbnail_png(image):
    """PNG bytes of a uint8 [H, W, 1 or 3] image, enlarged by a whole factor (nearest
    neighbour) until its longer side is at least THUMBNAIL_MIN."""
    image = np.asarray(image)
    factor = max(1, -(-THUMBNAIL_MIN // max(image.shape[:2])))
    picture = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    if factor > 1:
        picture = picture.resize((picture.width * factor, picture.height * factor),
                                 Image.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")
    return buffer.getvalue()


def write(run_dir, columns, probs, data, held_out=True, unflagged=UNFLAGGED,
          flagged_max=FLAGGED_MAX):
    """Writes label_issues.html and its thumbnails into `run_dir` from the audit's
    `columns` (audit.audit_columns), the probabilities [R, K] (the audited rows' order) it
    decided from (`held_out`: out-of-sample ones, else the method's posterior q) and the
    data view `data` (images, class names, the data folder of file sources)."""
    listed = shortlist(columns, flagged_max)
    sections = class_rows(columns, listed, unflagged)
    positions = np.union1d(listed, np.concatenate([np.zeros(0, int), *sections.values()]))
    files_dir = os.path.join(run_dir, FILES_DIR)
    os.makedirs(files_dir, exist_ok=True)
    names = {}
    n = int(np.sum(np.asarray(columns["split"]) == "train"))
    examples = np.asarray(columns["order"])[positions]  # rows of the audit, for their images
    for position, image in zip(positions, row_images(data, examples, n)):
        name = f"{columns['split'][position]}-{columns['index'][position]}.png"
        artifacts.write_bytes(os.path.join(files_dir, name), thumbnail_png(image))
        names[int(position)] = name
    page = page_html(columns, probs, data, listed, sections, names, run_dir, held_out)
    artifacts.write_text(os.path.join(run_dir, HTML_NAME), page)
    for stale in set(os.listdir(files_dir)) - set(names.values()):
        if stale.endswith(".png"):
            os.remove(os.path.join(files_dir, stale))


def legend(held_out):
    """The page's explanation of its columns (HTML)."""
    source = ("cross-entropy classifiers that did not see the image's label (the "
              "run's --audit_folds held-out folds)" if held_out else
              "the method's posterior q, which has been trained on these labels and can "
              "miss the labels it has fitted (--audit_folds=0; for validation and test "
              "images, which have no q, the final classifier's probabilities)")
    items = [
        ("split", "train: the method trained on this label; validation: held out of the "
         "training images (--val_fraction) to choose the exported epoch; test: a class "
         "folder's test images, whose labels are yours too"),
        ("issue score", "1 − the probability of the observed class under " + source
         + "; the rows are sorted by it"),
        ("estimated", "the class those probabilities put first"),
        ("flagged (red)", "confident learning's Prune by Noise Rate on those probabilities "
         "(is_label_issue)" if held_out else "the estimated class differs from the observed "
         "one"),
        ("η", "the method's probability that the label is a confused guess rather than "
         "copied from the true class (0 to 1); training images only"),
        ("ψ", "stage 1's probability of the observed class: how typical this label is for "
         "such an image; training images only"),
        ("held-out p" if held_out else "posterior q",
         f"the classes of at least {MIN_PROBABILITY:g} among the {TOP_POSTERIOR} most "
         "probable under " + source)]
    return ("<dl class=\"legend\">" + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>"
                                             for k, v in items) + "</dl>")


def page_html(columns, probs, data, listed, sections, thumbnails, run_dir, held_out=True):
    """The page's text (module docstring): `listed` the shortlist's and `sections` each
    class's positions (`shortlist`, `class_rows`); `thumbnails`: position -> file name."""
    class_names = list(data.class_names)
    flagged = int(np.sum(columns["is_label_issue"]))
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>Label issues: {_e(os.path.basename(os.path.abspath(run_dir)))}</title>",
           f"<style>{_STYLE}</style></head><body>",
           "<h1>Label issues</h1>",
           f"<p>{checked(columns['split'])} images of {_e(data.name)} checked; "
           f"{flagged} flagged as label issues. First the flagged images, most suspect "
           "first, as in label_audit.csv; then each class's flagged images and its "
           f"{UNFLAGGED} most suspect unflagged ones.</p>",
           legend(held_out),
           f'<h2 id="flagged">Flagged: {flagged} images</h2>']
    if len(listed) < flagged:
        out.append(f"<p>The {len(listed)} most suspect are shown; label_audit.csv lists "
                   "all.</p>")
    out += _table(columns, probs, listed, thumbnails, class_names, data, run_dir, held_out)
    out += ["<h2>Per class</h2>",
            '<table class="summary"><thead><tr><th>class</th><th>images</th>'
            "<th>flagged</th><th>flagged share</th></tr></thead><tbody>"]
    for label, count, flags in class_summary(columns, len(class_names)):
        share = f"{100 * flags / count:.1f}%" if count else "–"
        link = (f'<a href="#class-{label}">{_e(class_names[label])}</a>' if count
                else _e(class_names[label]))
        out.append(f'<tr data-class="{label}"><td>{link}</td><td class="number">{count}</td>'
                   f'<td class="number">{flags}</td><td class="number">{share}</td></tr>')
    out.append("</tbody></table>")
    for label, positions in sections.items():
        out.append(f'<h2 id="class-{label}">{_e(class_names[label])}</h2>')
        out += _table(columns, probs, positions, thumbnails, class_names, data, run_dir,
                      held_out)
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _table(columns, probs, positions, thumbnails, class_names, data, run_dir, held_out):
    """The lines of one table of image rows (the audit's rows at `positions`)."""
    has_paths = "path" in columns
    head = ('<table class="issues"><thead><tr><th>image</th><th>split</th><th>index</th>'
            + ("<th>file</th>" if has_paths else "")
            + "<th>observed</th><th>estimated</th><th>issue score</th><th>η</th>"
            f"<th>ψ</th><th>{'held-out p' if held_out else 'posterior q'}</th>"
            "</tr></thead><tbody>")
    root = getattr(data, "root", None)
    return [head, *(_row(columns, probs, position, thumbnails.get(int(position)), class_names,
                         root, run_dir, has_paths) for position in positions),
            "</tbody></table>"]


def _row(columns, probs, position, thumbnail, class_names, root, run_dir, has_paths):
    index, split = int(columns["index"][position]), str(columns["split"][position])
    p = probs[int(columns["order"][position])]
    posterior = " · ".join(f"{_e(class_names[k])} {p[k]:.2f}" for k in shown_probabilities(p))
    flagged = " flagged" if columns["is_label_issue"][position] else ""
    cells = [f'<img src="{FILES_DIR}/{thumbnail}" alt="{split} image {index}">'
             if thumbnail else "", split, f'<span class="index">{index}</span>']
    if has_paths:
        path = str(columns["path"][position])
        target = os.path.relpath(os.path.join(root, path), run_dir) if root else path
        # A URL, not a file name: "#", "?", "%" or a space in a name would cut the link.
        href = urllib.parse.quote(target.replace(os.sep, "/"))
        cells.append(f'<a class="path" href="{_e(href)}">{_e(path)}</a>')
    cells += [f'<span class="observed">{_e(columns["observed_class"][position])}</span>',
              _e(columns["estimated_class"][position]),
              f'{columns["issue_score"][position]:.4f}',
              *(_number(columns[name][position]) for name in ("eta", "psi")), posterior]
    classes = ["thumb", "split", "", "file"] if has_paths else ["thumb", "split", ""]
    classes += ["", "estimated", "number score", "number eta", "number psi", "posterior"]
    tds = "".join(f'<td class="{c}">{v}</td>' if c else f"<td>{v}</td>"
                  for c, v in zip(classes, cells))
    return (f'<tr class="example{flagged}" data-split="{split}" data-index="{index}">'
            f"{tds}</tr>")


def _number(value):
    """A 4-decimal cell, "–" for NaN (not a training row: no η, ψ)."""
    return "–" if value != value else f"{value:.4f}"


def _e(text):
    return html.escape(str(text), quote=True)
