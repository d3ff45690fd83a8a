"""How well anomaly scores separate anomalies from normal data.

Every function here takes **anomaly scores: higher means more anomalous** (the negative
of a detector's ``score_samples``, see :mod:`phbook.detectors`) and binary labels
(1 = anomaly, 0 = normal), the convention of scikit-learn's metrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn import metrics as skm

NORMAL = "normal"

__all__ = [
    "roc_auc",
    "auc_standard_error",
    "AUCDifference",
    "compare_aucs",
    "versus_chance",
    "average_precision",
    "tpr_at_fpr",
    "f1_max",
    "summary",
    "per_class_report",
    "compare",
    "below_chance",
    "rounded",
    "auc_by_strength",
    "top_k_recall",
    "top_k_composition",
]


def _check(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    raw = np.asarray(labels).ravel()
    if raw.dtype.kind not in "biuf" or not np.isin(raw, (0, 1)).all():
        raise ValueError("labels must be 0 (normal) or 1 (anomaly)")
    labels = raw.astype(int)
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if labels.shape != scores.shape:
        raise ValueError(
            f"labels {labels.shape} and scores {scores.shape} differ in length"
        )
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0 (normal) or 1 (anomaly)")
    if labels.min() == labels.max():
        raise ValueError("labels need both normal (0) and anomalous (1) samples")
    if not np.isfinite(scores).all():
        raise ValueError(f"{int((~np.isfinite(scores)).sum())} scores are NaN or infinite")
    return labels, scores


def roc_auc(labels, scores) -> float:
    """Area under the ROC curve: the chance an anomaly outscores a normal sample."""
    labels, scores = _check(labels, scores)
    return float(skm.roc_auc_score(labels, scores))


def auc_standard_error(auc: float, n_pos: int, n_neg: int) -> float:
    """The standard error of a ROC-AUC measured on ``n_pos`` positives and ``n_neg``
    negatives (Hanley & McNeil 1982): how far two AUCs on test sets of this size
    must differ before the difference means something."""
    a = _check_auc(auc)
    _check_counts(n_pos, n_neg)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a)) / (
        n_pos * n_neg
    )
    return float(np.sqrt(max(var, 0.0)))


def _check_auc(auc) -> float:
    a = float(auc)
    if not 0.0 <= a <= 1.0:  # NaN fails too
        raise ValueError(f"a ROC-AUC lies in [0, 1], got {auc}")
    return a


def _check_counts(n_pos, n_neg, k: float = 1.0) -> None:
    """Both class counts at least 1 and ``k`` (standard errors) positive."""
    if int(n_pos) < 1 or int(n_neg) < 1:
        raise ValueError(f"n_pos and n_neg must be at least 1, got {n_pos} and {n_neg}")
    if not k > 0:
        raise ValueError(f"k (standard errors) must be positive, got {k}")


@dataclass(frozen=True)
class AUCDifference:
    """Two ROC-AUCs compared (:func:`compare_aucs`).

    ``difference``: ``auc_a - auc_b``; ``standard_error``: that difference's;
    ``verdict``: ``"higher"`` or ``"lower"`` (``a`` against ``b``) where the difference
    exceeds ``k`` standard errors, else ``"tie"``.
    """

    auc_a: float
    auc_b: float
    difference: float
    standard_error: float
    k: float
    verdict: str

    @property
    def resolved(self) -> bool:
        """Whether the test sets tell the two AUCs apart."""
        return self.verdict != "tie"


def compare_aucs(
    auc_a: float, auc_b: float, n_pos: int, n_neg: int, k: float = 2.0
) -> AUCDifference:
    """Whether ROC-AUC ``auc_a`` is higher than, lower than or indistinguishable from
    ``auc_b``, both measured on ``n_pos`` positives and ``n_neg`` negatives.

    The difference counts only beyond ``k`` standard errors of the difference, each
    AUC's from :func:`auc_standard_error` and the two taken as independent. Scores of
    the same test set are correlated, which makes the true standard error smaller: the
    verdict errs towards a tie, never towards a win.
    """
    _check_counts(n_pos, n_neg, k)
    a, b = _check_auc(auc_a), _check_auc(auc_b)
    se = float(
        np.hypot(auc_standard_error(a, n_pos, n_neg), auc_standard_error(b, n_pos, n_neg))
    )
    d = a - b
    verdict = "higher" if d > k * se else "lower" if d < -k * se else "tie"
    return AUCDifference(a, b, d, se, float(k), verdict)


def versus_chance(auc: float, n_pos: int, n_neg: int, k: float = 2.0) -> str:
    """``"above chance"``, ``"at chance"`` or ``"below chance"``: whether ``auc``
    differs from one half by more than ``k`` standard errors of an AUC of one half on
    ``n_pos`` positives and ``n_neg`` negatives (a detector that sees nothing)."""
    _check_counts(n_pos, n_neg, k)
    band = k * auc_standard_error(0.5, n_pos, n_neg)
    a = _check_auc(auc)
    return (
        "above chance"
        if a > 0.5 + band
        else "below chance"
        if a < 0.5 - band
        else "at chance"
    )


def average_precision(labels, scores) -> float:
    """Average precision (area under the precision-recall curve)."""
    labels, scores = _check(labels, scores)
    return float(skm.average_precision_score(labels, scores))


def tpr_at_fpr(labels, scores, fpr: float = 1e-3) -> float:
    """The largest true-positive rate reachable with a false-positive rate <= ``fpr``.

    With fewer than ``1/fpr`` normal samples the only such threshold lies above every
    normal score, so the figure is conservative; it is never interpolated.
    """
    if not 0 < fpr < 1:
        raise ValueError(f"fpr must lie in (0, 1), got {fpr}")
    labels, scores = _check(labels, scores)
    fprs, tprs, _ = skm.roc_curve(labels, scores)
    ok = fprs <= fpr
    return float(tprs[ok].max()) if ok.any() else 0.0


def f1_max(labels, scores) -> float:
    """The best F1 score over all thresholds."""
    labels, scores = _check(labels, scores)
    precision, recall, _ = skm.precision_recall_curve(labels, scores)
    denom = precision + recall
    f1 = np.where(denom > 0, 2 * precision * recall / np.where(denom > 0, denom, 1), 0.0)
    return float(f1.max())


def summary(labels, scores) -> dict[str, float]:
    """ROC-AUC, average precision, TPR at FPR 1e-2 and 1e-3, and F1-max in one dict."""
    return {
        "auc": roc_auc(labels, scores),
        "ap": average_precision(labels, scores),
        "tpr@1e-2": tpr_at_fpr(labels, scores, 1e-2),
        "tpr@1e-3": tpr_at_fpr(labels, scores, 1e-3),
        "f1_max": f1_max(labels, scores),
    }


def per_class_report(
    scores, classes: Sequence[str], normal: str = NORMAL, overall: bool = True
) -> pd.DataFrame:
    """The :func:`summary` metrics of each anomaly class against the normal samples.

    ``classes`` names the class of every sample; samples of class ``normal`` are the
    negatives. One row per anomaly class (its samples against all normal samples), plus
    an ``all`` row (every anomaly against the normal samples) when ``overall``.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    classes = np.asarray(classes).astype(str).ravel()
    if len(scores) != len(classes):
        raise ValueError(f"{len(scores)} scores but {len(classes)} class names")
    is_normal = classes == normal
    if not is_normal.any():
        raise ValueError(f"no samples of the normal class {normal!r}")
    rows = []
    names = [c for c in pd.unique(classes) if c != normal]
    if not names:
        raise ValueError("no anomalous samples: every sample is of the normal class")
    if overall and "all" in names:
        raise ValueError(
            "a class is named 'all', the name of the row of every anomaly: rename it "
            "(or pass overall=False)"
        )
    for name in names + (["all"] if overall else []):
        sel = ~is_normal if name == "all" else classes == name
        mask = is_normal | sel
        row = {"class": name, "n": int(sel.sum())}
        row.update(summary(sel[mask].astype(int), scores[mask]))
        rows.append(row)
    return pd.DataFrame(rows).set_index("class")


