"""label_issues.html (idn_tf/label_report.py) parsed back and checked against
label_audit.csv, numpy counts and the images themselves, for arrays and for files."""

import csv
import html.parser
import os
import urllib.parse

import numpy as np
from PIL import Image

from idn_tf import artifacts, audit, label_report
from idn_tf.data import folder, sources, streaming, views

import image_folders


VOID = {"meta", "img", "br", "link"}  # HTML elements without an end tag


class Page(html.parser.HTMLParser):
    """The page's summary rows, its shortlist (`flagged`), per class section its image
    rows (cells as text, the img src and the file link), and the headings' text by id."""

    def __init__(self):
        super().__init__()
        self.summary, self.sections, self.flagged, self.headings = {}, {}, [], {}
        self.section, self.heading = None, None
        self.row, self.cell, self.stack = None, None, []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag not in VOID:
            self.stack.append(tag)
        if tag == "h2" and "id" in attrs:
            self.heading = attrs["id"]
            self.headings[self.heading] = ""
            if attrs["id"].startswith("class-"):
                self.section = int(attrs["id"][6:])
                self.sections[self.section] = []
            else:
                self.section = attrs["id"]
        elif tag == "tr" and ("data-class" in attrs or "data-index" in attrs):
            self.row = {"attrs": attrs, "cells": [], "img": None, "href": None}
        elif tag == "td" and self.row is not None:
            self.cell = ""
        elif tag == "img" and self.row is not None:
            self.row["img"] = attrs["src"]
        elif tag == "a" and self.row is not None and "path" in attrs.get("class", ""):
            self.row["href"] = attrs["href"]

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, (tag, self.stack[-3:])  # well nested
        self.stack.pop()
        if tag == "h2":
            self.heading = None
        elif tag == "td" and self.row is not None:
            self.row["cells"].append(self.cell)
            self.cell = None
        elif tag == "tr" and self.row is not None:
            if "data-class" in self.row["attrs"]:
                self.summary[int(self.row["attrs"]["data-class"])] = self.row["cells"]
            elif self.section == "flagged":
                self.flagged.append(self.row)
            else:
                self.sections[self.section].append(self.row)
            self.row = None

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data
        if self.heading is not None:
            self.headings[self.heading] += data


def parse(path):
    page = Page()
    with open(path, encoding="utf-8") as file:
        page.feed(file.read())
    page.close()
    assert page.stack == []
    return page


def linked_file(run_dir, href):
    """The file a relative link of the page points at (a URL: percent-encoded)."""
    assert not os.path.isabs(href) and "#" not in href and "?" not in href, href
    return os.path.join(run_dir, urllib.parse.unquote(href))


def _random_audit(n, k, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    q = rng.dirichlet(np.ones(k) * 0.5, n)
    eta = rng.random(n).astype(np.float32)
    psi = rng.random(n).astype(np.float32)
    return labels, q, eta, psi


def _key(row):
    """An image row of the page or the CSV as (split, index)."""
    if "attrs" in row:
        return row["attrs"]["data-split"], int(row["attrs"]["data-index"])
    return row["split"], int(row["index"])


def _check_against_csv(run_dir, page, num_classes, unflagged=label_report.UNFLAGGED,
                       flagged_max=label_report.FLAGGED_MAX):
    """The page against label_audit.csv, counted here: the summary, the shortlist (the
    flagged rows in the CSV's order), each class's rows (its listed flagged rows and its
    first `unflagged` unflagged ones, in the CSV's order) and their cells."""
    with open(os.path.join(run_dir, "label_audit.csv")) as file:
        rows = list(csv.DictReader(file))
    observed = np.array([int(r["observed_label"]) for r in rows])
    flagged = np.array([int(r["is_label_issue"]) for r in rows])
    for k in range(num_classes):  # the summary, counted here from the CSV
        assert int(page.summary[k][1]) == np.sum(observed == k)
        assert int(page.summary[k][2]) == np.sum(flagged[observed == k])
    listed = [r for r in rows if r["is_label_issue"] == "1"][:flagged_max]
    assert [_key(r) for r in page.flagged] == [_key(r) for r in listed]
    assert page.headings["flagged"] == f"Flagged: {flagged.sum()} images"
    assert set(page.sections) == set(np.unique(observed))
    for k, shown in page.sections.items():
        calm = [r for r in rows if int(r["observed_label"]) == k and r["is_label_issue"] == "0"]
        expected = [r for r in rows if int(r["observed_label"]) == k
                    and (r in listed or r in calm[:unflagged])]
        assert [_key(r) for r in shown] == [_key(r) for r in expected]
    by_key = {_key(r): r for r in rows}
    for row in page.flagged + [r for shown in page.sections.values() for r in shown]:
        line, cells = by_key[_key(row)], row["cells"]
        offset = 1 if "path" in line else 0
        assert cells[1] == line["split"]
        assert cells[3 + offset] == line["observed_class"]
        assert cells[4 + offset] == line["estimated_class"]
        assert float(cells[5 + offset]) == round(float(line["issue_score"]), 4)
        for cell, name in zip(cells[6 + offset:8 + offset], ("eta", "psi")):
            assert cell == ("–" if line[name] == "" else f"{float(line[name]):.4f}")
        assert ("flagged" in row["attrs"]["class"]) == (line["is_label_issue"] == "1")
        assert os.path.isfile(os.path.join(run_dir, row["img"]))
        assert not os.path.isabs(row["img"])
    return rows


def _array_data(n, k, seed=1, names=None, shape=(8, 8, 1)):
    images = np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)
    labels = np.random.default_rng(seed + 1).integers(0, k, n)
    split = sources.Split(images, labels.astype(np.int64), np.full(n, -1, np.int64))
    names = names or tuple("abcdefghij"[:k])
    return views.ArrayData(sources.Dataset("npz", split, split, k, names)), labels


