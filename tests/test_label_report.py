"""label_issues.html (idn_tf/label_report.py) parsed back and checked against
label_audit.csv, numpy counts and the images themselves, for arrays and for files."""

import csv
import html.parser
import os
import urllib.parse

import numpy as np
from PIL import Image

from idn_tf import artifacts, audit, label_report
from idn_tf.data import folder, sources, views

import image_folders


VOID = {"meta", "img", "br", "link"}  # HTML elements without an end tag


class Page(html.parser.HTMLParser):
    """The page's summary rows, and per class section its example rows (cells as text,
    the img src and the file link)."""

    def __init__(self):
        super().__init__()
        self.summary, self.sections, self.section = {}, {}, None
        self.row, self.cell, self.stack = None, None, []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag not in VOID:
            self.stack.append(tag)
        if tag == "h2" and attrs.get("id", "").startswith("class-"):
            self.section = int(attrs["id"][6:])
            self.sections[self.section] = []
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
        if tag == "td" and self.row is not None:
            self.row["cells"].append(self.cell)
            self.cell = None
        elif tag == "tr" and self.row is not None:
            if "data-class" in self.row["attrs"]:
                self.summary[int(self.row["attrs"]["data-class"])] = self.row["cells"]
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


def _check_against_csv(run_dir, page, num_classes, per_class):
    with open(os.path.join(run_dir, "label_audit.csv")) as file:
        rows = list(csv.DictReader(file))
    observed = np.array([int(r["observed_label"]) for r in rows])
    flagged = np.array([int(r["is_label_issue"]) for r in rows])
    for k in range(num_classes):  # the summary, counted here from the CSV
        assert int(page.summary[k][1]) == np.sum(observed == k)
        assert int(page.summary[k][2]) == np.sum(flagged[observed == k])
    assert set(page.sections) == set(np.unique(observed))
    for k, shown in page.sections.items():
        expected = [r for r in rows if int(r["observed_label"]) == k][:per_class]
        assert [int(r["attrs"]["data-index"]) for r in shown] == [int(r["index"]) for r in expected]
        for row, line in zip(shown, expected):
            cells = row["cells"]
            offset = 1 if "path" in line else 0
            assert cells[2 + offset] == line["observed_class"]
            assert cells[3 + offset] == line["estimated_class"]
            assert float(cells[4 + offset]) == round(float(line["issue_score"]), 4)
            assert float(cells[5 + offset]) == round(float(line["eta"]), 4)
            assert float(cells[6 + offset]) == round(float(line["psi"]), 4)
            assert os.path.isfile(os.path.join(run_dir, row["img"]))
            assert not os.path.isabs(row["img"])
    return rows


def test_array_report_rows_are_the_csv_top_rows_of_each_class(tmp_path):
    n, k = 60, 4
    labels, q, eta, psi = _random_audit(n, k)
    images = np.random.default_rng(1).integers(0, 256, (n, 8, 8, 1), dtype=np.uint8)
    split = sources.Split(images, labels.astype(np.int64), np.full(n, -1, np.int64))
    names = ("ant", "bee <b>", "cat & co", "dog")
    data = views.ArrayData(sources.Dataset("npz", split, split, k, names))
    audit.write_reports(str(tmp_path), q, eta, psi, labels, data)
    page = parse(tmp_path / "label_issues.html")
    rows = _check_against_csv(str(tmp_path), page, k, per_class=label_report.PER_CLASS)
    assert [page.summary[c][0] for c in range(k)] == list(names)  # escaped and read back
    # A thumbnail is its image enlarged by a whole factor: every factor-th pixel is it.
    first = page.sections[int(rows[0]["observed_label"])][0]
    thumb = np.asarray(Image.open(tmp_path / first["img"]))
    factor = thumb.shape[0] // 8
    assert factor * 8 >= label_report.THUMBNAIL_MIN
    np.testing.assert_array_equal(thumb[::factor, ::factor], images[int(rows[0]["index"]), :, :, 0])
    # The posterior cell: the three largest classes of q, largest first.
    example = int(rows[0]["index"])
    top = np.argsort(-q[example])[:3]
    assert first["cells"][-1] == " · ".join(f"{names[c]} {q[example, c]:.2f}" for c in top)


def test_only_the_top_rows_per_class_are_shown_and_stale_thumbnails_go(tmp_path):
    n, k = 50, 2
    labels, q, eta, psi = _random_audit(n, k, seed=3)
    images = np.zeros((n, 4, 4, 3), np.uint8)
    split = sources.Split(images, labels.astype(np.int64), labels.astype(np.int64))
    data = views.ArrayData(sources.Dataset("npz", split, split, k, ("a", "b")))
    columns = audit.write(str(tmp_path / "label_audit.csv"), q, eta, psi, labels, labels,
                          class_names=data.class_names)
    label_report.write(str(tmp_path), columns, q, data, per_class=5)
    page = parse(tmp_path / "label_issues.html")
    _check_against_csv(str(tmp_path), page, k, per_class=5)
    assert len(os.listdir(tmp_path / label_report.FILES_DIR)) == 10
    label_report.write(str(tmp_path), columns, q, data, per_class=2)
    shown = {r["img"] for rows in parse(tmp_path / "label_issues.html").sections.values()
             for r in rows}
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
    n, k = len(loaded.noisy), loaded.num_classes
    _, q, eta, psi = _random_audit(n, k, seed=5)
    labels = loaded.noisy.labels
    run_dir = tmp_path / "runs" / "one"
    run_dir.mkdir(parents=True)
    audit.write_reports(str(run_dir), q, eta, psi, labels, data)
    with open(run_dir / "label_audit.csv") as file:
        rows = list(csv.DictReader(file))
    expected = {os.path.relpath(p, tmp_path / "photos") for p in loaded.noisy.paths}
    assert {r["path"] for r in rows} == expected and expected <= set(written)
    for r in rows:  # the path is the file of that index, the class its folder's
        i = int(r["index"])
        assert r["path"] == os.path.relpath(loaded.noisy.paths[i], tmp_path / "photos")
        assert r["observed_class"] == r["path"].split("/")[0]
    page = parse(run_dir / "label_issues.html")
    _check_against_csv(str(run_dir), page, k, per_class=label_report.PER_CLASS)
    assert odd in {r["path"] for r in rows}
    links = {}
    for shown in page.sections.values():
        for row in shown:
            target = linked_file(str(run_dir), row["href"])
            assert os.path.isfile(target)
            assert row["cells"][2] == os.path.relpath(target, tmp_path / "photos")
            links[row["cells"][2]] = target
    assert odd in links  # shown: every class has fewer examples than PER_CLASS


def test_the_run_folder_knows_the_report_files():
    # --overwrite deletes them with the rest of a run's results.
    assert label_report.HTML_NAME in artifacts.RUN_RESULTS
    assert label_report.FILES_DIR in artifacts.RUN_FOLDERS