def compare(
    scores: dict, classes: Sequence[str], metric: str = "auc", normal: str = NORMAL
) -> pd.DataFrame:
    """One metric of several detectors by class: rows are the anomaly classes and
    ``all``, columns the detectors (the keys of ``scores``, in order).

    ``metric`` is a column of :func:`per_class_report`: ``auc``, ``ap``,
    ``tpr@1e-2``, ``tpr@1e-3`` or ``f1_max``.
    """
    if not scores:
        raise ValueError("scores is empty: give {detector name: anomaly scores}")
    columns = {}
    for name, s in scores.items():
        report = per_class_report(s, classes, normal=normal)
        if metric not in report.columns:
            raise ValueError(
                f"metric {metric!r} unknown; valid values: "
                + ", ".join(c for c in report.columns if c != "n")
            )
        columns[name] = report[metric]
    table = pd.DataFrame(columns)
    table.insert(0, "n", report["n"])
    return table


def below_chance(table: pd.DataFrame, threshold: float = 0.5) -> pd.DataFrame:
    """The entries of a :func:`compare` table of ROC-AUCs below ``threshold``.

    An AUC below 0.5 means the detector ranks that class as *more normal* than the
    normal frames: worth explaining wherever such a table is shown. Returns one row per
    entry (``class``, ``detector``, ``auc``), lowest first; the ``all`` row is left out.
    """
    values = table.drop(columns="n", errors="ignore").drop(index="all", errors="ignore")
    long = values.stack().rename("auc").reset_index()
    long.columns = ["class", "detector", "auc"]
    return long[long["auc"] < threshold].sort_values("auc").reset_index(drop=True)


