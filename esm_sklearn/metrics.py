"""Accuracy measures for latency predictors, and scorers for model selection.

The ESM paper reports "accuracy" as ``1 - MAPE`` (:func:`latency_accuracy`,
here a fraction, e.g. ``0.976``); nn-Meter reports the share of predictions
within +-10% (:func:`within_accuracy`); a NAS loop mostly needs the ranking
(:func:`kendall_tau`). :func:`binwise_accuracy` splits the score by total-depth
bin, the paper's evaluation, and :func:`worst_bin_accuracy` keeps its weakest bin.

Every ``*_scorer`` and :func:`get_scorer` result can be passed as ``scoring=``
to ``cross_val_score``, ``cross_validate`` or ``GridSearchCV``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd
from sklearn.metrics import get_scorer as _sklearn_get_scorer
from sklearn.metrics import make_scorer

from .spaces import SearchSpace, as_arch_list, get_space, infer_space

__all__ = [
    "latency_accuracy",
    "within_accuracy",
    "rmse",
    "kendall_tau",
    "binwise_accuracy",
    "worst_bin_accuracy",
    "make_worst_bin_scorer",
    "latency_accuracy_scorer",
    "within_10_scorer",
    "kendall_tau_scorer",
    "neg_rmse_scorer",
    "worst_bin_scorer",
    "SCORERS",
    "get_scorer",
]


def _check_targets(y_true, y_pred, *, positive_true: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Return ``y_true``, ``y_pred`` as 1-D float arrays or raise ``ValueError``."""
    arrays = []
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        try:
            arr = np.asarray(y, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name} must be numeric: {exc}") from None
        if arr.ndim == 2 and arr.shape[1] == 1:  # e.g. skorch predictions of shape (n, 1)
            arr = arr[:, 0]
        if arr.ndim != 1:
            raise ValueError(f"{name} must be 1-D (or of shape (n, 1)), got shape {arr.shape}")
        arrays.append(arr)
    t, p = arrays
    if len(t) != len(p):
        raise ValueError(f"y_true and y_pred differ in length: {len(t)} != {len(p)}")
    if len(t) == 0:
        raise ValueError("y_true and y_pred are empty")
    for name, arr in (("y_true", t), ("y_pred", p)):
        bad = ~np.isfinite(arr)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{name} holds {bad.sum()} non-finite value(s), first {arr[i]} at index {i}")
    if positive_true:
        bad = t <= 0
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"y_true must be > 0 for a percentage error; got {t[i]} at index {i} "
                f"({bad.sum()} value(s) <= 0)"
            )
    return t, p


def latency_accuracy(y_true, y_pred) -> float:
    """The ESM paper's accuracy: ``1 - mean(|y_pred - y_true| / y_true)``.

    Parameters
    ----------
    y_true : array-like of shape (n,)
        Measured latencies (> 0).
    y_pred : array-like of shape (n,) or (n, 1)
        Predicted latencies.

    Returns
    -------
    float
        ``1 - MAPE`` as a fraction (``0.95`` is 95%); negative when the mean
        error exceeds 100%.

    Examples
    --------
    >>> round(latency_accuracy([1.0, 2.0], [1.1, 1.8]), 6)
    0.9
    """
    t, p = _check_targets(y_true, y_pred, positive_true=True)
    return float(1.0 - np.mean(np.abs(p - t) / t))


def within_accuracy(y_true, y_pred, tol: float = 0.1) -> float:
    """Share of predictions whose relative error ``|y_pred - y_true| / y_true`` is <= ``tol``.

    ``tol=0.1`` is nn-Meter's +-10% accuracy.

    Examples
    --------
    >>> within_accuracy([1.0, 2.0, 4.0], [1.05, 2.5, 4.0], tol=0.1)
    0.6666666666666666
    """
    if isinstance(tol, bool) or not isinstance(tol, (int, float, np.integer, np.floating)) or not (
        np.isfinite(tol) and tol >= 0
    ):
        raise ValueError(f"tol must be a finite number >= 0, got {tol!r}")
    t, p = _check_targets(y_true, y_pred, positive_true=True)
    # The small slack keeps an error of exactly tol (up to rounding) inside.
    rel = np.abs(p - t) / t
    return float(np.mean(rel <= tol * (1 + 1e-12) + 1e-15))


