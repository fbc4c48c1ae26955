"""The HTML report: ``ocsdf.report.Report``, ``ocsdf report``, and a render in headless Chromium."""

from __future__ import annotations

import base64
import copy
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from ocsdf import OCSDF
from ocsdf.certify import lipschitz_in
from ocsdf.cli import main
from ocsdf.errors import InputError
from ocsdf.report import Report

SMALL = {"width": 32, "depth": 2, "n_steps": 200, "random_state": 0}
NAMES = ["age", "<b>bold</b>", "a&b"]  # feature names that must be escaped
SCALES = np.array([1.0, 10.0, 0.1])
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium"
                                        if Path("/usr/bin/chromium").exists() else None)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _rows(rng: np.random.Generator, n: int, spread: float = 1.0) -> np.ndarray:
    return rng.normal(size=(n, 3)) * SCALES * spread + [30.0, 50.0, 1.0]


@pytest.fixture(scope="module")
def fitted():
    """(model, X test DataFrame, labels): 60 normal rows, 15 spread-out anomalies."""
    rng = np.random.default_rng(0)
    model = OCSDF(**SMALL).fit(pd.DataFrame(_rows(rng, 300), columns=NAMES))
    X = pd.DataFrame(np.r_[_rows(rng, 60), _rows(rng, 15, spread=4.0)], columns=NAMES)
    y = np.r_[np.zeros(60, int), np.ones(15, int)]
    return model, X, y


@pytest.fixture(scope="module")
def report(fitted) -> Report:
    model, X, y = fitted
    return Report(model, X, labels=y, top_rows=12, title="Report <on> test & data")


class _DomCounter(HTMLParser):
    """Counts body rows of table#ocsdf-rows and collects the src of every <img>."""

    def __init__(self) -> None:
        super().__init__()
        self.in_rows = self.in_body = False
        self.rows = 0
        self.imgs: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table" and a.get("id") == "ocsdf-rows":
            self.in_rows = True
        elif tag == "tbody" and self.in_rows:
            self.in_body = True
        elif tag == "tr" and self.in_body:
            self.rows += 1
        elif tag == "img":
            self.imgs.append(a.get("src", ""))
        elif tag == "script":
            self.scripts += 1

    def handle_endtag(self, tag):
        if tag == "tbody":
            self.in_body = False
        elif tag == "table":
            self.in_rows = False


def _parse(text: str) -> _DomCounter:
    counter = _DomCounter()
    counter.feed(text)
    return counter


def test_report_numbers(fitted, report):
    model, X, y = fitted
    np.testing.assert_allclose(report.scores, model.score_samples(X), rtol=0, atol=1e-12)
    np.testing.assert_allclose(report.radius, model.certified_radius(X), rtol=1e-12)
    single = np.abs(report.scores - model.offset_) / lipschitz_in(model, "raw")
    assert np.all(report.radius >= single * (1 - 1e-12))
    # the rows table: the 12 lowest scores, in increasing order, 1-based row numbers
    rows = report.rows
    assert len(rows) == 12
    assert len(report.explanation) == 12
    assert np.all(np.diff(rows["score"]) >= 0)
    np.testing.assert_array_equal(rows["row"] - 1, np.argsort(report.scores, kind="stable")[:12])
    assert rows["score"].iloc[-1] <= np.sort(report.scores)[12]
    np.testing.assert_array_equal(rows["label"], y[rows["row"] - 1])
    # certified AUROC: at eps = 0 the plain AUROC, non-increasing, 0 at the end of the grid
    assert report.auroc == pytest.approx(roc_auc_score(1 - y, report.scores), abs=1e-12)
    assert report.auroc > 0.7
    assert np.all(np.diff(report.certified_auroc) <= 1e-12)
    assert report.certified_auroc[-1] == pytest.approx(0.0, abs=1e-12)
    assert report.eps[0] == 0 and report.eps[-1] > 0