def rounded(table: pd.DataFrame, digits: int = 3, whole: Sequence[str] = ("n",)):
    """``table`` ready to show: values to ``digits`` decimals, counts as whole numbers.

    The rows and columns named in ``whole`` (by default ``n``, the counts of
    :func:`compare` and :func:`per_class_report`) are written without decimals, which
    a plain ``table.T.round(3)`` cannot do once counts share a column with AUCs. Names
    that are not in the table are ignored. Returns a pandas ``Styler`` (it renders as
    HTML in a notebook and in the book); the numbers themselves stay in ``table``.
    """
    if not isinstance(digits, int | np.integer) or isinstance(digits, bool) or digits < 0:
        raise ValueError(f"digits must be a whole number >= 0, got {digits!r}")
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"table must be a pandas DataFrame, got {type(table).__name__}")
    if isinstance(whole, str):
        raise TypeError(f"whole must be a list of row or column names, got {whole!r}")
    styler = table.style.format(precision=int(digits), na_rep="")
    styler = styler.set_table_attributes('class="dataframe"')  # the book's table style
    rows = [k for k in whole if k in table.index]
    cols = [k for k in whole if k in table.columns]
    if rows:
        styler = styler.format("{:,.0f}", subset=pd.IndexSlice[rows, :], na_rep="")
    if cols:
        styler = styler.format("{:,.0f}", subset=cols, na_rep="")
    return styler