def rmse(y_true, y_pred) -> float:
    """Root mean squared error, in the unit of the latencies.

    Examples
    --------
    >>> rmse([1.0, 2.0], [1.0, 4.0])
    1.4142135623730951
    """
    t, p = _check_targets(y_true, y_pred)
    return float(np.sqrt(np.mean((p - t) ** 2)))


def kendall_tau(y_true, y_pred) -> float:
    """Kendall's rank correlation (tau-b) between measured and predicted latencies.

    1 when the predictor ranks every pair like the measurements, -1 when it
    reverses them. NaN when undefined (fewer than two values, or a constant input).

    Examples
    --------
    >>> kendall_tau([1.0, 2.0, 3.0], [10.0, 20.0, 30.0])
    1.0
    """
    t, p = _check_targets(y_true, y_pred)
    if len(t) < 2:
        return float("nan")
    from scipy.stats import kendalltau  # scipy comes with scikit-learn

    return float(kendalltau(t, p).statistic)


# ------------------------------------------------------------------ bin-wise
def binwise_accuracy(
    y_true,
    y_pred,
    archs,
    space: str | SearchSpace | None = None,
    n_bins: int = 5,
    metric: Callable = latency_accuracy,
) -> pd.DataFrame:
    """Accuracy per total-depth bin, the ESM paper's evaluation.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n,)
        Measured and predicted latencies.
    archs : sequence of dict or JSON str
        The ``n`` architectures, in the order of ``y_true``.
    space : str or SearchSpace, optional
        Their search space (default: the ``"space"`` field of the architectures).
    n_bins : int
        Number of equal-width bins over the space's total-depth range
        (:meth:`SearchSpace.bin_index`).
    metric : callable
        ``metric(y_true, y_pred) -> float`` computed inside each bin.

    Returns
    -------
    pandas.DataFrame
        One row per bin (empty bins included) with columns ``bin``,
        ``depth_low`` and ``depth_high`` (inclusive total-depth range),
        ``count``, ``accuracy`` (``metric``; NaN for an empty bin) and
        ``within_10`` (share within +-10%; NaN for an empty bin).

    Examples
    --------
    >>> archs = [{"space": "densenet", "depth": [d] * 5, "kernel_size": [3] * 5} for d in (1, 20)]
    >>> table = binwise_accuracy([1.0, 10.0], [1.1, 10.0], archs)
    >>> table[["bin", "depth_low", "depth_high", "count"]].iloc[[0, -1]].to_numpy().tolist()
    [[0, 5, 23, 1], [4, 81, 100, 1]]
    """
    t, p = _check_targets(y_true, y_pred)
    archs = as_arch_list(archs)
    if len(archs) != len(t):
        raise ValueError(f"got {len(archs)} architectures for {len(t)} latencies")
    if not callable(metric):
        raise ValueError(f"metric must be a callable metric(y_true, y_pred), got {metric!r}")
    space = infer_space(archs, space)
    bins = space.bin_index(archs, n_bins)
    rows = []
    for b, (low, high) in enumerate(space.bin_ranges(n_bins)):
        mask = bins == b
        count = int(mask.sum())
        rows.append(
            {
                "bin": b,
                "depth_low": low,
                "depth_high": high,
                "count": count,
                "accuracy": float(metric(t[mask], p[mask])) if count else np.nan,
                "within_10": within_accuracy(t[mask], p[mask], 0.1) if count else np.nan,
            }
        )
    return pd.DataFrame(rows)


def worst_bin_accuracy(
    y_true,
    y_pred,
    archs,
    space: str | SearchSpace | None = None,
    n_bins: int = 5,
    metric: Callable = latency_accuracy,
) -> float:
    """Lowest :func:`binwise_accuracy` over the non-empty bins (NaN bins are ignored).

    Examples
    --------
    >>> archs = [{"space": "densenet", "depth": [d] * 5, "kernel_size": [3] * 5} for d in (1, 20)]
    >>> round(worst_bin_accuracy([1.0, 10.0], [1.1, 10.0], archs), 6)
    0.9
    """
    table = binwise_accuracy(y_true, y_pred, archs, space=space, n_bins=n_bins, metric=metric)
    scores = table.loc[table["count"] > 0, "accuracy"].to_numpy(dtype=float)
    scores = scores[~np.isnan(scores)]
    return float(scores.min()) if len(scores) else float("nan")


