"""A self-contained HTML report of a fitted :class:`~ocsdf.OCSDF` on a data set.

One HTML file (or notebook cell): the model's summary, a histogram of the scores with the
threshold, the certified AUROC against the l2 attack budget when labels are given, and a table of
the most anomalous rows with their score, certified radius and explanation (which features to
change, and to what, to make the row normal: :func:`ocsdf.explain.explain`).

The file needs nothing from the network: figures are PNG data URIs drawn with matplotlib's Agg
canvas, the style sheet is inline, there is no script, and a Content-Security-Policy forbids any
other source. Every user string (feature names, title, source) is escaped with
:func:`html.escape`.

Units: scores, margins and ``lipschitz_`` are in standardised units (l2); certified radii and
attack budgets are l2 norms in raw feature units (the user's units), as in
:meth:`OCSDF.certified_radius`.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import os
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import InputError
from .io import atomic_open

__all__ = ["Report"]

_MAX_NAMES = 30  # feature names listed in the summary before "(+N more)"
_EPS_POINTS = 201  # grid of the certified AUROC curve
_CLIP_QUANTILE = 1.0  # histogram: scores below this percentile are drawn in the first bin

_CSS = """
.ocsdf-report { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: #1b1f24; max-width: 1150px; margin: 0 auto; padding: 8px 16px; line-height: 1.4; }
.ocsdf-report h1 { font-size: 1.5em; margin: 0.4em 0; }
.ocsdf-report h2 { font-size: 1.2em; margin: 1.2em 0 0.4em; border-bottom: 1px solid #d0d7de; }
.ocsdf-report table { border-collapse: collapse; font-size: 0.9em; margin: 0.4em 0; }
.ocsdf-report th, .ocsdf-report td { border: 1px solid #d0d7de; padding: 3px 8px;
  text-align: left; vertical-align: top; }
.ocsdf-report th { background: #f3f5f7; }
.ocsdf-report td.num { text-align: right; font-variant-numeric: tabular-nums; }
.ocsdf-report tr.flagged td.score { color: #b42318; font-weight: 600; }
.ocsdf-report .note { color: #57606a; font-size: 0.85em; }
.ocsdf-report .figs { display: flex; flex-wrap: wrap; gap: 16px; }
.ocsdf-report img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
.ocsdf-report ul.expl { margin: 0; padding-left: 1.1em; }
"""


class Report:
    """Report on a fitted OCSDF model and a data set, rendered as one self-contained HTML page.

    Parameters
    ----------
    model : fitted OCSDF
    X : array-like, shape (n_samples, n_features)
        Rows to report on, raw units (a DataFrame with the model's feature names, or an array).
    labels : array-like of {0, 1}, shape (n_samples,), optional
        Ground truth, 1 = anomaly, 0 = normal. Enables the AUROC and the certified AUROC curve.
    top_rows : int, default 20
        Number of most anomalous rows (lowest scores) listed with their explanation.
    top_features : int, default 3
        Features per row in the explanation.
    title : str, optional
        Heading of the page (escaped).
    source : str, optional
        Where the data came from (a file name; escaped).

    Attributes
    ----------
    scores : ndarray, shape (n_samples,)
        ``model.score_samples(X)`` (standardised units, > 0 normal).
    radius : ndarray, shape (n_samples,)
        ``model.certified_radius(X)``: l2, raw feature units, around the threshold.
    flagged : ndarray of bool, shape (n_samples,)
        ``score < model.offset_``.
    rows : DataFrame, shape (min(top_rows, n_samples), ...)
        The table of most anomalous rows: ``row`` (1-based data row), ``score``,
        ``certified_radius``, ``flagged``, ``label`` (with labels) and ``explanation`` (text).
    eps, certified_auroc : ndarray, shape (k,) or None
        The certified AUROC curve (raw units, l2), with labels holding both classes.
    auroc : float or None
        AUROC of the scores (normal rows as positives), with labels holding both classes.
    explanation : Explanation or None
        :func:`ocsdf.explain.explain` of the listed rows (None when the threshold is not finite).

    Examples
    --------
    >>> report = Report(model, X_test, labels=y_test)  # doctest: +SKIP
    >>> report.save("report.html")                      # doctest: +SKIP
    >>> report                                          # renders inline in Jupyter # doctest: +SKIP
    """

    def __init__(
        self,
        model,
        X,
        labels=None,
        top_rows: int = 20,
        top_features: int = 3,
        title: str | None = None,
        source: str | None = None,
    ) -> None:
        from sklearn.utils.validation import check_is_fitted

        from .certify import lipschitz_in, radius_from_terms, term_lipschitz

        check_is_fitted(model, "net_")
        for name, value in (("top_rows", top_rows), ("top_features", top_features)):
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise InputError(f"{name} must be a positive integer, got {value!r}")
        self.model = model
        self.title = title or "OCSDF report"
        self.source = source
        self.top_rows = int(top_rows)
        self.top_features = int(top_features)
        self.feature_names = _feature_names(model)
        self.scores = np.asarray(model.score_samples(X), dtype=np.float64)  # validates X
        n = len(self.scores)
        if n == 0:
            raise InputError("the report needs at least one data row")
        self.X = _as_array(X)
        self.threshold = float(model.offset_)
        self.flagged = self.scores < self.threshold
        self.lipschitz_raw = lipschitz_in(model, "raw")
        self.term_lipschitz = term_lipschitz(model, "raw")
        # = model.certified_radius(X) (ocsdf.certify), without validating X a second time
        self.terms = model.scorer_.score_terms(self.X)
        self.radius = radius_from_terms(self.terms, self.threshold, self.term_lipschitz)
        self.labels = None if labels is None else _check_labels(labels, n)
        self.auroc: float | None = None
        self.eps: np.ndarray | None = None
        self.certified_auroc: np.ndarray | None = None
        if self.labels is not None and 0 < self.labels.sum() < n:
            self._certified_curve()
        self.rows = self._rows_table()
        self._html: str | None = None
        self.created = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")

    # ------------------------------------------------------------------ computations
    def _certified_curve(self) -> None:
        """AUROC and certified AUROC on a grid of budgets (raw units) from 0 to just past the
        budget at which the certified AUROC reaches 0."""
        from .certify import certified_auroc_terms

        sn = self.scores[self.labels == 0]
        sa = self.scores[self.labels == 1]
        # every score moves at least min(L_f, L_B) eps in the worst case (certify module
        # docstring), so the certified AUROC is 0 past this budget
        slowest = min(v for v in self.term_lipschitz if v is not None)
        top = max(float(sn.max() - sa.min()), 0.0) / (2.0 * slowest)
        self.eps = np.linspace(0.0, 1.02 * top if top > 0 else 1.0, _EPS_POINTS)
        self.certified_auroc = np.asarray(certified_auroc_terms(
            self.terms[self.labels == 0], self.terms[self.labels == 1], self.eps,
            self.term_lipschitz))
        self.auroc = float(self.certified_auroc[0])

    def _rows_table(self) -> pd.DataFrame:
        """The most anomalous rows (lowest scores first) with their explanation."""
        from .explain import explain

        order = np.argsort(self.scores, kind="stable")[: self.top_rows]
        X_sel = self.X[order]
        names = getattr(self.model, "feature_names_in_", None)
        data = pd.DataFrame(X_sel, columns=list(names)) if names is not None else X_sel
        self.explanation = None
        if np.isfinite(self.threshold):
            ex = explain(self.model, data, top=self.top_features)
            self.explanation = ex
            texts = [_explanation_html(ex, i, self.feature_names) for i in range(len(order))]
        else:  # e.g. fpr too small for the calibration set: threshold -inf, nothing flagged
            texts = ["no finite threshold: nothing is flagged"] * len(order)
        table = pd.DataFrame({
            "row": order + 1,
            "score": self.scores[order],
            "certified_radius": self.radius[order],
            "flagged": self.flagged[order],
        })
        if self.labels is not None:
            table["label"] = self.labels[order]
        table["explanation"] = texts
        return table

    # ------------------------------------------------------------------ rendering
    def to_html(self) -> str:
        """The whole report as one HTML document (UTF-8 text, no external resource)."""
        return (
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
            "img-src data:; style-src 'unsafe-inline'\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{html.escape(self.title)}</title>\n</head>\n<body>\n"
            f"{self._fragment()}\n</body>\n</html>\n"
        )

    def _repr_html_(self) -> str:
        """Inline rendering in Jupyter: the report's body with its scoped style sheet."""
        return self._fragment()

    def save(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_html` to ``path`` atomically (temporary file, then rename).

        Returns ``path`` as a :class:`~pathlib.Path`.
        """
        text = self.to_html()
        with atomic_open(path, "w") as fh:
            fh.write(text)
        return Path(path)

    def _fragment(self) -> str:
        """The report's body (a ``div`` with its scoped style sheet); drawn once, then reused."""
        if self._html is None:
            self._html = self._render()
        return self._html

    def _render(self) -> str:
        parts = [f"<div class=\"ocsdf-report\">\n<style>{_CSS}</style>",
                 f"<h1>{html.escape(self.title)}</h1>",
                 f"<p class=\"note\">{self._lead()}</p>",
                 "<h2>Model</h2>", self._summary_html(),
                 "<h2>Scores</h2>", self._figures_html(),
                 "<h2>Most anomalous rows</h2>", self._rows_html(),
                 "</div>"]
        return "\n".join(parts)

    def _lead(self) -> str:
        src = f" of {html.escape(str(self.source))}" if self.source else ""
        n, k = len(self.scores), int(self.flagged.sum())
        return (f"{n} rows{src} scored on {html.escape(self.created)}: {k} flagged as "
                f"anomalous ({100.0 * k / n:.1f} %), score below the threshold "
                f"{self.threshold:.4g}.")

    def _summary_html(self) -> str:
        m = self.model
        d = len(self.feature_names)
        shown = ", ".join(html.escape(s) for s in self.feature_names[:_MAX_NAMES])
        if d > _MAX_NAMES:
            shown += f" (+{d - _MAX_NAMES} more)"
        fit_time = getattr(m, "fit_time_", None)
        fit_text = (f"{float(fit_time):.1f} s" if fit_time is not None
                    else "not recorded with this model")
        items = [
            ("features", f"{d}: {shown}"),
            ("domain of the negatives", html.escape(_domain_text(m, d))),
            ("network", html.escape(f"{m.width_} x {m.depth} ({m.activation}), "
                                    f"{m.n_steps_} training steps")),
            ("training time", fit_text),
            ("margin m", f"{m.margin_:.4g} (standardised units)"),
            ("Lipschitz bound L", f"{m.lipschitz_:.4g} (l2, standardised units); "
             f"{self.lipschitz_raw:.4g} per raw feature unit ({self._raw_terms_text()})"),
            ("threshold", html.escape(_threshold_text(m))),
        ]
        if self.labels is not None:
            n_a = int(self.labels.sum())
            items.append(("labels", f"{len(self.labels) - n_a} normal, {n_a} anomalous"))
            if self.auroc is not None:
                items.append(("AUROC", f"{self.auroc:.4f} (normal vs anomalous, no attack)"))
        rows = "\n".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in items)
        return f"<table class=\"summary\">\n{rows}\n</table>"

    def _raw_terms_text(self) -> str:
        lf, lb = self.term_lipschitz
        net = f"network {lf:.4g}: first layer's norm with the standardisation folded in"
        return net if lb is None else f"{net}; domain B {lb:.4g} = 1 / min(scale)"

    def _figures_html(self) -> str:
        figs = [_img(self._histogram_png(), "histogram of scores with the threshold")]
        text = ("<p class=\"note\">Score f: ~ signed distance to the boundary of the normal "
                "region in standardised units, &gt; 0 normal. The red line is the threshold; "
                "rows to its left are flagged.</p>")
        if self.certified_auroc is not None:
            figs.append(_img(self._certified_png(), "certified AUROC against the l2 budget"))
            text += f"<p class=\"note\">{self._certified_text()}</p>"
        return f"<div class=\"figs\">{''.join(figs)}</div>\n{text}"

    def _certified_text(self) -> str:
        eps, cert = self.eps, self.certified_auroc
        parts = []
        for level in (0.9, 0.75, 0.5):
            above = np.flatnonzero(cert >= level)
            if above.size and cert[0] >= level:
                # the curve is non-increasing: the last grid budget still at the level
                parts.append(f"&ge; {level:g} up to eps = {eps[above[-1]]:.4g}")
        got = "; ".join(parts) if parts else "below 0.5 at every budget"
        return ("Certified AUROC: a lower bound of the AUROC under any l2 perturbation of norm "
                f"&le; eps of every row (raw feature units; network and domain terms bounded "
                f"apart: {self._raw_terms_text()}); "
                f"{got} (grid of {_EPS_POINTS} budgets).")

    def _rows_html(self) -> str:
        has_labels = "label" in self.rows.columns
        head = ["row", "score", "certified radius<br>(l2, raw units)", "flagged"]
        if has_labels:
            head.append("label")
        head.append("to make it normal (feature: value &rarr; normal value)")
        lines = ["<table id=\"ocsdf-rows\" class=\"rows\">",
                 "<thead><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead>",
                 "<tbody>"]
        for rec in self.rows.itertuples(index=False):
            cls = " class=\"flagged\"" if rec.flagged else ""
            cells = [f"<td class=\"num\">{rec.row}</td>",
                     f"<td class=\"num score\">{rec.score:.4g}</td>",
                     f"<td class=\"num\">{rec.certified_radius:.4g}</td>",
                     f"<td>{'yes' if rec.flagged else 'no'}</td>"]
            if has_labels:
                cells.append(f"<td>{'anomaly' if rec.label == 1 else 'normal'}</td>")
            cells.append(f"<td>{rec.explanation}</td>")
            lines.append(f"<tr{cls}>" + "".join(cells) + "</tr>")
        lines += ["</tbody>", "</table>"]
        n = len(self.rows)
        lines.append(
            f"<p class=\"note\">The {n} rows with the lowest scores (row: 1-based data row). "
            "Certified radius: no l2 perturbation of the row smaller than it, in raw feature "
            "units, can change its prediction. The explanation walks the row to the nearest point "
            "the model scores as normal and lists the features that change most (ranked by "
            "change in standard deviations), with their values in raw units.</p>"
        )
        return "\n".join(lines)

    # ------------------------------------------------------------------ figures
    def _histogram_png(self) -> bytes:
        fig, ax = _figure()
        s = self.scores
        finite = bool(np.isfinite(self.threshold))
        lo = float(np.percentile(s, _CLIP_QUANTILE))
        hi = float(s.max())
        if finite:
            lo, hi = min(lo, self.threshold), max(hi, self.threshold)
        pad = 0.05 * (hi - lo) if hi > lo else 0.5
        lo, hi = lo - pad, hi + pad
        bins = np.linspace(lo, hi, 41)
        clipped = np.clip(s, lo, hi)
        if self.labels is not None:
            ax.hist(clipped[self.labels == 0], bins=bins, alpha=0.6, label="normal (label 0)",
                    color="#2f6fb0")
            ax.hist(clipped[self.labels == 1], bins=bins, alpha=0.6, label="anomaly (label 1)",
                    color="#d9822b")
        else:
            ax.hist(clipped, bins=bins, color="#2f6fb0", alpha=0.8, label="rows")
        if finite:
            ax.axvline(self.threshold, color="#b42318", lw=1.5,
                       label=f"threshold {self.threshold:.3g}")
        n_low = int((s < lo).sum())
        if n_low:
            rows = "row" if n_low == 1 else "rows"
            ax.annotate(f"{n_low} {rows} below {lo:.3g}\ndrawn in the first bin",
                        xy=(0.02, 0.97), xycoords="axes fraction", va="top", fontsize=8)
        ax.set_xlabel("score f (standardised units, > 0 normal)")
        ax.set_ylabel("rows")
        ax.legend(loc="best", fontsize=8)
        ax.set_title("Scores", fontsize=10)
        return _png(fig)

    def _certified_png(self) -> bytes:
        fig, ax = _figure()
        ax.plot(self.eps, self.certified_auroc, "-", color="#2f6fb0",
                label="certified AUROC (lower bound)")
        ax.set_xlabel("l2 attack budget eps (raw feature units)")
        ax.set_ylabel("AUROC")
        ax.set_ylim(0.0, 1.01)
        ax.set_xlim(0.0, float(self.eps[-1]))
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right", fontsize=8)
        ax.set_title("Certified AUROC against the attack budget", fontsize=10)
        return _png(fig)


# ---------------------------------------------------------------------------- helpers
def _feature_names(model) -> list[str]:
    names = getattr(model, "feature_names_in_", None)
    if names is not None:
        return [str(n) for n in names]
    return [f"x{j}" for j in range(int(model.n_features_in_))]


def _as_array(X) -> np.ndarray:
    """``X`` (already validated by ``score_samples``) as a float64 array (n, d)."""
    if hasattr(X, "to_numpy"):
        return X.to_numpy(dtype=np.float64)
    return np.asarray(X, dtype=np.float64)


def _check_labels(labels, n: int) -> np.ndarray:
    """Labels as an int array of 0/1 (1 = anomaly), shape (n,); raises InputError otherwise."""
    try:
        y = np.asarray(labels, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise InputError("labels must be numbers 0 (normal) or 1 (anomaly)") from None
    if y.shape != (n,):
        raise InputError(f"labels have {y.size} values but the data has {n} rows")
    bad = ~np.isin(y, (0.0, 1.0))
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"labels must be 0 (normal) or 1 (anomaly); got {y[first]:g} in data row {first + 1}"
        )
    return y.astype(int)


def _domain_text(model, d: int) -> str:
    s = float(model.domain_size)
    if model.domain == "box":
        where = f"box [-{s:g}, {s:g}]^{d}"
    elif model.domain == "ball":
        where = f"ball of radius {s:g}"
    else:
        where = f"pixel box [0, 1]^{d}"
    scaled = "standardised units" if model.standardize else "raw units (not standardised)"
    k = len(getattr(model, "domain_rows_", ()))
    balls = (f"; B adds a ball of radius m = {float(model.margin_):.3g} around each of the {k} "
             "training rows outside it" if k else "")
    return f"{where} in {scaled}{balls}"


def _threshold_text(model) -> str:
    t = float(model.offset_)
    if model.fpr is not None:
        n_cal = len(getattr(model, "calibration_scores_", []))
        return (f"{t:.4g}: target false-positive rate {model.fpr:g} "
                f"(split-conformal, {n_cal} calibration rows)")
    if model.contamination != "auto":
        return f"{t:.4g}: quantile {model.contamination:g} of the training scores"
    return f"{t:.4g}: the learned boundary f = 0"


def _explanation_html(ex, i: int, names: list[str]) -> str:
    """Row ``i`` of an Explanation as an HTML list of (feature: value -> normal value)."""
    if not bool(ex.flagged[i]):
        return "already normal"
    items = []
    for j in np.asarray(ex.top[i]):
        j = int(j)
        if j < 0:
            continue
        items.append(
            f"<li>{html.escape(names[j])}: {ex.x[i, j]:.4g} &rarr; {ex.x_star[i, j]:.4g} "
            f"({ex.delta[i, j]:+.3g})</li>"
        )
    note = "" if bool(ex.reached[i]) else (
        "<li class=\"note\">normal region not reached: the values go as far as the search "
        "did</li>")
    if not items:
        return "no single feature change found" + (f"<ul class=\"expl\">{note}</ul>"
                                                    if note else "")
    return f"<ul class=\"expl\">{''.join(items)}{note}</ul>"


def _figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _png(fig) -> bytes:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f"<img alt=\"{html.escape(alt)}\" src=\"data:image/png;base64,{data}\">"