def test_array_report_lists_the_flagged_then_each_class(tmp_path):
    n, k = 60, 4
    data, _ = _array_data(n, k, names=("ant", "bee <b>", "cat & co", "dog"))
    labels, q, eta, psi = _random_audit(n, k)
    audit.write_reports(str(tmp_path), q, eta, psi, audit.audited_rows(labels, data, n), data)
    page = parse(tmp_path / "label_issues.html")
    rows = _check_against_csv(str(tmp_path), page, k)
    names = data.class_names
    assert len(page.flagged) > 0 and all(r["split"] == "train" for r in rows)
    assert [page.summary[c][0] for c in range(k)] == list(names)  # escaped and read back
    # A thumbnail is its image enlarged by a whole factor: every factor-th pixel is it.
    first = page.flagged[0]
    thumb = np.asarray(Image.open(tmp_path / first["img"]))
    factor = thumb.shape[0] // 8
    assert factor * 8 >= label_report.THUMBNAIL_MIN
    np.testing.assert_array_equal(thumb[::factor, ::factor],
                                  data.train.images[int(rows[0]["index"]), :, :, 0])
    # The probability cell: of the three largest classes of q, those of at least 0.01.
    example = int(rows[0]["index"])
    top = [c for c in np.argsort(-q[example])[:3] if q[example, c] >= 0.01]
    assert first["cells"][-1] == " · ".join(f"{names[c]} {q[example, c]:.2f}" for c in top)


def test_the_probability_cell_leaves_out_classes_under_one_percent():
    names = ("zero", "one", "two", "three", "four")
    cases = [  # probabilities -> the cell, written out by hand
        ([0.985, 0.009, 0.006, 0.0, 0.0], "zero 0.98"),  # 0.985 prints as 0.98 (binary)
        ([0.02, 0.9, 0.01, 0.07, 0.0], "one 0.90 · three 0.07 · zero 0.02"),
        ([0.2, 0.2, 0.2, 0.2, 0.2], "zero 0.20 · one 0.20 · two 0.20"),  # ties: class order
        ([0.0, 0.0, 0.0099, 0.0, 0.9901], "four 0.99")]
    for probs, cell in cases:
        shown = label_report.shown_probabilities(np.array(probs))
        assert " · ".join(f"{names[c]} {probs[c]:.2f}" for c in shown) == cell
    # 200 classes of equal mass (0.005 each): the largest is still named.
    assert list(label_report.shown_probabilities(np.full(200, 0.005))) == [0]


def test_validation_rows_are_audited_and_shown_with_their_own_images(tmp_path):
    n, k = 80, 3
    full, labels = _array_data(n, k, seed=4, shape=(6, 6, 3))
    held = np.array([3, 10, 11, 40, 41, 42, 77])
    data, train_labels = full.hold_out(held, labels)
    m = n - len(held)
    rng = np.random.default_rng(7)
    held_out = rng.dirichlet(np.ones(k) * 0.3, n)  # [N + V, K]: training rows, then held
    _, q, eta, psi = _random_audit(m, k, seed=8)
    audited = audit.audited_rows(train_labels, data, n)
    audit.write_reports(str(tmp_path), q, eta, psi, audited, data, held_out)
    page = parse(tmp_path / "label_issues.html")
    rows = _check_against_csv(str(tmp_path), page, k)
    trained = np.setdiff1d(np.arange(n), held)
    assert sorted((r["split"], int(r["index"])) for r in rows) == sorted(
        [("train", int(i)) for i in trained] + [("validation", int(i)) for i in held])
    for r in rows:
        i = int(r["index"])
        position = (list(trained).index(i) if r["split"] == "train"
                    else m + list(held).index(i))
        assert int(r["observed_label"]) == labels[i]
        np.testing.assert_allclose(float(r["issue_score"]), 1 - held_out[position, labels[i]],
                                   rtol=1e-6)
        assert (r["eta"] == "") == (r["split"] == "validation")
    shown = [r for r in page.flagged + sum(page.sections.values(), [])
             if r["attrs"]["data-split"] == "validation"]
    assert shown  # each class shows its most suspect, validation rows among them
    for row in shown:
        thumb = np.asarray(Image.open(tmp_path / row["img"]))
        factor = thumb.shape[0] // 6
        index = int(row["attrs"]["data-index"])
        assert row["img"] == f"{label_report.FILES_DIR}/validation-{index}.png"
        np.testing.assert_array_equal(thumb[::factor, ::factor], full.train.images[index])


