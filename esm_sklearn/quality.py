"""Quality control of latency datasets through repeated reference timings.

A few fixed *reference* architectures are timed before the collection, every
``check_every`` architectures and at the end (one *QC round* each time). If the
device's speed drifts (clock, temperature, a busy host CPU at batch size 1),
the references drift with it.

Spread of a reference (the statistic of the paper's quality test, "reference
variance <= 3%"): the **coefficient of variation** of its latency across QC
rounds, ``cv = std / mean`` with ``ddof=0``. A dataset passes when every
reference's cv is at most the threshold (0.03). The maximum relative deviation
``(max - min) / mean`` is reported as well and may be chosen as the statistic.

:class:`ReferenceMonitor` runs the rounds during a collection: a round at the
start, one after every batch, and the batch timed again while its closing round
fails.

Beyond the paper, :func:`drift_correct` divides each measurement by the drift
level interpolated between the QC rounds around it, and
:func:`reference_spread_after_correction` measures, leave-one-reference-out,
how much such a correction would reduce the spread of the references.

Input tables use the format of ``shared/datasets/h200/*_references.csv``:
``ref_id``, ``round``, ``latency_ms`` and optionally ``run``, ``space``,
``batch_size``, ``after_arch_id``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["ReferenceCheck", "ReferenceMonitor", "check_references", "reference_spread",
           "drift_levels", "drift_correct", "reference_spread_after_correction", "STATISTICS"]

STATISTICS = ("cv", "max_rel_dev")
# Columns that tell reference architectures apart besides ref_id (ref 0 of a
# ResNet file is not ref 0 of a DenseNet file).
_IDENTITY_COLUMNS = ("space", "batch_size")
_TIMING_COLUMNS = ("latency_ms", "median_ms", "min_ms", "p90_ms", "std_ms")


@dataclass
class ReferenceCheck:
    """Outcome of :func:`check_references`.

    Attributes
    ----------
    passed : bool
        True when every reference's ``statistic`` is at most ``threshold``.
    threshold : float
        The allowed spread (0.03 = the paper's 3%).
    spread : pandas.DataFrame
        One row per reference (per ``run`` when the table has runs): the group
        columns, ``n_rounds``, ``mean_ms``, ``min_ms``, ``max_ms``, ``cv``,
        ``max_rel_dev`` and ``passed``.
    statistic : str
        ``"cv"`` or ``"max_rel_dev"``: the column compared with the threshold.
    """

    passed: bool
    threshold: float
    spread: pd.DataFrame
    statistic: str

    def __bool__(self) -> bool:
        return bool(self.passed)

    @property
    def worst(self) -> float:
        """The largest spread over the references."""
        return float(self.spread[self.statistic].max())

    def __str__(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        n_bad = int((~self.spread["passed"]).sum())
        return (f"reference check {verdict}: worst {self.statistic} {self.worst:.2%} "
                f"(threshold {self.threshold:.2%}), {n_bad}/{len(self.spread)} references over")


def _frame_from_rounds(data: Mapping) -> pd.DataFrame:
    rows = []
    for rnd, values in data.items():
        items = values.items() if isinstance(values, Mapping) else enumerate(values)
        for ref_id, lat in items:
            rows.append({"ref_id": ref_id, "round": rnd, "latency_ms": lat})
    return pd.DataFrame(rows, columns=["ref_id", "round", "latency_ms"])


def _as_int_column(df: pd.DataFrame, name: str, what: str) -> None:
    values = pd.to_numeric(df[name], errors="coerce")
    bad = values.isna() | (values != np.round(values))
    if bad.any():
        raise ValueError(f"{what}: column {name!r} must hold integers, "
                         f"got {df.loc[bad, name].iloc[0]!r} in row {df.index[bad][0]}")
    df[name] = values.astype("int64")


def _describe(keys: tuple, names: list[str]) -> str:
    return ", ".join(f"{n}={v}" for n, v in zip(names, keys, strict=True))


def _clean_references(frame, min_rounds: int = 2, what: str = "references"):
    """Validated copy of a references table, with its group columns.

    Returns ``(df, ref_cols, group_cols)``: ``ref_cols`` identify a reference
    architecture (``space``, ``batch_size`` when present, ``ref_id``);
    ``group_cols`` add ``run`` when present.
    """
    if isinstance(frame, Mapping):
        frame = _frame_from_rounds(frame)
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"{what} must be a DataFrame in the *_references.csv format or a "
                         f"dict {{round: latencies}}, got {type(frame).__name__}")
    missing = [c for c in ("ref_id", "round", "latency_ms") if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} table lacks the column(s) {missing}; "
                         f"it has {list(frame.columns)}")
    if len(frame) == 0:
        raise ValueError(f"{what} table is empty")
    df = frame.copy()
    _as_int_column(df, "ref_id", what)
    _as_int_column(df, "round", what)
    if "run" in df.columns:
        _as_int_column(df, "run", what)
    if "after_arch_id" in df.columns:
        _as_int_column(df, "after_arch_id", what)
    ref_cols = [c for c in _IDENTITY_COLUMNS if c in df.columns] + ["ref_id"]
    group_cols = (["run"] if "run" in df.columns else []) + ref_cols

    lat = pd.to_numeric(df["latency_ms"], errors="coerce")
    bad = ~(np.isfinite(lat) & (lat > 0))
    if bad.any():
        row = df.loc[bad].iloc[0]
        where = _describe(tuple(row[group_cols + ["round"]]), group_cols + ["round"])
        raise ValueError(f"{what}: column 'latency_ms' must be positive and finite, got "
                         f"{row['latency_ms']!r} for {where}")
    df["latency_ms"] = lat.astype("float64")

    dup = df.duplicated(group_cols + ["round"], keep=False)
    if dup.any():
        row = df.loc[dup].iloc[0]
        where = _describe(tuple(row[group_cols + ["round"]]), group_cols + ["round"])
        raise ValueError(f"{what}: more than one timing for {where}; one row per "
                         f"reference and round is expected")
    counts = df.groupby(group_cols, sort=True, dropna=False)["round"].nunique()
    few = counts[counts < min_rounds]
    if len(few):
        keys = few.index[0] if isinstance(few.index[0], tuple) else (few.index[0],)
        raise ValueError(f"{what}: reference {_describe(keys, group_cols)} has "
                         f"{int(few.iloc[0])} round(s); at least {min_rounds} are needed")
    return df, ref_cols, group_cols


def _spread_of(df: pd.DataFrame, group_cols: list[str], column: str = "latency_ms"):
    g = df.groupby(group_cols, sort=True, dropna=False)[column]
    out = pd.DataFrame({
        "n_rounds": g.size(),
        "mean_ms": g.mean(),
        "min_ms": g.min(),
        "max_ms": g.max(),
        "cv": g.std(ddof=0) / g.mean(),
        "max_rel_dev": (g.max() - g.min()) / g.mean(),
    })
    return out.reset_index()


def reference_spread(latencies_by_round, min_rounds: int = 2) -> pd.DataFrame:
    """Spread of each reference's latency across QC rounds.

    Parameters
    ----------
    latencies_by_round : pandas.DataFrame or dict
        A table in the ``*_references.csv`` format, or ``{round: latencies}``
        where ``latencies`` is a list (index = ref_id) or a ``{ref_id: ms}`` dict.
    min_rounds : int, default 2
        Fewest rounds a reference must have (ValueError otherwise).

    Returns
    -------
    pandas.DataFrame
        One row per reference (and run): ``n_rounds``, ``mean_ms``, ``min_ms``,
        ``max_ms``, ``cv`` (std/mean, ddof=0) and ``max_rel_dev`` ((max-min)/mean).

    Examples
    --------
    >>> reference_spread({0: [10.0, 5.0], 1: [10.2, 5.0]})[["ref_id", "cv"]].round(3)
       ref_id    cv
    0       0  0.01
    1       1  0.00
    """
    df, _, group_cols = _clean_references(latencies_by_round, min_rounds=min_rounds)
    return _spread_of(df, group_cols)


def check_references(frame, threshold: float = 0.03, statistic: str = "cv") -> ReferenceCheck:
    """The paper's dataset quality test on repeated reference timings.

    Parameters
    ----------
    frame : pandas.DataFrame or dict
        Reference timings in the ``shared/datasets/h200/*_references.csv``
        format (columns ``ref_id``, ``round``, ``latency_ms``; optional ``run``,
        ``space``, ``batch_size``), or ``{round: latencies}``. References are
        grouped per ``run`` when the column exists.
    threshold : float, default 0.03
        Largest allowed spread (the paper's 3%).
    statistic : {"cv", "max_rel_dev"}, default "cv"
        Spread measure compared with the threshold: coefficient of variation
        across rounds (std/mean, ddof=0) or (max-min)/mean.

    Returns
    -------
    ReferenceCheck
        ``passed`` and the per-reference ``spread`` table; truthy when passed.

    Raises
    ------
    ValueError
        Missing columns, a reference with fewer than 2 rounds, a non-positive
        latency or a duplicated (reference, round); the message names it.

    Examples
    --------
    >>> check = check_references({0: [10.0, 5.0], 1: [10.1, 5.0], 2: [9.9, 5.1]})
    >>> check.passed, round(check.worst, 4)
    (True, 0.0094)
    """
    if statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {STATISTICS}, got {statistic!r}")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating)) \
            or not np.isfinite(threshold) or threshold <= 0:
        raise ValueError(f"threshold must be a positive number, got {threshold!r}")
    spread = reference_spread(frame, min_rounds=2)
    spread["passed"] = spread[statistic] <= threshold
    return ReferenceCheck(passed=bool(spread["passed"].all()), threshold=float(threshold),
                          spread=spread, statistic=statistic)


def _relative(df: pd.DataFrame, ref_cols: list[str], baseline: str) -> pd.Series:
    """log(latency / that reference's median over rounds)."""
    if baseline not in ("pooled", "run"):
        raise ValueError(f"baseline must be 'pooled' or 'run', got {baseline!r}")
    keys = ref_cols if baseline == "pooled" or "run" not in df.columns else ["run", *ref_cols]
    median = df.groupby(keys, dropna=False)["latency_ms"].transform("median")
    return np.log(df["latency_ms"] / median)


def drift_levels(references, baseline: str = "pooled") -> pd.DataFrame:
    """Drift level of each QC round.

    The level of a round is the geometric mean over the references of
    ``latency in that round / that reference's median over rounds``: 1 when the
    device is as fast as usual, 1.2 when everything takes 20% longer.

    Parameters
    ----------
    references : pandas.DataFrame
        ``*_references.csv`` format, with ``after_arch_id``.
    baseline : {"pooled", "run"}, default "pooled"
        Median of a reference over the rounds of all runs (one scale for the
        whole table: runs collected on a slower day are corrected too) or of
        its own run only.

    Returns
    -------
    pandas.DataFrame
        One row per (run, round): ``run`` (when present), ``round``,
        ``after_arch_id``, ``level``, ``n_refs``.
    """
    df, ref_cols, _ = _clean_references(references, min_rounds=1)
    if "after_arch_id" not in df.columns:
        raise ValueError("references table lacks the column 'after_arch_id' (position of "
                         "each QC round among the measured architectures)")
    df["log_rel"] = _relative(df, ref_cols, baseline)
    keys = (["run"] if "run" in df.columns else []) + ["round"]
    g = df.groupby(keys, sort=True, dropna=False)
    pos = g["after_arch_id"].agg(["min", "max"])
    bad = pos[pos["min"] != pos["max"]]
    if len(bad):
        k = bad.index[0] if isinstance(bad.index[0], tuple) else (bad.index[0],)
        raise ValueError(f"references: QC round {_describe(k, keys)} has different "
                         f"after_arch_id values {int(bad['min'].iloc[0])} and "
                         f"{int(bad['max'].iloc[0])}")
    out = pd.DataFrame({"after_arch_id": pos["min"], "level": np.exp(g["log_rel"].mean()),
                        "n_refs": g.size()})
    return out.reset_index()


def _interpolated_levels(levels: pd.DataFrame, order: np.ndarray) -> np.ndarray:
    # Rounds timed back to back (same position) are merged by geometric mean.
    merged = levels.assign(log_level=np.log(levels["level"])).groupby("after_arch_id")[
        "log_level"].mean().sort_index()
    return np.interp(order, merged.index.to_numpy(dtype=float), np.exp(merged.to_numpy()))


def drift_correct(table: pd.DataFrame, references: pd.DataFrame, baseline: str = "pooled",
                  columns=_TIMING_COLUMNS) -> pd.DataFrame:
    """Divide each measurement by the reference drift level around it.

    For every QC round a drift level is computed (:func:`drift_levels`). An
    architecture with position ``order`` measured between rounds r and r+1
    (``after_arch_id`` a_r < order <= a_{r+1}) gets the level linearly
    interpolated between the two rounds' levels (the first/last level before
    the first/after the last round), separately per ``run``; its timings are
    divided by that ``drift_factor``.

    Parameters
    ----------
    table : pandas.DataFrame
        Measurements in the H200 format (``order``, ``latency_ms``; ``run``
        when the references have several runs).
    references : pandas.DataFrame
        The matching ``*_references.csv`` table (with ``after_arch_id`` on
        the scale of ``order``).
    baseline : {"pooled", "run"}, default "pooled"
        See :func:`drift_levels`.
    columns : sequence of str
        Timing columns to divide (those present in ``table``); ``latency_ms``
        is required.

    Returns
    -------
    pandas.DataFrame
        A copy of ``table`` with corrected timings and a ``drift_factor`` column.
    """
    if not isinstance(table, pd.DataFrame):
        raise ValueError(f"table must be a DataFrame, got {type(table).__name__}")
    missing = [c for c in ("order", "latency_ms") if c not in table.columns]
    if missing:
        raise ValueError(f"table lacks the column(s) {missing}; it has {list(table.columns)}")
    levels = drift_levels(references, baseline=baseline)
    out = table.copy()
    lat = pd.to_numeric(out["latency_ms"], errors="coerce")
    bad = ~(np.isfinite(lat) & (lat > 0))
    if bad.any():
        raise ValueError(f"table: 'latency_ms' must be positive and finite, got "
                         f"{out.loc[bad, 'latency_ms'].iloc[0]!r} in row {out.index[bad][0]}")
    order = pd.to_numeric(out["order"], errors="coerce")
    if order.isna().any():
        raise ValueError(f"table: 'order' must be numeric, got "
                         f"{out.loc[order.isna(), 'order'].iloc[0]!r} in row "
                         f"{out.index[order.isna()][0]}")
    factor = np.full(len(out), np.nan)
    ref_runs = sorted(levels["run"].unique()) if "run" in levels.columns else None
    table_runs = out["run"].to_numpy() if "run" in out.columns else None
    if ref_runs is None or table_runs is None:
        if ref_runs is not None and len(ref_runs) > 1:
            raise ValueError(f"references have runs {ref_runs} but the table has no 'run' "
                             f"column to tell which reference rounds surround each row")
        if table_runs is not None and len(np.unique(table_runs)) > 1:
            raise ValueError(f"table has runs {sorted(np.unique(table_runs))} but the "
                             f"references have no 'run' column")
        factor[:] = _interpolated_levels(levels, order.to_numpy(dtype=float))
    else:
        for run in np.unique(table_runs):
            mask = table_runs == run
            lv = levels[levels["run"] == run]
            if lv.empty:
                raise ValueError(f"table has rows of run {run} but the references have no "
                                 f"QC round for it (runs {ref_runs})")
            factor[mask] = _interpolated_levels(lv, order.to_numpy(dtype=float)[mask])
    for name in columns:
        if name in out.columns:
            out[name] = pd.to_numeric(out[name], errors="coerce") / factor
    out["drift_factor"] = factor
    return out


def reference_spread_after_correction(references: pd.DataFrame, baseline: str = "pooled",
                                      threshold: float = 0.03) -> pd.DataFrame:
    """Spread of each reference before and after leave-one-out drift correction.

    Correcting the references with a level computed from themselves would
    flatten them by construction. Instead reference i in round r is divided by
    the level of round r computed from the *other* references only; the
    remaining spread measures how well the common drift explains each
    reference, which is what drift correction can do for the other
    architectures.

    Parameters
    ----------
    references : pandas.DataFrame
        ``*_references.csv`` format, at least 2 references and 2 rounds each.
    baseline : {"pooled", "run"}, default "pooled"
        See :func:`drift_levels`.
    threshold : float, default 0.03
        Used for the ``passed_before`` / ``passed_after`` columns (cv).

    Returns
    -------
    pandas.DataFrame
        One row per reference (and run): ``n_rounds``, ``cv_before``,
        ``cv_after``, ``max_rel_dev_before``, ``max_rel_dev_after``,
        ``passed_before``, ``passed_after``.
    """
    df, ref_cols, group_cols = _clean_references(references, min_rounds=2)
    df["log_rel"] = _relative(df, ref_cols, baseline)
    round_keys = (["run"] if "run" in df.columns else []) + [
        c for c in _IDENTITY_COLUMNS if c in df.columns] + ["round"]
    g = df.groupby(round_keys, dropna=False)["log_rel"]
    total, count = g.transform("sum"), g.transform("size")
    if (count < 2).any():
        row = df.loc[count < 2].iloc[0]
        raise ValueError(f"references: round {_describe(tuple(row[round_keys]), round_keys)} "
                         f"has a single reference; leave-one-out needs at least 2")
    loo_level = np.exp((total - df["log_rel"]) / (count - 1))
    df["corrected_ms"] = df["latency_ms"] / loo_level
    before = _spread_of(df, group_cols, "latency_ms")
    after = _spread_of(df, group_cols, "corrected_ms")
    out = before[group_cols + ["n_rounds"]].copy()
    out["cv_before"], out["cv_after"] = before["cv"], after["cv"]
    out["max_rel_dev_before"] = before["max_rel_dev"]
    out["max_rel_dev_after"] = after["max_rel_dev"]
    out["passed_before"] = out["cv_before"] <= threshold
    out["passed_after"] = out["cv_after"] <= threshold
    return out


# ------------------------------------------------------------ reference monitor
def _repeated(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of references timed in at least two rounds (others cannot be judged yet)."""
    if not len(frame):
        return frame
    rounds = frame.groupby("ref_id")["round"].transform("nunique")
    return frame[rounds.to_numpy() >= 2]


class ReferenceMonitor:
    """Quality control by repeated timings of reference architectures.

    Every QC round times each reference once (``timer``) and computes the spread
    of every reference across the rounds that passed so far plus this one, with
    :func:`check_references` (coefficient of variation, ``std / mean`` with
    ddof 0); a reference with one round so far (the first round, or one added
    to an older collection) is not judged yet. :meth:`run` times a round at the
    start and after every batch, which is timed again (up to ``max_retries``
    times) while its closing round fails. Every round is recorded in :attr:`rounds` (and passed to
    ``on_round``), passing or not.

    Parameters
    ----------
    references : sequence
        Reference architectures (anything ``timer`` accepts).
    timer : callable
        ``timer(ref_id, reference) -> float or dict`` giving the latency in ms
        (a dict needs ``latency_ms`` and may hold more statistics).
    threshold : float
        Largest allowed spread (0.03: the paper's 3%).
    max_retries : int
        How many times a batch is timed again after a failing round.
    history : DataFrame, optional
        Reference rows of earlier sessions (columns ``ref_id``, ``round``,
        ``latency_ms`` and optionally ``passed`` and ``final``); rounds that
        passed are the baseline of the new ones, numbering continues after them.
    on_round : callable, optional
        ``on_round(rows, outcome)`` after each round, with the round's reference
        rows (dicts) and its outcome dict (e.g. to write them to a store).

    Examples
    --------
    >>> levels = iter([1.0, 1.0, 1.3, 1.0])
    >>> monitor = ReferenceMonitor(["ref"], lambda i, r: next(levels), max_retries=1)
    >>> done = []
    >>> _ = monitor.run([["a", "b"], ["c"]], lambda b, batch, retry: done.append((b, retry)))
    >>> done
    [(0, 0), (1, 0), (1, 1)]
    >>> [o["passed"] for o in monitor.rounds]
    [True, True, False, True]
    """

    def __init__(self, references: Sequence, timer: Callable, threshold: float = 0.03,
                 max_retries: int = 2, history: pd.DataFrame | None = None,
                 on_round: Callable | None = None):
        self.references = list(references)
        self.timer = timer
        self.threshold = threshold
        self.max_retries = max_retries
        self.on_round = on_round
        self.rounds: list[dict] = []
        self._rows: list[dict] = []
        if history is not None and len(history):
            hist = history.copy()
            for col in ("passed", "final"):
                if col not in hist:
                    hist[col] = True
                hist[col] = hist[col].fillna(True).astype(bool)
            self._history = hist
            self._next_round = int(pd.to_numeric(hist["round"]).max()) + 1
        else:
            self._history = pd.DataFrame(columns=["ref_id", "round", "latency_ms", "passed", "final"])
            self._next_round = 0
        self.state = "not checked"

    # The frames check_references sees.
    def _frame(self, which: str) -> pd.DataFrame:
        own = pd.DataFrame(self._rows, columns=["ref_id", "round", "latency_ms", "passed", "final"])
        parts = [f for f in (self._history[own.columns], own) if len(f)]
        frame = pd.concat(parts, ignore_index=True) if parts else own
        return frame[frame[which].astype(bool)][["ref_id", "round", "latency_ms"]]

    @staticmethod
    def _spread(check: ReferenceCheck | None) -> float:
        if check is None:
            return 0.0
        column = check.statistic if check.statistic in check.spread else "cv"
        values = pd.to_numeric(check.spread[column], errors="coerce")
        return float(values.max()) if len(values) else 0.0

    def check(self, after_arch_id: int = -1, batch: int | None = None, retry: int = 0,
              retryable: bool = False) -> dict:
        """Time one round of references and judge it.

        Returns the outcome dict: ``round``, ``batch``, ``retry``,
        ``after_arch_id``, ``spread`` (largest spread over references),
        ``passed``, ``final`` (False when the batch will be timed again) and
        ``check`` (the :class:`~esm_sklearn.quality.ReferenceCheck`; None for
        a first round, which passes as there is nothing to compare it with).
        """
        rnd = self._next_round
        self._next_round += 1
        rows = []
        for ref_id, ref in enumerate(self.references):
            result = self.timer(ref_id, ref)
            stats = dict(result) if isinstance(result, dict) else {"latency_ms": float(result)}
            if not np.isfinite(stats.get("latency_ms", np.nan)):
                raise RuntimeError(f"reference {ref_id} gave no latency: {stats}")
            rows.append({"ref_id": ref_id, "round": rnd, "after_arch_id": after_arch_id,
                         "batch": batch, "retry": retry, **stats})
        candidate = pd.DataFrame(rows)[["ref_id", "round", "latency_ms"]]
        judged = _repeated(pd.concat([self._frame("passed"), candidate], ignore_index=True))
        if len(judged):
            check = check_references(judged, threshold=self.threshold)
            passed = bool(check.passed)
        else:  # a first round has nothing to be compared with
            check, passed = None, True
        final = passed or not retryable
        for row in rows:
            self._rows.append({"ref_id": row["ref_id"], "round": rnd,
                               "latency_ms": row["latency_ms"], "passed": passed, "final": final})
        outcome = {"round": rnd, "batch": batch, "retry": retry, "after_arch_id": after_arch_id,
                   "n_references": len(rows), "spread": self._spread(check), "passed": passed,
                   "final": final, "check": check}
        self.rounds.append(outcome)
        if passed:
            self.state = f"ok {outcome['spread']:.1%}"
        elif final:
            self.state = f"FAILED {outcome['spread']:.1%}"
        else:
            self.state = f"retry {retry + 1}/{self.max_retries} ({outcome['spread']:.1%})"
        if self.on_round is not None:
            self.on_round(rows, outcome)
        return outcome

    def run(self, batches: Iterable[Sequence], measure_batch: Callable,
            position: Callable[[], int] = lambda: -1) -> list[dict]:
        """Check, then measure each batch and check after it, retrying failures.

        ``measure_batch(batch_index, batch, retry)`` measures a batch;
        ``position()`` gives the ``after_arch_id`` of a round. Returns
        :attr:`rounds`.
        """
        self.check(position(), batch=None, retry=0, retryable=False)
        for b, batch in enumerate(batches):
            for retry in range(self.max_retries + 1):
                measure_batch(b, batch, retry)
                outcome = self.check(position(), batch=b, retry=retry,
                                     retryable=retry < self.max_retries)
                if outcome["passed"]:
                    break
        return self.rounds

    def summary(self) -> ReferenceCheck | None:
        """The check over every round that closes kept data (this and earlier sessions).

        None before any reference has two such rounds; references with one
        round (added to an older collection) are not judged yet.
        """
        frame = _repeated(self._frame("final"))
        if not len(frame):
            return None
        return check_references(frame, threshold=self.threshold)

    def frame(self) -> pd.DataFrame:
        """One row per round of this session: passed, spread, retry, ..."""
        cols = ["round", "batch", "retry", "after_arch_id", "n_references", "spread",
                "passed", "final"]
        return pd.DataFrame([{k: o[k] for k in cols} for o in self.rounds], columns=cols)
