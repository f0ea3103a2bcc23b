"""The measurement loop of :meth:`TorchLatencyOracle.measure`, as named steps.

A :class:`Collection` is one call: :meth:`~Collection.resume_from_store` reads
what the store already holds under the setting, :meth:`~Collection.plan` keeps
what is left to time, :meth:`~Collection.run_batches` times it in batches with
reference rounds around them (:class:`~esm_sklearn.quality.ReferenceMonitor`),
:meth:`~Collection.record_arch` / :meth:`~Collection.record_reference_round`
write every timing as it completes, and :meth:`~Collection.finish` gives the
oracle's fitted attributes. Timing itself stays with the oracle
(``oracle._time_arch``), so a test may replace it with a fake timer.

Positions (``order``, ``after_arch_id``) are store row ids, as in
:meth:`~esm_sklearn.store.MeasurementStore.to_latency_table`; without a store
a local counter plays that role.
"""

from __future__ import annotations

import json
import math
import sys
import time
from typing import Any

import numpy as np
import pandas as pd

from .quality import ReferenceMonitor, check_references, drift_correct
from .spaces import SearchSpace, arch_key
from .store import MeasurementStore

__all__ = ["Collection", "STAT_COLUMNS"]

STAT_COLUMNS = ["latency_ms", "median_ms", "min_ms", "p90_ms", "std_ms", "runs"]
# Timing details kept in a row's ``extra`` (the store's columns hold STAT_COLUMNS).
_TIMING_EXTRAS = ("clock", "seconds", "rel_ci", "ratio", "anchor_ms", "raw", "anchor_raw")
_REFERENCE_COLUMNS = ["space", "ref_id", "round", "after_arch_id", "batch_size", "latency_ms",
                      "median_ms", "std_ms", "runs", "retry", "passed", "final"]


def load_extra(value) -> dict:
    """A row's ``extra`` as a dict (empty when missing or not a JSON object)."""
    if isinstance(value, dict):
        return value
    if isinstance(value, str) and value:
        try:
            out = json.loads(value)
        except json.JSONDecodeError:
            return {}
        return out if isinstance(out, dict) else {}
    return {}


def timing_extra(stats: dict) -> dict:
    """The timing details of a stats dict, JSON-ready (NaN becomes None)."""
    out = {}
    for name in _TIMING_EXTRAS:
        value = stats.get(name)
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        if value is not None:
            out[name] = value
    return out


def stored_anchor_ms(store: MeasurementStore, skey: str) -> float | None:
    """The anchor calibration first recorded under a setting, if any."""
    for kind in ("reference", "arch"):
        for extra in store.frame(kind=kind, setting_key=skey)["extra"]:
            value = load_extra(extra).get("anchor_ms")
            if value is not None:
                return float(value)
    return None


def _distinct_rounds(runs: pd.Series, rounds: pd.Series) -> list[int]:
    """One round number per (run, round) for the monitor (H3, issue 9.3).

    Rounds are numbered per run (``batch``; empty in old stores: run 1), so two
    concurrent runs both have a round 0. A round keeps its number unless an
    earlier run used it; then it gets a new one above every stored number.
    """
    runs = runs.fillna(1).astype(int).tolist()
    rounds = rounds.astype(int).tolist()
    top = max(rounds, default=-1)
    owner: dict[int, int] = {}
    ids: dict[tuple[int, int], int] = {}
    for pair in sorted(set(zip(runs, rounds))):
        run, rnd = pair
        if owner.setdefault(rnd, run) == run:
            ids[pair] = rnd
        else:
            top += 1
            ids[pair] = top
    return [ids[pair] for pair in zip(runs, rounds)]


