"""label_issues.html: the label audit as a page to act on, one section per class.

A static, self-contained page (inline CSS, no script, no server) in the run folder:

- a summary table: per observed class, its training examples, how many are flagged
  (estimated class ≠ observed class) and their share;
- per observed class, its `PER_CLASS` most suspect examples in label_audit.csv's order
  (`audit.issue_order`: highest issue score first), each with a thumbnail, the example's
  index, its file (file sources: a link to the original, relative to the run folder), the
  observed and estimated class, the issue score, η, ψ and the `TOP_POSTERIOR` largest
  classes of the probabilities the audit decided from (held-out, or the method's q);
- a legend of those columns.

Thumbnails are PNGs of the un-augmented images the classifier saw, in
`label_issues_files/<index>.png`, referenced by relative path; small images are enlarged
by a whole factor (nearest neighbour) to at least `THUMBNAIL_MIN` pixels. Everything is
written atomically, the page last; thumbnails of an earlier report that the new page
does not show are removed.
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
PER_CLASS = 24
TOP_POSTERIOR = 3
THUMBNAIL_MIN = 64

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


def shown_rows(columns, per_class=PER_CLASS):
    """{observed label: positions (in the audit's row order) of its first `per_class`
    rows}, for every class with examples, in label order."""
    observed = np.asarray(columns["observed_label"])
    return {int(label): np.flatnonzero(observed == label)[:per_class]
            for label in np.unique(observed)}


def class_summary(columns, num_classes):
    """[(label, examples, flagged)] for every class 0..K-1 (observed labels)."""
    observed = np.asarray(columns["observed_label"])
    flagged = np.asarray(columns["is_label_issue"]).astype(bool)
    examples = np.bincount(observed, minlength=num_classes)
    flags = np.bincount(observed[flagged], minlength=num_classes)
    return [(k, int(examples[k]), int(flags[k])) for k in range(num_classes)]


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


def write(run_dir, columns, probs, data, per_class=PER_CLASS, held_out=True):
    """Writes label_issues.html and its thumbnails into `run_dir` from the audit's
    `columns` (audit.audit_columns), the probabilities [N, K] (example order) it decided
    from (`held_out`: out-of-sample ones, else the method's posterior q) and the data
    view `data` (images, class names, the data folder of file sources)."""
    shown = shown_rows(columns, per_class)
    positions = np.concatenate([rows for rows in shown.values()]) if shown else np.zeros(0, int)
    examples = np.asarray(columns["order"])[positions]  # rows of the view, for its images
    files_dir = os.path.join(run_dir, FILES_DIR)
    os.makedirs(files_dir, exist_ok=True)
    names = {}
    for position, image in zip(positions, data.images(examples)):
        name = f"{columns['index'][position]}.png"
        artifacts.write_bytes(os.path.join(files_dir, name), thumbnail_png(image))
        names[int(position)] = name
    page = page_html(columns, probs, data, shown, names, run_dir, held_out)
    artifacts.write_text(os.path.join(run_dir, HTML_NAME), page)
    for stale in set(os.listdir(files_dir)) - set(names.values()):
        if stale.endswith(".png"):
            os.remove(os.path.join(files_dir, stale))


def legend(held_out):
    """The page's explanation of its columns (HTML)."""
    source = ("cross-entropy classifiers that did not see the example's label (the "
              "run's --audit_folds held-out folds)" if held_out else
              "the method's posterior q, which has been trained on these labels and can "
              "miss the labels it has fitted (--audit_folds=0)")
    items = [
        ("issue score", "1 − the probability of the observed class under " + source
         + "; the rows are sorted by it"),
        ("estimated", "the class those probabilities put first"),
        ("flagged (red)", "confident learning's Prune by Noise Rate on those probabilities "
         "(is_label_issue)" if held_out else "the estimated class differs from the observed "
         "one"),
        ("η", "the method's probability that the label is a confused guess rather than "
         "copied from the true class (0 to 1)"),
        ("ψ", "stage 1's probability of the observed class: how typical this label is for "
         "such an image"),
        ("held-out p" if held_out else "posterior q",
         f"the {TOP_POSTERIOR} most probable classes under " + source)]
    return ("<dl class=\"legend\">" + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>"
                                             for k, v in items) + "</dl>")


def page_html(columns, probs, data, shown, thumbnails, run_dir, held_out=True):
    """The page's text (module docstring); `thumbnails`: audit row position -> file name."""
    class_names = list(data.class_names)
    root = getattr(data, "root", None)
    n, flagged = len(columns["index"]), int(np.sum(columns["is_label_issue"]))
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>Label issues: {_e(os.path.basename(os.path.abspath(run_dir)))}</title>",
           f"<style>{_STYLE}</style></head><body>",
           "<h1>Label issues</h1>",
           f"<p>{n} training examples of {_e(data.name)}; {flagged} flagged as label issues. "
           "Each class lists its most suspect "
           "examples, highest issue score first, as in label_audit.csv.</p>",
           legend(held_out),
           "<h2>Per class</h2>",
           '<table class="summary"><thead><tr><th>class</th><th>examples</th>'
           "<th>flagged</th><th>flagged share</th></tr></thead><tbody>"]
    for label, count, flags in class_summary(columns, len(class_names)):
        share = f"{100 * flags / count:.1f}%" if count else "–"
        link = (f'<a href="#class-{label}">{_e(class_names[label])}</a>' if count
                else _e(class_names[label]))
        out.append(f'<tr data-class="{label}"><td>{link}</td><td class="number">{count}</td>'
                   f'<td class="number">{flags}</td><td class="number">{share}</td></tr>')
    out.append("</tbody></table>")
    has_paths = "path" in columns
    for label, positions in shown.items():
        out.append(f'<h2 id="class-{label}">{_e(class_names[label])}</h2>')
        out.append('<table class="issues"><thead><tr><th>image</th><th>index</th>'
                   + ("<th>file</th>" if has_paths else "")
                   + "<th>observed</th><th>estimated</th><th>issue score</th><th>η</th>"
                   f"<th>ψ</th><th>{'held-out p' if held_out else 'posterior q'}</th>"
                   "</tr></thead><tbody>")
        for position in positions:
            out.append(_row(columns, probs, position, thumbnails.get(int(position)), class_names,
                            root, run_dir, has_paths))
        out.append("</tbody></table>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _row(columns, q, position, thumbnail, class_names, root, run_dir, has_paths):
    index = int(columns["index"][position])
    example = int(columns["order"][position])
    top = np.argsort(-q[example], kind="stable")[:TOP_POSTERIOR]
    posterior = " · ".join(f"{_e(class_names[k])} {q[example, k]:.2f}" for k in top)
    flagged = " flagged" if columns["is_label_issue"][position] else ""
    cells = [f'<img src="{FILES_DIR}/{thumbnail}" alt="example {index}">' if thumbnail else "",
             f'<span class="index">{index}</span>']
    if has_paths:
        path = str(columns["path"][position])
        target = os.path.relpath(os.path.join(root, path), run_dir) if root else path
        # A URL, not a file name: "#", "?", "%" or a space in a name would cut the link.
        href = urllib.parse.quote(target.replace(os.sep, "/"))
        cells.append(f'<a class="path" href="{_e(href)}">{_e(path)}</a>')
    cells += [f'<span class="observed">{_e(columns["observed_class"][position])}</span>',
              _e(columns["estimated_class"][position]),
              f'{columns["issue_score"][position]:.4f}',
              f'{columns["eta"][position]:.4f}', f'{columns["psi"][position]:.4f}', posterior]
    classes = ["thumb", "", "file"] if has_paths else ["thumb", ""]
    classes += ["", "estimated", "number score", "number eta", "number psi", "posterior"]
    tds = "".join(f'<td class="{c}">{v}</td>' if c else f"<td>{v}</td>"
                  for c, v in zip(classes, cells))
    return f'<tr class="example{flagged}" data-index="{index}">{tds}</tr>'


def _e(text):
    return html.escape(str(text), quote=True)