# ------------------------------------------------------------------- scorers
class _WorstBinScorer:
    """``scorer(estimator, X, y)``: :func:`worst_bin_accuracy` with bins taken from ``X``.

    ``X`` must be the architectures themselves (what a latency pipeline is fit
    on), not an encoded matrix.
    """

    def __init__(self, n_bins: int = 5, space=None, metric: Callable = latency_accuracy):
        self.n_bins = n_bins
        self.space = space
        self.metric = metric

    def __call__(self, estimator, X, y, sample_weight=None) -> float:
        if sample_weight is not None:
            raise ValueError("the worst-bin scorer does not support sample_weight")
        try:
            archs = as_arch_list(X)
        except ValueError as exc:
            raise ValueError(f"worst-bin scorer: X must be a sequence of architectures: {exc}") from None
        if archs and not isinstance(archs[0], (Mapping, str, bytes)):
            raise ValueError(
                "worst-bin scorer: X must be a sequence of architecture dicts or JSON strings "
                f"(the depth bins are read from them), got elements of type {type(archs[0]).__name__}"
            )
        y_pred = estimator.predict(X)
        return worst_bin_accuracy(
            y, y_pred, archs, space=self.space, n_bins=self.n_bins, metric=self.metric
        )

    def __repr__(self) -> str:
        space = self.space.name if isinstance(self.space, SearchSpace) else self.space
        return f"make_worst_bin_scorer(n_bins={self.n_bins}, space={space!r}, metric={self.metric.__name__})"


def make_worst_bin_scorer(
    n_bins: int = 5, space: str | SearchSpace | None = None, metric: Callable = latency_accuracy
) -> Callable:
    """A scorer ``(estimator, X, y) -> float`` giving the worst bin's accuracy.

    ``X`` is the list of architectures, so the scorer works inside
    ``cross_val_score`` / ``GridSearchCV`` on a pipeline fit on architectures.
    Higher is better.

    Parameters
    ----------
    n_bins : int
        Number of total-depth bins.
    space : str or SearchSpace, optional
        The search space (default: read from the architectures).
    metric : callable
        Per-bin ``metric(y_true, y_pred)``; default :func:`latency_accuracy`.
    """
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive int, got {n_bins!r}")
    if space is not None:
        space = get_space(space)
    if not callable(metric):
        raise ValueError(f"metric must be callable, got {metric!r}")
    return _WorstBinScorer(n_bins=int(n_bins), space=space, metric=metric)


latency_accuracy_scorer = make_scorer(latency_accuracy)
within_10_scorer = make_scorer(within_accuracy, tol=0.1)
kendall_tau_scorer = make_scorer(kendall_tau)
neg_rmse_scorer = make_scorer(rmse, greater_is_better=False)
worst_bin_scorer = make_worst_bin_scorer()

#: Scorers by name; each is also accepted by :func:`get_scorer`.
SCORERS: dict[str, Callable] = {
    "latency_accuracy": latency_accuracy_scorer,
    "within_10": within_10_scorer,
    "kendall_tau": kendall_tau_scorer,
    "worst_bin": worst_bin_scorer,
    "neg_rmse": neg_rmse_scorer,
}


def get_scorer(name: str | Callable) -> Callable:
    """Return the scorer called ``name``.

    Our names (``"latency_accuracy"``, ``"within_10"``, ``"kendall_tau"``,
    ``"worst_bin"``, ``"neg_rmse"``) come first; any other name is looked up
    among scikit-learn's (e.g. ``"r2"``). A callable is returned unchanged.

    Raises
    ------
    ValueError
        For an unknown name, listing ours.

    Examples
    --------
    >>> get_scorer("worst_bin")
    make_worst_bin_scorer(n_bins=5, space=None, metric=latency_accuracy)
    """
    if callable(name):
        return name
    if isinstance(name, str) and name in SCORERS:
        return SCORERS[name]
    try:
        return _sklearn_get_scorer(name)
    except (ValueError, TypeError):
        raise ValueError(
            f"unknown scorer {name!r}; esm_sklearn scorers are {sorted(SCORERS)} "
            "(scikit-learn's names, e.g. 'r2', are accepted too)"
        ) from None
