"""The ESM paper's figures, drawn from result tables.

Every function takes a ``pandas.DataFrame`` (the columns are listed in its
docstring), returns a :class:`matplotlib.figure.Figure` and leaves global state
alone: figures are built with ``Figure()`` (not ``pyplot``), so no backend is
chosen here, nothing is shown, and ``fig.savefig(path)`` writes a file under
any backend (Agg is used for it). In Jupyter a returned figure displays as
usual.

- :func:`plot_binwise_sample_size` - accuracy per total-depth bin after training
  on N and on 4N samples (cf. the paper's Fig. 3).
- :func:`plot_predicted_vs_measured` - predicted against measured latency, one
  panel per encoding (cf. Fig. 8).
- :func:`plot_encoding_accuracy` - average accuracy of each encoding over
  datasets (cf. Fig. 9).
- :func:`plot_device_accuracy` - accuracy per dataset/device and encoding
  (cf. Fig. 10).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .metrics import kendall_tau, latency_accuracy, within_accuracy

__all__ = [
    "ENCODING_ORDER",
    "METRIC_LABELS",
    "plot_binwise_sample_size",
    "plot_predicted_vs_measured",
    "plot_encoding_accuracy",
    "plot_device_accuracy",
]

#: Order in which encodings are drawn (others follow in order of appearance).
ENCODING_ORDER = ("fcc", "fc", "fe", "onehot", "stat", "lut")
_ENCODING_NAMES = {
    "fcc": "FCC",
    "fc": "FC",
    "fe": "feature",
    "onehot": "one-hot",
    "stat": "statistical",
    "lut": "lookup table",
}
#: Axis labels of the metrics (fractions in the tables, percent on the plots).
METRIC_LABELS = {
    "accuracy": "accuracy, 1 - MAPE (%)",
    "within_10": "predictions within ±10% (%)",
    "worst_bin": "worst depth bin accuracy, 1 - MAPE (%)",
    "kendall_tau": "Kendall's tau",
}
_PERCENT_METRICS = {"accuracy", "within_10", "worst_bin"}


def _check_frame(frame, required: Sequence[str], what: str) -> pd.DataFrame:
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"{what}: expected a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{what}: missing column(s) {missing}; found columns {list(frame.columns)}"
        )
    if len(frame) == 0:
        raise ValueError(f"{what}: the table has no rows")
    return frame


def _check_metric(metric: str, frame: pd.DataFrame, what: str) -> None:
    if metric not in frame.columns:
        raise ValueError(
            f"{what}: metric column {metric!r} not in the table (columns {list(frame.columns)})"
        )


def _scale(metric: str) -> float:
    return 100.0 if metric in _PERCENT_METRICS else 1.0


def _ordered(values, preferred: Sequence[str] = ()) -> list:
    present = list(dict.fromkeys(values))
    first = [v for v in preferred if v in present]
    return first + [v for v in present if v not in first]


def _encoding_name(encoding) -> str:
    return _ENCODING_NAMES.get(encoding, str(encoding))


def _select_train_size(frame: pd.DataFrame, train_size, keys: list[str]) -> pd.DataFrame:
    """Rows of one train size per dataset: ``"largest"``, an int, or ``None`` (all rows)."""
    if train_size is None or "train_size" not in frame.columns:
        return frame
    if train_size == "largest":
        largest = frame.groupby(keys, sort=False)["train_size"].transform("max")
        return frame[frame["train_size"] == largest]
    if isinstance(train_size, (int, np.integer)) and not isinstance(train_size, bool):
        out = frame[frame["train_size"] == train_size]
        if len(out) == 0:
            raise ValueError(
                f"no rows with train_size={train_size}; the table has train sizes "
                f"{sorted(frame['train_size'].unique().tolist())}"
            )
        return out
    raise ValueError(f"train_size must be 'largest', an int or None, got {train_size!r}")


def _bottom(values: np.ndarray, metric: str) -> float:
    """A y-axis floor that shows the differences between good predictors.

    For a percent metric, values under 0 (a failed model: the mean error is over
    100%) do not pull the floor down; :func:`_label_clipped` prints them instead.
    """
    finite = values[np.isfinite(values)]
    if metric not in _PERCENT_METRICS or len(finite) == 0:
        return min(0.0, float(finite.min())) if len(finite) else 0.0
    finite = finite[finite >= 0]
    if len(finite) == 0:
        return 0.0
    return float(max(0.0, 10.0 * math.floor((finite.min() - 3.0) / 10.0)))


def _label_clipped(ax, containers, scale: float) -> None:
    """Print the value of every bar that ends under the axis floor."""
    low = ax.get_ylim()[0]
    for bars in containers:
        for bar in bars:
            value = bar.get_height()
            if np.isfinite(value) and value < low:
                ax.annotate(
                    f"{value:.1f}" if scale == 100 else f"{value:.2f}",
                    (bar.get_x() + bar.get_width() / 2, low), xytext=(0, 3),
                    textcoords="offset points", ha="center", va="bottom", fontsize=7, rotation=90,
                )


def _top(metric: str, values) -> float | None:
    """Percent metrics end a little over the highest value, at most 101 (so the error
    bar of a wild outlier cannot squash the rest)."""
    finite = np.asarray(values, dtype=float).ravel()
    finite = finite[np.isfinite(finite)]
    if metric not in _PERCENT_METRICS or len(finite) == 0:
        return None
    return float(min(101.0, math.ceil(finite.max() + 3.0)))


def _grouped_bars(ax, table: pd.DataFrame, errors: pd.DataFrame | None, width: float = 0.8):
    """Bars of ``table`` (rows: x groups, columns: hues); returns the bar containers."""
    n_hue = max(len(table.columns), 1)
    x = np.arange(len(table.index))
    bar_width = width / n_hue
    containers = []
    cycle = matplotlib.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    for k, column in enumerate(table.columns):
        offset = (k - (n_hue - 1) / 2) * bar_width
        yerr = None
        if errors is not None and column in errors.columns:
            yerr = errors[column].to_numpy(dtype=float)
            yerr = np.where(np.isfinite(yerr), yerr, 0.0)
            if not yerr.any():  # a single repetition: no spread to show
                yerr = None
        containers.append(
            ax.bar(
                x + offset,
                table[column].to_numpy(dtype=float),
                bar_width,
                yerr=yerr,
                capsize=2 if yerr is not None else 0,
                label=str(column),
                color=cycle[k % len(cycle)],
                error_kw={"elinewidth": 0.8, "ecolor": "0.25"},
            )
        )
    ax.set_xticks(x)
    return containers


# ------------------------------------------------------------------ Fig. 3
def plot_binwise_sample_size(
    binwise: pd.DataFrame,
    *,
    metric: str = "accuracy",
    title: str | None = None,
) -> Figure:
    """Accuracy per total-depth bin for each training-set size (cf. the paper's Fig. 3).

    The paper's point: with random sampling, four times more samples barely
    help the edge depth bins, which stay rare in the training data.

    Parameters
    ----------
    binwise : pandas.DataFrame
        One row per (training size, bin, repetition), as
        :func:`esm_sklearn.metrics.binwise_accuracy` gives it plus a
        ``train_size`` column: ``train_size``, ``bin``, ``metric``; optional
        ``depth_low``/``depth_high`` (shown under the bin), ``count`` (test
        architectures in the bin), ``train_count`` (training architectures in
        the bin) and ``overall`` (the accuracy over all bins, shown in the
        legend). Repetitions (e.g. a ``seed`` column) are averaged; the error
        bars are their standard deviation.
    metric : str, default="accuracy"
        Column to plot (fractions are shown in percent).
    title : str, optional
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
        One axes with a group of bars per bin, one bar per training size.
    """
    what = "plot_binwise_sample_size"
    frame = _check_frame(binwise, ["train_size", "bin"], what)
    _check_metric(metric, frame, what)
    scale = _scale(metric)
    sizes = sorted(frame["train_size"].unique().tolist())
    grouped = frame.groupby(["bin", "train_size"])[metric]
    means = grouped.mean().unstack("train_size")[sizes] * scale
    stds = grouped.std(ddof=0).unstack("train_size")[sizes] * scale
    columns = []
    for size in sizes:
        label = f"trained on {size} samples"
        if "overall" in frame.columns:
            overall = frame.loc[frame["train_size"] == size, "overall"].mean() * scale
            label += f" (all bins: {overall:.1f}{'%' if scale == 100 else ''})"
        columns.append(label)
    means.columns = columns
    stds.columns = columns

    fig = Figure(figsize=(max(6.0, 1.4 * len(means.index) + 2.0), 4.5), layout="constrained")
    ax = fig.add_subplot()
    containers = _grouped_bars(ax, means, stds)
    labels = []
    per_bin = frame.groupby("bin")
    for b in means.index:
        rows = per_bin.get_group(b)
        text = f"bin {b}"
        if {"depth_low", "depth_high"} <= set(frame.columns):
            text += f"\ndepth {int(rows['depth_low'].iloc[0])}-{int(rows['depth_high'].iloc[0])}"
        if "count" in frame.columns:
            text += f"\ntest n={rows['count'].mean():.0f}"
        if "train_count" in frame.columns:
            counts = rows.groupby("train_size")["train_count"].mean()
            text += "\ntrain n=" + " vs ".join(f"{counts.get(s, 0):.0f}" for s in sizes)
        labels.append(text)
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_xlabel("total-depth bin")
    ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    top = _top(metric, means + stds.fillna(0))
    ax.set_ylim(_bottom(means.to_numpy(dtype=float).ravel(), metric), top)
    _label_clipped(ax, containers, scale)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncols=len(columns), loc="lower center", bbox_to_anchor=(0.5, 1.0))
    fig.suptitle(title or "Accuracy per depth bin, N vs 4N training samples (cf. ESM Fig. 3)")
    return fig


# ------------------------------------------------------------------ Fig. 8
def plot_predicted_vs_measured(
    predictions: pd.DataFrame,
    *,
    panel: str = "encoding",
    tol: float = 0.1,
    ncols: int = 3,
    title: str | None = None,
) -> Figure:
    """Predicted against measured latency, one panel per encoding (cf. the paper's Fig. 8).

    Parameters
    ----------
    predictions : pandas.DataFrame
        One row per test architecture and panel: ``y_true``, ``y_pred`` (ms)
        and the ``panel`` column; an optional ``regressor`` column is named in
        the panel titles.
    panel : str, default="encoding"
        Column whose values make the panels.
    tol : float, default=0.1
        Relative band drawn around the diagonal (and counted in the titles).
    ncols : int, default=3
        Panels per row.
    title : str, optional
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
        One axes per panel value, sharing their limits; each title gives
        1 - MAPE, the share within ``tol`` and Kendall's tau.
    """
    what = "plot_predicted_vs_measured"
    frame = _check_frame(predictions, ["y_true", "y_pred", panel], what)
    if isinstance(ncols, bool) or not isinstance(ncols, (int, np.integer)) or ncols < 1:
        raise ValueError(f"{what}: ncols must be a positive int, got {ncols!r}")
    if not (isinstance(tol, (int, float)) and 0 <= tol < 1):
        raise ValueError(f"{what}: tol must be a number in [0, 1), got {tol!r}")
    keys = _ordered(frame[panel], ENCODING_ORDER if panel == "encoding" else ())
    ncols = min(int(ncols), len(keys))
    nrows = math.ceil(len(keys) / ncols)
    y_all = frame[["y_true", "y_pred"]].to_numpy(dtype=float)
    low, high = np.nanmin(y_all), np.nanmax(y_all)
    pad = 0.04 * (high - low if high > low else max(abs(high), 1.0))
    limits = (low - pad, high + pad)

    fig = Figure(figsize=(3.6 * ncols, 3.4 * nrows + 0.5), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True)
    line = np.array(limits)
    for k, key in enumerate(keys):
        ax = axes.flat[k]
        rows = frame[frame[panel] == key]
        t, p = rows["y_true"].to_numpy(dtype=float), rows["y_pred"].to_numpy(dtype=float)
        ax.scatter(t, p, s=6, alpha=0.5, linewidths=0)
        ax.plot(line, line, color="k", lw=0.8, label="prediction = measurement")
        ax.plot(line, line * (1 + tol), color="0.4", lw=0.7, ls="--", label=f"±{tol:.0%}")
        ax.plot(line, line * (1 - tol), color="0.4", lw=0.7, ls="--")
        ax.set_xlim(limits)
        ax.set_ylim(limits)
        name = _encoding_name(key) if panel == "encoding" else str(key)
        if "regressor" in rows.columns and rows["regressor"].nunique() == 1:
            name += f" + {rows['regressor'].iloc[0]}"
        ax.set_title(
            f"{name}\nacc {latency_accuracy(t, p):.1%}, ±{tol:.0%}: "
            f"{within_accuracy(t, p, tol):.0%}, tau {kendall_tau(t, p):.2f}",
            fontsize=9,
        )
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(keys):]:
        ax.set_visible(False)
    for ax in axes[-1, :]:
        ax.set_xlabel("measured latency (ms)")
    for ax in axes[:, 0]:
        ax.set_ylabel("predicted latency (ms)")
    axes.flat[0].legend(fontsize=7, loc="upper left")
    fig.suptitle(title or "Predicted vs measured latency per encoding (cf. ESM Fig. 8)")
    return fig


# ------------------------------------------------------------------ Fig. 9
def plot_encoding_accuracy(
    results: pd.DataFrame,
    *,
    metric: str = "accuracy",
    hue: str | None = "regressor",
    train_size: int | str | None = "largest",
    title: str | None = None,
) -> Figure:
    """Average accuracy of each encoding over datasets (cf. the paper's Fig. 9).

    Parameters
    ----------
    results : pandas.DataFrame
        One row per (dataset, encoding, regressor, train size), e.g. the
        ``comparison.csv`` of ``studies/compare_encodings.py``: ``dataset``,
        ``encoding``, ``metric``; optional ``device`` (part of the dataset key),
        ``train_size`` and the ``hue`` column. Rows repeated for a key (e.g.
        seeds) are averaged first, so every dataset weighs the same.
    metric : str, default="accuracy"
        Column to plot (fractions are shown in percent).
    hue : str or None, default="regressor"
        Column giving one bar per value in each encoding's group; ``None``
        averages over it.
    train_size : "largest", int or None, default="largest"
        Which training-set size to use per dataset (``None``: all rows).
    title : str, optional
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
        One axes; bars are means over datasets, error bars their standard
        deviation; each tick says over how many datasets.

    Examples
    --------
    >>> import pandas as pd
    >>> results = pd.DataFrame({"dataset": ["a", "a", "b", "b"], "encoding": ["fcc", "stat"] * 2,
    ...                         "regressor": "mlp", "accuracy": [0.95, 0.90, 0.97, 0.88]})
    >>> fig = plot_encoding_accuracy(results)
    >>> [round(float(bar.get_height()), 1) for bar in fig.axes[0].patches]
    [96.0, 89.0]
    >>> fig.savefig("fig9.png")  # doctest: +SKIP
    """
    what = "plot_encoding_accuracy"
    required = ["dataset", "encoding"] + ([hue] if hue else [])
    frame = _check_frame(results, required, what)
    _check_metric(metric, frame, what)
    keys = ["dataset"] + (["device"] if "device" in frame.columns else [])
    frame = _select_train_size(frame, train_size, keys)
    hue_col = hue or "_all"
    frame = frame.assign(_all="all") if hue is None else frame
    per_dataset = frame.groupby(keys + ["encoding", hue_col], sort=False)[metric].mean().reset_index()
    grouped = per_dataset.groupby(["encoding", hue_col], sort=False)[metric]
    encodings = _ordered(per_dataset["encoding"], ENCODING_ORDER)
    hues = _ordered(per_dataset[hue_col], ("mlp",))
    scale = _scale(metric)
    means = grouped.mean().unstack(hue_col).reindex(index=encodings, columns=hues) * scale
    stds = grouped.std(ddof=0).unstack(hue_col).reindex(index=encodings, columns=hues) * scale
    counts = per_dataset.drop_duplicates(keys + ["encoding"]).groupby("encoding").size()

    fig = Figure(figsize=(max(6.0, 0.35 * means.size + 2.5), 4.5), layout="constrained")
    ax = fig.add_subplot()
    bottom = _bottom(means.to_numpy(dtype=float).ravel(), metric)
    # A mean under the axis floor shows only as its printed value, without error bar.
    stds = stds.where(means >= bottom, 0.0)
    containers = _grouped_bars(ax, means, stds)
    ax.set_ylim(bottom, _top(metric, means + stds.fillna(0)))
    low, high = ax.get_ylim()
    for bars in containers:
        for bar in bars:
            value = bar.get_height()
            if np.isfinite(value):
                # Inside the bar, at its foot: clear of the error bars; a value under
                # the axis floor is still printed there.
                inside = value > low + 0.15 * (high - low)
                ax.annotate(
                    f"{value:.1f}" if scale == 100 else f"{value:.2f}",
                    (bar.get_x() + bar.get_width() / 2, low),
                    xytext=(0, 3), textcoords="offset points", ha="center", va="bottom",
                    fontsize=7, rotation=90, color="white" if inside else "black",
                )
    ax.set_xticklabels(
        [f"{_encoding_name(e)}\n({counts.get(e, 0)} datasets)" for e in encodings], fontsize=8
    )
    ax.set_xlabel("encoding")
    ax.set_ylabel(METRIC_LABELS.get(metric, metric) + ", mean over datasets")
    ax.grid(axis="y", alpha=0.3)
    if hue is not None:
        ax.legend(title=hue, fontsize=8, title_fontsize=8, ncols=min(len(hues), 6),
                  loc="lower center", bbox_to_anchor=(0.5, 1.0))
    size_note = {"largest": ", largest train size per dataset", None: ""}.get(
        train_size, f", train size {train_size}"
    )
    fig.suptitle(title or f"Average accuracy per encoding (cf. ESM Fig. 9){size_note}")
    return fig


# ----------------------------------------------------------------- Fig. 10
def plot_device_accuracy(
    results: pd.DataFrame,
    *,
    metric: str = "accuracy",
    regressor: str | None = "mlp",
    train_size: int | str | None = "largest",
    title: str | None = None,
) -> Figure:
    """Accuracy per dataset/device and encoding, grouped bars (cf. the paper's Fig. 10).

    Parameters
    ----------
    results : pandas.DataFrame
        As for :func:`plot_encoding_accuracy`: ``dataset``, ``encoding``,
        ``metric``; optional ``device``, ``regressor``, ``train_size``.
    metric : str, default="accuracy"
        Column to plot (fractions are shown in percent).
    regressor : str or None, default="mlp"
        Keep only this regressor's rows (``None``: all rows, averaged).
    train_size : "largest", int or None, default="largest"
        Which training-set size to use per dataset (``None``: all rows).
    title : str, optional
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
        One axes with a group per dataset/device and a bar per encoding.
    """
    what = "plot_device_accuracy"
    frame = _check_frame(results, ["dataset", "encoding"], what)
    _check_metric(metric, frame, what)
    if regressor is not None:
        if "regressor" not in frame.columns:
            raise ValueError(f"{what}: regressor={regressor!r} needs a 'regressor' column")
        available = frame["regressor"].unique().tolist()
        frame = frame[frame["regressor"] == regressor]
        if len(frame) == 0:
            raise ValueError(f"{what}: no rows of regressor {regressor!r}; the table has {available}")
    keys = ["dataset"] + (["device"] if "device" in frame.columns else [])
    frame = _select_train_size(frame, train_size, keys)
    scale = _scale(metric)
    table = frame.groupby(keys + ["encoding"], sort=False)[metric].mean().unstack("encoding")
    encodings = _ordered(frame["encoding"], ENCODING_ORDER)
    table = table.reindex(columns=encodings) * scale
    table.columns = [_encoding_name(e) for e in encodings]
    labels = []
    for key in table.index:
        key = key if isinstance(key, tuple) else (key,)
        # A device already named in the dataset (h200_resnet_b1, device h200) is not repeated.
        text = "\n".join(
            str(k) for j, k in enumerate(key) if j == 0 or str(k) not in str(key[0])
        )
        if "train_size" in frame.columns:
            sizes = frame.loc[(frame[keys] == list(key)).all(axis=1), "train_size"].unique()
            text += "\nN=" + "/".join(str(int(s)) for s in sorted(sizes))
        labels.append(text)

    fig = Figure(figsize=(max(7.0, 1.1 * len(table.index) + 2.0), 5.0), layout="constrained")
    ax = fig.add_subplot()
    containers = _grouped_bars(ax, table, None)
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_xlabel("dataset / device (training samples)")
    ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    ax.set_ylim(_bottom(table.to_numpy(dtype=float).ravel(), metric), _top(metric, table))
    _label_clipped(ax, containers, scale)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(title="encoding", fontsize=8, title_fontsize=8, ncols=min(len(encodings), 6),
              loc="lower center", bbox_to_anchor=(0.5, 1.0))
    who = f"{regressor} regressor" if regressor is not None else "all regressors"
    fig.suptitle(title or f"Accuracy per device and encoding, {who} (cf. ESM Fig. 10)")
    return fig


# ----------------------------------------------------------------- Fig. 11
def plot_convergence(
    history: pd.DataFrame,
    *,
    metric: str = "worst_bin",
    x: str = "n_samples",
    hue: str = "strategy",
    panel: str | None = "dataset",
    ncols: int = 3,
    title: str | None = None,
) -> Figure:
    """Accuracy against training samples during the train-evaluate-extend loop (cf. ESM Fig. 11).

    Parameters
    ----------
    history : pandas.DataFrame
        One row per training round of a run, e.g. the ``history_`` of
        :class:`~esm_sklearn.ActiveLatencyEstimator` runs stacked: ``x``
        (training samples), ``metric``, ``hue`` (the sampling strategy) and,
        when given, ``panel`` (the dataset); a ``seed`` column tells the runs of
        one strategy apart (one line each). An optional ``threshold`` column
        (in the unit of ``metric``, per run) is drawn as dashed lines (one per
        distinct value in a panel), and the last round of each run is marked:
        a filled dot when ``metric`` reaches that run's threshold there, an
        open one otherwise.
    metric : str, default="worst_bin"
        Column on the y axis (fractions are shown in percent).
    x : str, default="n_samples"
        Column on the x axis.
    hue : str, default="strategy"
        Column giving the line colours.
    panel : str or None, default="dataset"
        Column giving one axes per value (None: a single axes).
    ncols : int, default=3
        Panels per row.
    title : str, optional
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import pandas as pd
    >>> history = pd.DataFrame({
    ...     "dataset": "a", "strategy": ["balanced"] * 2 + ["random"] * 3, "seed": 0,
    ...     "n_samples": [300, 400, 300, 400, 500], "threshold": 0.9,
    ...     "worst_bin": [0.85, 0.91, 0.80, 0.84, 0.86]})
    >>> fig = plot_convergence(history)
    >>> len(fig.axes[0].lines)  # two runs, their end markers and the threshold
    5
    """
    what = "plot_convergence"
    required = [x, hue] + ([panel] if panel else [])
    frame = _check_frame(history, required, what)
    _check_metric(metric, frame, what)
    if isinstance(ncols, bool) or not isinstance(ncols, (int, np.integer)) or ncols < 1:
        raise ValueError(f"{what}: ncols must be a positive int, got {ncols!r}")
    frame = frame.assign(_panel="all") if panel is None else frame
    panel_col = panel or "_panel"
    keys = _ordered(frame[panel_col])
    hues = _ordered(frame[hue], ("balanced", "random"))
    cycle = matplotlib.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    colors = {h: cycle[k % len(cycle)] for k, h in enumerate(hues)}
    run_cols = [c for c in ("seed",) if c in frame.columns]
    scale = _scale(metric)
    ncols = min(int(ncols), len(keys))
    nrows = math.ceil(len(keys) / ncols)

    fig = Figure(figsize=(4.2 * ncols, 3.4 * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for k, key in enumerate(keys):
        ax = axes.flat[k]
        rows = frame[frame[panel_col] == key]
        has_threshold = "threshold" in rows.columns and rows["threshold"].notna().any()
        if has_threshold:
            for value in sorted(rows["threshold"].dropna().unique()):
                ax.axhline(float(value) * scale, color="0.3", lw=0.8, ls="--")
        for h in hues:
            runs = rows[rows[hue] == h]
            groups = runs.groupby(run_cols, sort=True) if run_cols else [(None, runs)]
            for j, (_, run) in enumerate(groups):
                run = run.sort_values(x)
                xs = run[x].to_numpy(dtype=float)
                ys = run[metric].to_numpy(dtype=float) * scale
                ax.plot(xs, ys, color=colors[h], lw=1.0, alpha=0.8,
                        label=str(h) if j == 0 else None)
                # Each run is judged against its own threshold (runs may differ).
                own = run["threshold"].dropna() if has_threshold else ()
                reached = len(own) > 0 and ys[-1] >= float(own.iloc[-1]) * scale
                ax.plot(xs[-1:], ys[-1:], "o", ms=5, color=colors[h],
                        markerfacecolor=colors[h] if reached else "white")
        ax.set_title(str(key), fontsize=9)
        ax.set_xlabel("training samples" if x == "n_samples" else x)
        ax.set_ylabel(METRIC_LABELS.get(metric, metric), fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    for ax in axes.flat[len(keys):]:
        ax.set_visible(False)
    fig.suptitle(title or "Convergence of the train-evaluate-extend loop (cf. ESM Fig. 11); "
                 "dashed: threshold, dot: end of a run (filled: threshold reached)", fontsize=10)
    return fig


__all__.append("plot_convergence")