def test_the_shortlist_stops_at_its_limit_and_stale_thumbnails_go(tmp_path):
    n, k = 50, 2
    data, _ = _array_data(n, k, seed=3, shape=(4, 4, 3))
    labels, q, eta, psi = _random_audit(n, k, seed=3)
    columns = audit.write(str(tmp_path / "label_audit.csv"), q, eta, psi, labels, labels,
                          class_names=data.class_names)
    flagged = int(columns["is_label_issue"].sum())
    assert flagged > 3
    label_report.write(str(tmp_path), columns, q, data, unflagged=5)
    page = parse(tmp_path / "label_issues.html")
    _check_against_csv(str(tmp_path), page, k, unflagged=5)
    assert len(os.listdir(tmp_path / label_report.FILES_DIR)) == flagged + 10
    label_report.write(str(tmp_path), columns, q, data, unflagged=1, flagged_max=2)
    page = parse(tmp_path / "label_issues.html")
    _check_against_csv(str(tmp_path), page, k, unflagged=1, flagged_max=2)
    assert len(page.flagged) == 2 and page.headings["flagged"] == f"Flagged: {flagged} images"
    shown = {r["img"] for r in page.flagged + sum(page.sections.values(), [])}
    assert {f"{label_report.FILES_DIR}/{f}" for f in
            os.listdir(tmp_path / label_report.FILES_DIR)} == shown and len(shown) == 4


def test_file_report_carries_relative_paths_and_links_to_the_files(tmp_path):
    written = image_folders.make_image_folder(str(tmp_path / "photos"), per_class=5)
    # A name a URL must encode: the link must still reach the file.
    odd = "cat/odd name #1 %41?.png"
    os.rename(tmp_path / "photos" / "cat" / "img000.png", tmp_path / "photos" / odd)
    written[odd] = written.pop("cat/img000.png")
    loaded = folder.load_folder(str(tmp_path / "photos"), verbose=False)
    data = views.FileData(loaded, image_size=16, resize=20, root=str(tmp_path / "photos"))
    n, t, k = len(loaded.noisy), len(loaded.clean_test), loaded.num_classes
    _, q, eta, psi = _random_audit(n + t, k, seed=5)  # --audit_folds=0: q, then p of the test
    labels = loaded.noisy.labels
    run_dir = tmp_path / "runs" / "one"
    run_dir.mkdir(parents=True)
    audited = audit.audited_rows(labels, data, n + t)
    audit.write_reports(str(run_dir), q, eta[:n], psi[:n], audited, data)
    with open(run_dir / "label_audit.csv") as file:
        rows = list(csv.DictReader(file))
    # Every image of the folder has a row: the training images and the test images.
    split_of = {"train": loaded.noisy, "test": loaded.clean_test}
    assert sorted((r["split"], r["path"]) for r in rows) == sorted(
        (name, os.path.relpath(p, tmp_path / "photos"))
        for name, split in split_of.items() for p in split.paths)
    assert {r["path"] for r in rows} == set(written)
    for r in rows:  # the path is the file of that index, the class its folder's
        i = int(r["index"])
        assert r["path"] == os.path.relpath(split_of[r["split"]].paths[i], tmp_path / "photos")
        assert r["observed_class"] == r["path"].split("/")[0]
        assert r["clean_label"] == ""  # the folder's own labels: nobody checked them
    page = parse(run_dir / "label_issues.html")
    _check_against_csv(str(run_dir), page, k)
    links = {}
    for row in page.flagged + sum(page.sections.values(), []):
        target = linked_file(str(run_dir), row["href"])
        assert os.path.isfile(target)
        assert row["cells"][3] == os.path.relpath(target, tmp_path / "photos")
        links[row["cells"][3]] = target
    assert odd in links  # shown: a class of five images shows them all (UNFLAGGED = 5)
    assert any(r["attrs"]["data-split"] == "test" for r in sum(page.sections.values(), []))
    # A test row's thumbnail is its file's evaluation crop, as the classifier saw it.
    test_row = next(r for r in sum(page.sections.values(), []) if r["attrs"]["data-split"] == "test")
    index = int(test_row["attrs"]["data-index"])
    crop = next(iter(streaming.eval_dataset(loaded.clean_test.paths[index:index + 1],
                                            loaded.clean_test.labels[index:index + 1], 1,
                                            image_size=16, resize=20)))["image"].numpy()[0]
    thumb = np.asarray(Image.open(run_dir / test_row["img"]))
    np.testing.assert_array_equal(thumb[::4, ::4], crop)


def test_the_run_folder_knows_the_report_files():
    # --overwrite deletes them with the rest of a run's results.
    assert label_report.HTML_NAME in artifacts.RUN_RESULTS
    assert label_report.FILES_DIR in artifacts.RUN_FOLDERS