def auc_by_strength(
    scores,
    classes: Sequence[str],
    strength,
    bins: Sequence[float] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0),
    normal: str = NORMAL,
) -> pd.DataFrame:
    """ROC-AUC of each anomaly class in bins of anomaly strength (faint to bright).

    Every bin's anomalies are scored against all normal samples. Rows are the classes,
    columns the bins (labelled by their centres); a bin without anomalies is NaN. This
    shows where a detector stops seeing a class as it gets fainter.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    classes = np.asarray(classes).astype(str).ravel()
    strength = np.asarray(strength, dtype=np.float64).ravel()
    if not len(scores) == len(classes) == len(strength):
        raise ValueError(
            f"scores ({len(scores)}), classes ({len(classes)}) and strength "
            f"({len(strength)}) differ in length"
        )
    edges = np.asarray(bins, dtype=np.float64)
    if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError(f"bins must be increasing edges, got {list(bins)}")
    is_normal = classes == normal
    if not is_normal.any():
        raise ValueError(f"no samples of the normal class {normal!r}")
    anomalous = ~is_normal
    inside = anomalous & (strength >= edges[0]) & (strength <= edges[-1])
    if anomalous.any() and not inside.any():
        finite = strength[anomalous & np.isfinite(strength)]
        span = f"{finite.min():g} to {finite.max():g}" if finite.size else "all NaN"
        raise ValueError(
            f"no anomaly's strength lies in the bins {edges[0]:g} to {edges[-1]:g} "
            f"(the strengths run {span}): give bins on the strengths' scale"
        )
    centres = (edges[:-1] + edges[1:]) / 2
    rows = {}
    for name in [c for c in pd.unique(classes) if c != normal]:
        values = []
        for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
            last = i == len(edges) - 2
            sel = (classes == name) & (strength >= lo)
            sel &= (strength <= hi) if last else (strength < hi)
            if not sel.any():
                values.append(np.nan)
                continue
            mask = is_normal | sel
            values.append(roc_auc(sel[mask].astype(int), scores[mask]))
        rows[name] = values
    table = pd.DataFrame(rows, index=np.round(centres, 3)).T
    table.columns.name = "strength"
    return table


def _ranking(scores) -> np.ndarray:
    """Indices from the highest score to the lowest; ties keep the input order."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if not np.isfinite(scores).all():
        raise ValueError(f"{int((~np.isfinite(scores)).sum())} scores are NaN or infinite")
    return np.argsort(-scores, kind="stable")


def top_k_recall(labels, scores, ks=None) -> pd.Series:
    """The fraction of all positives found among the ``k`` highest scores, for each k.

    This is what a search that inspects only its ``k`` most anomalous images recovers
    (e.g. the fraction of all mergers in a survey's top 100). ``ks`` (default: every
    k from 1 to the number of samples) are counts of images; ties in the scores are
    broken by input order. A random ranking recovers ``k / N`` on average.
    """
    labels = np.asarray(labels).astype(int).ravel()
    order = _ranking(scores)
    if labels.shape != order.shape:
        raise ValueError(f"labels {labels.shape} and scores {order.shape} differ in length")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0 (normal) or 1 (anomaly)")
    if labels.sum() == 0:
        raise ValueError("labels hold no positives (1): recall is undefined")
    ks = np.arange(1, len(labels) + 1) if ks is None else np.asarray(ks).ravel()
    if ks.dtype.kind not in "iu" or ks.min() < 1 or ks.max() > len(labels):
        raise ValueError(f"ks must be integers from 1 to {len(labels)}, got {ks}")
    found = np.cumsum(labels[order])
    return pd.Series(found[ks - 1] / labels.sum(), index=pd.Index(ks, name="k"))


def top_k_composition(scores, classes: Sequence[str], k: int) -> pd.DataFrame:
    """What the ``k`` highest-scoring samples are made of, class by class.

    One row per class (in order of first appearance): ``n`` in the whole set,
    ``top_k`` among the ``k`` highest scores, ``share`` of the top ``k`` (sums to
    one), ``recall`` (the fraction of the class that is in the top ``k``) and
    ``enrichment``: ``share`` over the class's share of the whole set (1 = as many
    as a random pick would give).
    """
    classes = np.asarray(classes).astype(str).ravel()
    order = _ranking(scores)
    if len(order) != len(classes):
        raise ValueError(f"{len(order)} scores but {len(classes)} class names")
    if int(k) != k or not 1 <= k <= len(order):
        raise ValueError(f"k must be an integer from 1 to {len(order)}, got {k!r}")
    top = classes[order[: int(k)]]
    rows = []
    for name in pd.unique(classes):
        n = int((classes == name).sum())
        in_top = int((top == name).sum())
        share = in_top / k
        rows.append(
            {
                "class": name,
                "n": n,
                "top_k": in_top,
                "share": share,
                "recall": in_top / n,
                "enrichment": share / (n / len(classes)),
            }
        )
    return pd.DataFrame(rows).set_index("class")