def test_report_html_is_self_contained_and_escaped(report, tmp_path):
    text = report.to_html()
    assert text.startswith("<!DOCTYPE html>")
    assert "&lt;b&gt;bold&lt;/b&gt;" in text and "<b>bold</b>" not in text
    assert "a&amp;b" in text
    assert "Report &lt;on&gt; test &amp; data" in text
    dom = _parse(text)
    assert dom.rows == 12 and dom.scripts == 0
    assert len(dom.imgs) == 2
    for src in dom.imgs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == PNG_MAGIC
    assert not re.search(r"(src|href)=\"(https?:|//)", text)  # nothing from the network
    assert "l2, raw units" in text and "standardised units" in text
    # save: the same text, atomically, no temporary file left behind
    (tmp_path / "sub").mkdir()
    path = report.save(tmp_path / "sub" / "r.html")
    assert path.read_text(encoding="utf-8") == text
    assert sorted(p.name for p in path.parent.iterdir()) == ["r.html"]
    # notebook rendering: the body with its style, not a whole document
    frag = report._repr_html_()
    assert "<html" not in frag and "<style>" in frag and _parse(frag).rows == 12


def test_report_without_labels(fitted):
    model, X, _ = fitted
    rep = Report(model, X.iloc[:5], top_rows=20)
    assert len(rep.rows) == 5 and "label" not in rep.rows.columns
    assert rep.certified_auroc is None and rep.auroc is None
    dom = _parse(rep.to_html())
    assert dom.rows == 5 and len(dom.imgs) == 1
    # labels of one class only: no AUROC, but the labels are shown
    rep = Report(model, X.iloc[:5], labels=np.zeros(5), top_rows=3)
    assert rep.auroc is None and len(rep.rows) == 3 and "label" in rep.rows.columns


def test_report_infinite_threshold(fitted):
    """fpr too small for the calibration set gives offset_ = -inf: nothing is flagged, the
    radius is infinite, and the report still renders (no threshold line, no explanation)."""
    model, X, y = fitted
    model = copy.deepcopy(model)
    model.offset_ = -np.inf
    rep = Report(model, X, labels=y, top_rows=4)
    assert not rep.flagged.any() and np.isinf(rep.radius).all()
    assert rep.explanation is None
    assert list(rep.rows["explanation"]) == ["no finite threshold: nothing is flagged"] * 4
    dom = _parse(rep.to_html())
    assert dom.rows == 4 and len(dom.imgs) == 2


@pytest.mark.filterwarnings("ignore:X does not have valid feature names")
def test_report_bad_input(fitted):
    model, X, y = fitted
    with pytest.raises(InputError, match=r"0 \(normal\) or 1 \(anomaly\); got 2 in data row 3"):
        Report(model, X.iloc[:4], labels=[0, 1, 2, 0])
    with pytest.raises(InputError, match="labels have 3 values but the data has 4 rows"):
        Report(model, X.iloc[:4], labels=[0, 1, 0])
    with pytest.raises(InputError, match="top_rows must be a positive integer"):
        Report(model, X, top_rows=0)
    with pytest.raises(ValueError, match="features"):
        Report(model, X.to_numpy()[:, :2])


@pytest.fixture(scope="module")
def cli_files(fitted, tmp_path_factory) -> dict[str, Path]:
    model, X, y = fitted
    root = tmp_path_factory.mktemp("report")
    model.save(root / "m")
    frame = X.copy()
    frame.insert(1, "is_anomaly", y)
    frame.to_csv(root / "test.csv", index=False)
    # a model fitted without feature names, and a header-less file whose last column is the label
    plain = OCSDF(**SMALL).fit(_rows(np.random.default_rng(1), 300))
    plain.save(root / "plain")
    pd.DataFrame(np.c_[X.to_numpy(), y]).to_csv(root / "plain.csv", index=False, header=False)
    return {"root": root, "model": root / "m", "test": root / "test.csv",
            "plain_model": root / "plain", "plain": root / "plain.csv"}