class Collection:
    """One :meth:`TorchLatencyOracle.measure` call over one space and setting.

    Parameters
    ----------
    oracle : TorchLatencyOracle
        Gives the parameters and ``_time_arch(space, arch, dev)``.
    space : SearchSpace
    dev : torch.device
    common : dict
        Fields of every store row: ``space``, ``setting_key``, ``device``,
        ``protocol``.
    store : MeasurementStore or None
    """

    def __init__(self, oracle, space: SearchSpace, dev, common: dict,
                 store: MeasurementStore | None):
        self.oracle = oracle
        self.space = space
        self.dev = dev
        self.common = common
        self.store = store
        self.results: dict[str, dict | None] = {}
        self.ref_history: pd.DataFrame | None = None
        self.stored_refs: dict[int, str] = {}
        self.anchor_ms: float | None = None
        self.position = -1
        self.number = 1  # collection session, continuing the store's numbering
        self.local_id = 0
        self.counts = {"n_measured": 0, "n_failed": 0, "n_retimed": 0}
        self.ref_rows: list[dict] = []
        self.monitor: ReferenceMonitor | None = None
        self.bar: Any = None
        self.n_skipped = 0
        # H3 (issue 9.3): a store run of its own; archs another live run claimed first.
        self.run: int | None = None
        self.deferred: list[tuple] = []

    # Step 1: what the store already holds under this setting.
    def resume_from_store(self) -> None:
        """Stored results, reference history and references, anchor calibration."""
        if self.store is None:
            return
        skey = self.common["setting_key"]
        prev = self.store.frame(kind="arch", setting_key=skey)
        refs = self.store.frame(kind="reference", setting_key=skey)
        if len(prev):
            self.position = int(prev["id"].max())
        extras = [load_extra(e) for e in [*prev["extra"], *refs["extra"]]]
        self.number = max([0, *(e.get("session", 0) for e in extras)]) + 1
        self.anchor_ms = stored_anchor_ms(self.store, skey)
        self._take_stored(prev)
        if len(refs):
            for ref_id, key in zip(refs["ref_id"], refs["arch_key"], strict=True):
                self.stored_refs.setdefault(int(ref_id), key)
            self.ref_history = pd.DataFrame({
                "ref_id": refs["ref_id"].astype(int),
                "round": _distinct_rounds(refs["batch"], refs["qc_round"]),
                "latency_ms": refs["latency_ms"].astype(float),
                "passed": [load_extra(e).get("passed", True) for e in refs["extra"]],
                "final": [load_extra(e).get("final", True) for e in refs["extra"]],
            })

    def _take_stored(self, rows: pd.DataFrame) -> None:
        """Stored architecture rows as results (resume, and archs other runs timed)."""
        for row in rows.to_dict("records"):
            old = self.results.get(row["arch_key"])
            # The last ok row wins; a failure only stands when nothing succeeded.
            if old is None or row["status"] == "ok" or old["status"] != "ok":
                extra = load_extra(row.get("extra"))
                self.results[row["arch_key"]] = {
                    **{c: row.get(c) for c in STAT_COLUMNS}, "status": row["status"],
                    "error": row.get("error"), "skipped": True, "order": int(row["id"]),
                    "retries": extra.get("retry", 0), "seconds": extra.get("seconds")}

    # H3 (issue 9.3): a run number of its own, allocated atomically by the store (two
    # concurrent collections never share one); every row carries it in ``batch`` (the
    # exports' ``run``, which scopes QC rounds). Fails on a read-only store, before timing.
    def begin_run(self, n_todo: int) -> None:
        if self.store is None:
            return
        self.run = self.store.begin_run(self.common["setting_key"],
                                        {"space": self.space.name, "n": n_todo})
        self.number = self.run
        self.common["batch"] = self.run

    def end_run(self) -> None:
        if self.store is not None and self.run is not None:
            self.store.end_run(self.run)

    def _claimed_elsewhere(self, key: str) -> bool:
        """Whether another run measured ``key`` or is timing it (checked right before timing)."""
        if self.run is None:
            return False
        return self.store.claim(self.common["setting_key"], key, self.run) != "ok"

    def wait_for_others(self, poll: float = 0.2) -> None:
        """Results of the archs other runs claimed: read once stored; a stale claim
        (its run ended or died first) is taken over and the arch timed here."""
        n_waited = 0
        while self.deferred:
            waiting = []
            for b, key, arch, label in self.deferred:
                status = self.store.claim(self.common["setting_key"], key, self.run)
                if status == "ok":
                    if self.bar is not None:
                        self.bar.total += 1
                    stats = self.oracle._time_arch(self.space, arch, self.dev)
                    self.record_arch(key, arch, label, stats, b, 0)
                elif status == "measured":
                    n_waited += 1
                else:
                    waiting.append((b, key, arch, label))
            self.deferred = waiting
            if waiting:
                time.sleep(poll)
        if n_waited:
            rows = self.store.frame(kind="arch", setting_key=self.common["setting_key"])
            missing = {k for k, v in self.results.items() if v is None}
            self._take_stored(rows[rows["arch_key"].isin(missing)])
            self.n_skipped += n_waited

    def plan(self, keys: list[str], canon: list[dict], labels: list) -> list[tuple]:
        """``(key, arch, label)`` of each distinct architecture not yet recorded."""
        self.n_skipped = sum(1 for k in dict.fromkeys(keys) if k in self.results)
        todo = []
        for key, arch, label in zip(keys, canon, labels, strict=True):
            if key not in self.results:
                self.results[key] = None  # placeholder: measured below
                todo.append((key, arch, label))
        return todo

    def open_progress_bar(self, total: int) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc=f"{self.space.name} on {self.dev.type}", unit="arch",
                        file=sys.stderr, dynamic_ncols=True)

    def _add(self, record: dict) -> int:
        if self.store is not None:
            return self.store.add(record)
        self.local_id += 1
        return self.local_id

    def _postfix(self) -> None:
        if self.bar is not None:
            info = {"failed": self.counts["n_failed"]}
            if self.monitor is not None:
                info["qc"] = self.monitor.state
            self.bar.set_postfix(info, refresh=True)

    # Step 2: record one timing (an architecture, or a round of references).
    def record_arch(self, key: str, arch: dict, label, stats: dict, batch: int,
                    retry: int) -> None:
        """Write an architecture's timing and keep it unless a success stands already."""
        row_id = self._add({
            **self.common, "kind": "arch", "arch_key": key, "sampling": label,
            **{c: stats[c] for c in STAT_COLUMNS}, "status": stats["status"],
            "error": stats["error"],
            "extra": {"session": self.number, "qc_batch": batch, "retry": retry,
                      "resolution": self.space.input_resolution(arch, self.oracle.resolution),
                      **timing_extra(stats)}})
        self.position = row_id
        prev = self.results.get(key)
        if prev is None or stats["status"] == "ok" or prev["status"] != "ok":
            self.results[key] = {**{c: stats[c] for c in STAT_COLUMNS},
                                 "status": stats["status"], "error": stats["error"],
                                 "skipped": False, "order": row_id, "retries": retry,
                                 "seconds": stats.get("seconds")}
        if retry:
            self.counts["n_retimed"] += 1
        else:
            self.counts["n_measured"] += 1
            self.counts["n_failed"] += stats["status"] != "ok"
        if self.bar is not None:
            self._postfix()
            self.bar.update(1)

    def record_reference_round(self, rows: list[dict], outcome: dict) -> None:
        """Write a QC round's reference timings with its outcome."""
        extra = {"session": self.number, "qc_batch": outcome["batch"],
                 "retry": outcome["retry"], "passed": outcome["passed"],
                 "final": outcome["final"], "spread": outcome["spread"]}
        for row in rows:
            ref = self.monitor.references[row["ref_id"]]
            self._add({**self.common, "kind": "reference", "arch_key": arch_key(ref),
                       "sampling": "reference", "ref_id": row["ref_id"],
                       "qc_round": row["round"], "after_arch_id": row["after_arch_id"],
                       **{c: row[c] for c in STAT_COLUMNS}, "status": "ok",
                       "extra": {**extra, **timing_extra(row)}})
            self.ref_rows.append({
                "space": self.space.name, "ref_id": row["ref_id"], "round": row["round"],
                "after_arch_id": row["after_arch_id"],
                "batch_size": int(self.oracle.batch_size),
                **{c: row[c] for c in ("latency_ms", "median_ms", "std_ms", "runs")},
                **{k: extra[k] for k in ("retry", "passed", "final")}})
        self._postfix()

    # Step 3: run the batches, with reference rounds around them when QC is on.
    def measure_batch(self, b: int, batch: list[tuple], retry: int) -> None:
        if retry and self.bar is not None:
            self.bar.total += len(batch)
            # H3 (issue 9.9): say why the bar's total grows.
            self.bar.write(f"quality control failed ({self.monitor.state}): timing the last "
                           f"{len(batch)} architecture(s) again (retry {retry} of "
                           f"{self.oracle.max_retries}); the bar's total grows by {len(batch)}",
                           file=sys.stderr)
            self.bar.refresh()
        for key, arch, label in batch:
            if not retry and self._claimed_elsewhere(key):  # H3 (issue 9.3)
                self.deferred.append((b, key, arch, label))
                if self.bar is not None:
                    self.bar.update(1)
                continue
            stats = self.oracle._time_arch(self.space, arch, self.dev)
            self.record_arch(key, arch, label, stats, b, retry)

    def time_reference(self, ref_id: int, ref: dict) -> dict:
        stats = self.oracle._time_arch(self.space, ref, self.dev)
        if stats["status"] != "ok":
            raise RuntimeError(
                f"reference architecture {ref_id} ({arch_key(ref)}) could not be timed, "
                f"so quality control is impossible: {stats['error']}"
            )
        return stats

    def run_batches(self, todo: list[tuple], references: list[dict]) -> None:
        """Time ``todo`` in batches of ``check_every``, QC rounds around them."""
        oracle = self.oracle
        step = int(oracle.check_every) if oracle.check_every else max(len(todo), 1)
        batches = [todo[i : i + step] for i in range(0, len(todo), step)]
        try:
            if oracle.n_references and todo:
                self.monitor = ReferenceMonitor(
                    references, self.time_reference, threshold=oracle.variance_threshold,
                    max_retries=int(oracle.max_retries), history=self.ref_history,
                    on_round=self.record_reference_round)
                if self.bar is not None:  # H3 (issue 9.9): the bar stays at 0 meanwhile
                    self.bar.write(f"timing {len(references)} reference architectures for "
                                   "quality control first (again after every "
                                   f"{step} architectures) ...", file=sys.stderr)
                self.monitor.run(batches, self.measure_batch, position=lambda: self.position)
            else:
                for b, batch in enumerate(batches):
                    self.measure_batch(b, batch, 0)
            self.wait_for_others()  # H3 (issue 9.3)
        finally:
            if self.bar is not None:
                self.bar.close()

    # Step 4: the oracle's attributes.
    def finish(self, keys: list[str], labels: list) -> dict:
        """``stats_``, ``references_``, ``qc_``, ``qc_check_`` and ``summary_``."""
        oracle = self.oracle
        rows = [{"arch": key, "space": self.space.name, "sampling": label, **self.results[key]}
                for key, label in zip(keys, labels, strict=True)]
        stats = pd.DataFrame(rows, columns=["arch", "space", "sampling", "status", "skipped",
                                            *STAT_COLUMNS, "seconds", "error", "order",
                                            "retries"])
        stats["latency_ms"] = stats["latency_ms"].astype(float)
        stats["seconds"] = pd.to_numeric(stats["seconds"], errors="coerce")
        out = {"references_": pd.DataFrame(self.ref_rows, columns=_REFERENCE_COLUMNS)}
        if self.monitor is not None:
            out["qc_"], out["qc_check_"] = self.monitor.frame(), self.monitor.summary()
        else:
            out["qc_"], out["qc_check_"] = ReferenceMonitor([], None).frame(), None
            if self.ref_history is not None:
                final = self.ref_history[self.ref_history["final"].astype(bool)]
                if final["round"].nunique() >= 2:
                    out["qc_check_"] = check_references(
                        final[["ref_id", "round", "latency_ms"]],
                        threshold=oracle.variance_threshold)
        if oracle.drift_correction:
            stats = self._drift_correct(stats, out["references_"])
        out["stats_"] = stats
        check = out["qc_check_"]
        out["summary_"] = {**self.counts, "n_skipped": self.n_skipped,
                           "qc_passed": None if check is None else bool(check.passed)}
        return out

    def _drift_correct(self, stats: pd.DataFrame, references: pd.DataFrame) -> pd.DataFrame:
        """Divide latencies by the reference level interpolated at their position."""
        if self.store is not None:
            refs = self.store.frame(kind="reference", setting_key=self.common["setting_key"],
                                    status="ok")
            refs = pd.DataFrame({"ref_id": refs["ref_id"], "round": refs["qc_round"],
                                 "after_arch_id": refs["after_arch_id"],
                                 "latency_ms": refs["latency_ms"]})
        else:
            refs = references[["ref_id", "round", "after_arch_id", "latency_ms"]]
        if not len(refs):
            raise ValueError("drift_correction=True but no reference timings are recorded "
                             "for this setting")
        stats = stats.copy()
        stats["raw_latency_ms"] = stats["latency_ms"]
        stats["drift_factor"] = np.nan
        ok = stats["status"].eq("ok").to_numpy()
        if ok.any():
            table = pd.DataFrame({"order": stats.loc[ok, "order"].astype(float),
                                  "latency_ms": stats.loc[ok, "latency_ms"].astype(float)})
            corrected = drift_correct(table, refs, columns=("latency_ms",))
            stats.loc[ok, "latency_ms"] = corrected["latency_ms"].to_numpy()
            stats.loc[ok, "drift_factor"] = corrected["drift_factor"].to_numpy()
        return stats
