"""What the ``esm-sklearn`` command prints and draws (used only by :mod:`esm_sklearn.cli`)."""

from __future__ import annotations

import sys
from pathlib import Path

from ._cli_io import _atomic_write

# A held-out test set smaller than this gives accuracies and a Kendall tau that
# are mostly noise.
_MIN_TEST = 25


def _qc_line(check) -> str:
    verdict = "passed" if check.passed else "FAILED"
    spreads = ", ".join(
        f"ref {int(r.ref_id)}: {getattr(r, check.statistic):.2%} ({int(r.n_rounds)} rounds)"
        for r in check.spread.itertuples()
    )
    return f"QC {verdict} ({check.statistic} threshold {check.threshold:.1%}): {spreads}"


def _pct(value) -> str:
    return "   n/a" if value != value else f"{100 * value:5.1f}%"


def _format_bins(table, threshold=None, train_counts=None) -> str:
    """The per-bin accuracy table as text (``table`` from :func:`binwise_accuracy`)."""
    header = "  bin  depth    test n  train n" if train_counts is not None else "  bin  depth         n"
    lines = [header + "  accuracy  within 10%"]
    for row in table.itertuples():
        acc = row.accuracy
        flag = "  < threshold" if threshold is not None and acc == acc and acc < threshold else ""
        train = f"  {int(train_counts[row.bin]):7d}" if train_counts is not None else ""
        lines.append(
            f"  {row.bin:3d}  {row.depth_low:3d}-{row.depth_high:<3d}  {row.count:6d}{train}"
            f"    {_pct(acc)}      {_pct(row.within_10)}{flag}"
        )
    return "\n".join(lines)


def _format_history(history, n_bins: int) -> str:
    lines = ["  iter  samples  added  accuracy  worst bin  " + " ".join(
        f"bin{b:<3d}" for b in range(n_bins)) + "  below      measure s  fit s"]
    for row in history.to_dict("records"):
        accs = [row[f"acc_bin{b}"] for b in range(n_bins)]
        finite = [a for a in accs if a == a]
        worst = min(finite) if finite else float("nan")
        below = ",".join(str(b) for b in row["below_bins"]) or "-"
        lines.append(
            f"  {row['iteration']:4d}  {row['n_samples']:7d}  {row['n_added']:5d}    "
            f"{_pct(row['accuracy'])}     {_pct(worst)}  "
            + " ".join(_pct(a) for a in accs)
            + f"  {below:9s}  {row['measure_seconds']:8.1f}  {row['fit_seconds']:5.1f}"
        )
    return "\n".join(lines)


def _scores_line(y_true, y_pred) -> str:
    from .metrics import kendall_tau, latency_accuracy, rmse, within_accuracy

    return (f"accuracy (1 - MAPE) {_pct(latency_accuracy(y_true, y_pred)).strip()}, "
            f"within +-10% {_pct(within_accuracy(y_true, y_pred, 0.1)).strip()}, "
            f"Kendall tau {kendall_tau(y_true, y_pred):.3f}, RMSE {rmse(y_true, y_pred):.4g} ms")


def _warn_small_test(n_test: int) -> None:
    if n_test < _MIN_TEST:
        print(f"WARNING: the held-out test set has only {n_test} architecture(s) (fewer than "
              f"{_MIN_TEST}): its accuracy and Kendall tau are mostly noise; measure or replay "
              "more architectures, or give --n-test", file=sys.stderr, flush=True)


def _write_plots(folder: Path, y_true, y_pred, bins, label: str, train_size=None,
                 train_counts=None, history=None, threshold=None) -> list[Path]:
    """The figures of a fit or an evaluation (esm_sklearn.plotting) as PNG files."""
    import matplotlib

    matplotlib.use("Agg")
    import pandas as pd

    from .plotting import plot_binwise_sample_size, plot_convergence, plot_predicted_vs_measured

    folder.mkdir(parents=True, exist_ok=True)
    figures = {"predicted_vs_measured.png": plot_predicted_vs_measured(
        pd.DataFrame({"y_true": y_true, "y_pred": y_pred, "encoding": label}),
        title=f"predicted vs measured ({len(y_true)} architectures)")}
    from .metrics import latency_accuracy

    binwise = bins.assign(train_size=train_size if train_size is not None
                          else "an unknown number of",
                          overall=latency_accuracy(y_true, y_pred))
    if train_counts is not None:
        binwise["train_count"] = [int(train_counts[b]) for b in binwise["bin"]]
    figures["binwise_accuracy.png"] = plot_binwise_sample_size(binwise, title="accuracy per depth bin")
    if history is not None and len(history):
        acc_cols = [c for c in history.columns if c.startswith("acc_bin")]
        frame = pd.DataFrame({"n_samples": history["n_samples"],
                              "worst_bin": history[acc_cols].min(axis=1, skipna=True),
                              "strategy": label})
        if threshold is not None:
            frame["threshold"] = threshold
        figures["convergence.png"] = plot_convergence(frame, panel=None,
                                                      title="worst-bin accuracy per round")
    written = []
    for name, fig in figures.items():
        path = folder / name
        _atomic_write(path, lambda tmp, fig=fig: fig.savefig(tmp, dpi=120))
        written.append(path)
    return written


_STOP = {"threshold_reached": "every bin reached the threshold",
         "plateau": "the accuracy stopped improving",
         "max_iter": "--max-iter reached", "max_samples": "--max-samples reached",
         "pool_exhausted": "no candidate architecture left"}