def test_report_cli(cli_files, fitted, tmp_path, capsys):
    out = tmp_path / "report.html"
    code = main(["report", str(cli_files["model"]), str(cli_files["test"]), "-o", str(out),
                 "--labels", "is_anomaly", "--top-rows", "7"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "report on 75 rows" in printed and "AUROC" in printed and str(out) in printed
    dom = _parse(out.read_text(encoding="utf-8"))
    assert dom.rows == 7 and len(dom.imgs) == 2

    # model without names, label column by position, excluded from the features
    out2 = tmp_path / "plain.html"
    code = main(["report", str(cli_files["plain_model"]), str(cli_files["plain"]), "-o",
                 str(out2), "--labels", "3"])
    assert code == 0, capsys.readouterr().err
    assert _parse(out2.read_text(encoding="utf-8")).rows == 20


def test_report_cli_errors(cli_files, tmp_path, capsys):
    model, test = str(cli_files["model"]), str(cli_files["test"])
    out = tmp_path / "r.html"
    assert main(["report", model, test, "-o", str(out), "--labels", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"ocsdf: error: label column 'nope' not found in {test}"
    bad = tmp_path / "bad.csv"
    frame = pd.read_csv(test)
    frame.loc[4, "is_anomaly"] = 3
    frame.to_csv(bad, index=False)
    assert main(["report", model, str(bad), "-o", str(out), "--labels", "is_anomaly"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ocsdf: error: labels must be 0 (normal) or 1 (anomaly)")
    assert "data row 5" in err
    assert not out.exists()


@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (Debian package 'chromium') to "
                    "render the report headless")
def test_report_renders_in_headless_chromium(report, tmp_path):
    page = report.save(tmp_path / "report.html")
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
           page.resolve().as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    dom = _parse(done.stdout)
    assert dom.rows == 12  # the DOM as Chromium built it
    assert len(dom.imgs) == 2 and all(s.startswith("data:image/png;base64,") for s in dom.imgs)
    assert "&lt;b&gt;bold&lt;/b&gt;" in done.stdout  # rendered as text, not as markup


@pytest.mark.parametrize("network", ["dense", "conv"])
def test_report_on_image_models(network):
    """Image models (pixels in [0, 1], the pixel box, no domain clip): the report's scores,
    radii (l2, pixel units) and certified AUROC are the model's own."""
    if network == "conv":
        pytest.importorskip("orthogonium", reason="network='conv' needs orthogonium "
                            "(pip install 'ocsdf[images]')")
    rng = np.random.default_rng(0)
    normal = np.clip(0.3 + 0.1 * rng.normal(size=(120, 1, 8, 8)), 0, 1)
    odd = rng.uniform(0, 1, size=(20, 1, 8, 8))
    model = OCSDF(network=network, width=16, depth=2, channels=(4,), n_steps=60,
                  random_state=0).fit(normal[:100])
    X = np.r_[normal[100:], odd].reshape(40, -1)
    y = np.r_[np.zeros(20, int), np.ones(20, int)]
    rep = Report(model, X, labels=y, top_rows=5, top_features=2)
    np.testing.assert_array_equal(rep.scores, model.score_samples(X))
    np.testing.assert_allclose(rep.radius, model.certified_radius(X), rtol=1e-12)
    # no domain term for the pixel box: the radius is |score - t| / L exactly
    np.testing.assert_allclose(rep.radius, np.abs(rep.scores - model.offset_) / model.lipschitz_,
                               rtol=1e-12)
    assert rep.auroc == pytest.approx(roc_auc_score(1 - y, rep.scores))
    assert rep.certified_auroc[0] == pytest.approx(rep.auroc)
    assert np.all(np.diff(rep.certified_auroc) <= 1e-12)
    dom = _parse(rep.to_html())
    assert dom.rows == 5 and len(dom.imgs) == 2
