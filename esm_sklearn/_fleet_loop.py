"""The client's loop of a :class:`~esm_sklearn.fleet.FleetLatencyOracle` call, and the
task its dask workers run.

A worker (one device unit) keeps one :class:`~esm_sklearn.TorchLatencyOracle`
per call setting and times what it is sent with ``time_architecture``. The
client (:class:`_FleetRun`) submits one task per architecture, restricted to
the unit resource, a few per unit at a time; pinned reference rounds per unit;
writes every result to the store as it arrives, calibrated by the unit's
factor; and watches the units (lost, new, retired).
"""

from __future__ import annotations

import math
import os
import socket
import sys
import time
import warnings
from collections import deque

import numpy as np
import pandas as pd

from .collection import STAT_COLUMNS, Collection, timing_extra
from .quality import ReferenceMonitor, check_references
from .spaces import arch_key

__all__ = ["unit_factor"]

_SCALED = ["latency_ms", "median_ms", "min_ms", "p90_ms", "std_ms"]
_POLL_S = 0.25
_PER_UNIT_IN_FLIGHT = 2  # queued arch tasks per unit: enough to keep it busy, few to re-run


def unit_factor(unit_levels, fleet_levels) -> float:
    """Calibration factor of a unit: geometric mean of its reference latencies over the fleet's.

    Examples
    --------
    >>> round(unit_factor([2.0, 4.0], [1.0, 2.0]), 6)
    2.0
    """
    ratio = np.asarray(unit_levels, dtype=float) / np.asarray(fleet_levels, dtype=float)
    ratio = ratio[np.isfinite(ratio) & (ratio > 0)]
    return float(np.exp(np.log(ratio).mean())) if ratio.size else 1.0


def _copy(oracle, **changes):
    """A new oracle with ``changes`` (not ``clone``: a store object is not deep-copied)."""
    return type(oracle)(**{**oracle.get_params(deep=False), **changes})


# ----------------------------------------------------------------- worker side
# On a worker: the oracle of the current call, kept between tasks so that its
# burn-in and anchor calibration (paired timing) are done once per unit.
_UNIT_ORACLE: dict = {}


def _unit_device(kind: str, name, local: bool) -> str:
    env = os.environ.get("ESM_SKLEARN_DEVICE")
    if env:
        return env
    if kind == "cuda" and local and isinstance(name, int):
        return f"cuda:{name}"  # LocalCluster names its workers 0..n-1
    return kind


def _unit_setting(oracle, space) -> tuple[dict, dict, str]:
    """The device description, protocol and setting key the oracle records."""
    setting = oracle.setting(space)
    return setting["device"], setting["protocol"], setting["setting_key"]


def _run_on_unit(job: dict, archs: list | None) -> dict:
    """Dask task: time ``archs`` on this worker's unit (only describe it when None)."""
    from distributed import get_worker

    worker = get_worker()
    device = _unit_device(job["kind"], worker.name, job["local"])
    core = None
    if job["pin"] and hasattr(os, "sched_setaffinity") and isinstance(worker.name, int):
        cores = sorted(os.sched_getaffinity(os.getpid()))
        core = cores[worker.name % len(cores)]
        os.sched_setaffinity(0, {core})  # the executing thread, which runs torch
    if _UNIT_ORACLE.get("token") != job["token"]:
        _UNIT_ORACLE.clear()
        oracle = job["oracle"].set_params(device=device)
        _UNIT_ORACLE.update(token=job["token"], oracle=oracle, space=job["space"],
                            setting=_unit_setting(oracle, job["space"]))
    oracle, space = _UNIT_ORACLE["oracle"], _UNIT_ORACLE["space"]
    info, protocol, skey = _UNIT_ORACLE["setting"]
    results = [oracle.time_architecture(a, space=space) for a in archs or []]
    return {"worker": worker.address, "unit": str(worker.name), "host": socket.gethostname(),
            "pid": os.getpid(), "core": core, "device": device, "device_info": info,
            "protocol": protocol, "setting_key": skey, "results": results}


class _Unit:
    """Client-side state of one device unit (a worker address)."""

    def __init__(self, addr: str, info: dict, run: int):
        self.addr, self.info, self.run = addr, info, run
        self.monitor = None  # its ReferenceMonitor: QC per unit
        self.name = info["unit"]
        self.state = "active"  # active, lost, retired
        self.factor = None
        self.first_round = None
        self.batch: list = []  # items timed since the last closing round
        self.since_round = 0
        self.round_pending = False
        self.retry = 0
        self.retry_left = 0
        self.buffer: list = []  # arch results waiting for the unit's first round
        self.values: list = []  # the reference timings being judged
        self.last_row = -1
        self.n_measured = 0
        self.strikes = 0
        self.note = ""

class _FleetRun:
    """One ``measure`` call: the client's loop over the units' results."""

    def __init__(self, fleet, template, resource, kind, client, space, store):
        self.fleet, self.template, self.client = fleet, template, client
        self.space, self.store, self.resource = space, store, resource
        worker_oracle = _copy(template, store=None, progress=False)
        if kind == "cpu" and template.threads is None:
            worker_oracle.set_params(threads=1)
        local = fleet.scheduler is None
        self.job = {"oracle": worker_oracle, "space": space, "kind": kind, "local": local,
                    "pin": bool(fleet.pin_cores) and kind == "cpu" and local,
                    "token": repr((fleet._connection_id(), space.name, type(worker_oracle).__name__,
                                   sorted(worker_oracle.get_params().items())))}
        self.units: dict[str, _Unit] = {}
        self.pending: dict = {}  # future -> (what, unit address or None, item or None)
        self.queue: deque = deque()
        self.levels = None
        self.counts = {"n_measured": 0, "n_failed": 0, "n_retimed": 0, "n_duplicates": 0}
        self.ref_rows: list[dict] = []
        self.bar = None
        self._local_id = 0

    # ---------------------------------------------------------------- units
    def _snapshot(self) -> set:
        info = self.client.scheduler_info(n_workers=-1)["workers"]
        return {a for a, w in info.items() if w.get("resources", {}).get(self.resource, 0) >= 1}

    def _submit(self, archs, addr=None, allowed=None, priority=0):
        kw = {"resources": {self.resource: 1}, "pure": False, "priority": priority}
        if addr is not None or allowed is not None:
            kw.update(workers=[addr] if addr is not None else sorted(allowed),
                      allow_other_workers=False)
        return self.client.submit(_run_on_unit, self.job, archs, **kw)

    def _describe(self, addrs) -> dict:
        from distributed import wait

        futures = {self._submit(None, addr=a, priority=20): a for a in addrs}
        try:
            wait(list(futures), timeout=self.fleet.worker_timeout)
        except TimeoutError:
            pass
        out = {}
        for f, a in futures.items():
            if f.status == "finished":
                out[a] = f.result()
            else:  # gone meanwhile (or its task failed): the next check sees it
                f.cancel()
        return out

    def _wait_for_units(self) -> dict:
        deadline = time.monotonic() + float(self.fleet.worker_timeout)
        while True:
            addrs = self._snapshot()
            described = self._describe(addrs) if addrs else {}
            if described:
                return described
            if time.monotonic() > deadline:
                where = self.fleet.scheduler or "the local cluster"
                raise RuntimeError(
                    f"no dask worker of {where} offers the resource {self.resource!r} after "
                    f"{self.fleet.worker_timeout:g} s; start workers with e.g. `dask worker "
                    f"ADDRESS --nthreads 1 --resources {self.resource}=1`")
            time.sleep(_POLL_S)

    def _add_unit(self, addr, report) -> _Unit:
        run = len(self.units) + 1
        if self.store is not None:  # one store run per unit: its rows and QC rounds
            run = int(self.store.begin_run(self.skey, {"fleet_unit": report["unit"],
                                                       "worker": addr}))
        unit = _Unit(addr, report, run)
        unit.monitor = ReferenceMonitor(self.references, lambda i, r, u=unit: u.values[i],
                                        threshold=self.template.variance_threshold,
                                        max_retries=int(self.template.max_retries))
        self.units[addr] = unit
        if report["setting_key"] != self.skey:
            self._retire(unit, f"it describes another device ({report['device_info']}) than "
                               f"the fleet ({self.device_info})")
        elif self.references:
            self._submit_round(unit)
        else:
            unit.factor = 1.0
        return unit

    def _check_units(self):
        alive = self._snapshot()
        for addr, unit in self.units.items():
            if unit.state == "active" and addr not in alive:
                unit.state, unit.note = "lost", "its worker left the cluster"
                # Timings it returned before its first reference round cannot be
                # calibrated; they were not written, so they are timed again elsewhere.
                self.queue.extendleft(item for _, item in unit.buffer)
                unit.buffer = []
        # (A new worker joins as a unit with its first result, which describes it.)
        self._calibrate()
        # Tasks pinned to units that are gone would wait for them forever.
        ok = {a for a, u in self.units.items() if u.state == "active"}
        for f, (what, addr, item) in list(self.pending.items()):
            if what == "arch" and item.get("allowed") and not item["allowed"] & ok:
                f.cancel()
                del self.pending[f]
                self.queue.appendleft(item)
            elif what in ("refs", "retime") and addr not in ok:
                f.cancel()
                del self.pending[f]
                unit = self.units[addr]
                if what == "retime" and unit.retry_left:
                    unit.note += (f"; {unit.retry_left} architectures of a batch whose QC "
                                  "failed were not timed again (their first timing stays)")
                    unit.retry_left = 0

    def _retire(self, unit: _Unit, why: str):
        if unit.state != "active":
            return
        unit.state, unit.note = "retired", why
        warnings.warn(f"FleetLatencyOracle retired worker {unit.addr} (unit {unit.name} on "
                      f"{unit.info['host']}, {unit.info['device']}): {why}", RuntimeWarning,
                      stacklevel=2)
        try:
            self.client.retire_workers([unit.addr], close_workers=True)
        except Exception as exc:  # noqa: BLE001 - a worker already gone is fine
            unit.note += f" (retire_workers: {exc})"
        self.queue.extendleft(item for _, item in unit.buffer)
        unit.buffer = []

    # ------------------------------------------------------------- the loop
    def execute(self, canon, keys, labels):
        t0 = time.perf_counter()
        described = self._wait_for_units()
        by_setting: dict[str, list] = {}
        for rep in described.values():
            by_setting.setdefault(rep["setting_key"], []).append(rep)
        if len(by_setting) > 1:
            kinds = "; ".join(f"units {[r['unit'] for r in reps]}: {reps[0]['device_info']}"
                              for reps in by_setting.values())
            raise ValueError(f"the workers offering {self.resource!r} are different devices "
                             f"({kinds}); give each kind its own resource name and fleet")
        first = next(iter(described.values()))
        self.skey, self.device_info = first["setting_key"], first["device_info"]
        self.fleet.setting_key_, self.fleet.device_info_ = self.skey, self.device_info
        self.common = {"space": self.space.name, "setting_key": self.skey,
                       "device": self.device_info, "protocol": first["protocol"]}
        # What the store holds for the setting: the oracle's own resume step.
        self.resumed = Collection(self.template, self.space, None, self.common, self.store)
        self.resumed.resume_from_store()
        self.results = self.resumed.results
        self.session = self.resumed.number
        n_skipped = sum(1 for k in dict.fromkeys(keys) if k in self.results)
        for key, arch, label in zip(keys, canon, labels, strict=True):
            if key not in self.results:
                self.results[key] = None
                self.queue.append({"key": key, "arch": arch, "label": label, "retry": 0,
                                   "tried": ()})
        self.references = (self.template.reference_archs(self.space, self.resumed.stored_refs)
                           if self.template.n_references else [])
        self.stored_levels = self._stored_levels()
        if self.queue:
            if self.template.progress:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=len(self.queue), unit="arch", file=sys.stderr,
                                desc=f"{self.space.name} on {len(described)} units")
            try:
                for addr, report in described.items():
                    self._add_unit(addr, report)
                self._loop()
            finally:
                for f in list(self.pending):
                    f.cancel()
                if self.bar is not None:
                    self.bar.close()
                if self.store is not None:
                    for unit in self.units.values():
                        self.store.end_run(unit.run)
        self._finish(keys, labels, n_skipped, time.perf_counter() - t0)

    def _loop(self):
        from distributed import wait

        last_check = time.monotonic()
        while True:
            self._top_up()
            if not self.pending:
                return
            try:
                done, _ = wait(list(self.pending), timeout=_POLL_S, return_when="FIRST_COMPLETED")
            except TimeoutError:  # nothing finished: time to look at the units
                done = ()
            for f in done:
                if f not in self.pending:
                    continue
                what, addr, item = self.pending.pop(f)
                if f.status not in ("finished", "error"):  # cancelled or lost
                    if what == "arch":
                        self.queue.appendleft(item)
                elif what == "refs":
                    self._on_round(f, self.units[addr])
                else:
                    self._on_arch(f, item)
            if time.monotonic() - last_check > 1.0:
                last_check = time.monotonic()
                self._check_units()

    def _top_up(self):
        active = [u for u in self.units.values() if u.state == "active"]
        if not active:
            raise RuntimeError("no device unit is left to measure on: " + "; ".join(
                f"unit {u.name} ({u.addr}) {u.state}: {u.note}" for u in self.units.values()))
        if self.levels is None and self.references:
            return  # not before every unit's first reference round (calibration)
        while self.queue and self._in_flight() < _PER_UNIT_IN_FLIGHT * len(active):
            item = self.queue.popleft()
            allowed = None
            if item["tried"]:  # a second opinion: any unit but those that failed it
                allowed = {u.addr for u in active if u.name not in item["tried"]}
                if not allowed:
                    self.counts["n_failed"] += 1
                    continue
            item["allowed"] = allowed
            self.pending[self._submit([item["arch"]], allowed=allowed)] = ("arch", None, item)
        if self.references and not self.queue and not self._in_flight():
            for unit in active:  # the closing round of each unit with unchecked timings
                if unit.since_round and not unit.round_pending and not unit.retry_left:
                    self._submit_round(unit)

    def _in_flight(self) -> int:
        return sum(1 for what, _, _ in self.pending.values() if what == "arch")

    # ---------------------------------------------------------- arch results
    def _add(self, record) -> int:
        if self.store is not None:
            return self.store.add(record)
        self._local_id += 1
        return self._local_id

    def _unit_extra(self, unit: _Unit, report: dict) -> dict:
        return {"session": self.session, "unit": unit.name, "worker": report["worker"],
                "host": report["host"], "pid": report["pid"], "core": report["core"],
                "device_unit": report["device"], "unit_factor": unit.factor}

    def _on_arch(self, f, item):
        if f.status == "error":
            from distributed import KilledWorker

            exc = f.exception()
            if isinstance(exc, KilledWorker):
                error = (f"KilledWorker: every worker that timed it died (more than "
                         f"distributed.scheduler.allowed-failures times): {exc}")
            else:
                error = f"{type(exc).__name__} in the dask task: {exc}"
            stats = {c: math.nan for c in STAT_COLUMNS} | {"runs": 0}
            row = self._add({**self.common, "kind": "arch", "arch_key": item["key"],
                             "sampling": item["label"], "status": "failed",
                             "error": error[:2000], "runs": 0,
                             "extra": {"session": self.session, "retry": item["retry"]}})
            self._keep(item, stats, "failed", error[:2000], row, None)
            self.counts["n_measured"] += not item["retry"] and not item["tried"]
            self.counts["n_failed"] += 1
            self._progress()
            return
        report = f.result()
        unit = self.units.get(report["worker"])
        if unit is None:  # a worker new to the fleet (e.g. restarted): it joins as a unit
            unit = self._add_unit(report["worker"], report)
        if unit.state == "retired" or report["setting_key"] != self.skey:
            self.queue.appendleft(item)  # not from a unit of this fleet: time it again
            return
        if unit.factor is None:
            unit.buffer.append((report, item))
            return
        self._write_arch(unit, report, item)

    def _write_arch(self, unit: _Unit, report: dict, item: dict):
        stats = dict(report["results"][0])
        key, prev = item["key"], self.results.get(item["key"])
        if (prev is not None and not prev["skipped"] and prev["retries"] >= item["retry"]
                and not item["tried"]):
            self.counts["n_duplicates"] += 1  # one timing delivered twice: written once
            return
        raw = stats["latency_ms"]
        if stats["status"] == "ok":
            for c in _SCALED:
                stats[c] = stats[c] / unit.factor
        extra = {**self._unit_extra(unit, report), "retry": item["retry"],
                 "raw_latency_ms": raw, "qc_rounds": len(unit.monitor.rounds),
                 "resolution": self.space.input_resolution(item["arch"], self.template.resolution),
                 **timing_extra(report["results"][0])}
        if item["tried"]:
            extra["failed_on_units"] = list(item["tried"])
        row = self._add({**self.common, "kind": "arch", "arch_key": key, "sampling": item["label"],
                         "batch": unit.run, **{c: stats[c] for c in STAT_COLUMNS},
                         "status": stats["status"], "error": stats["error"], "extra": extra})
        unit.last_row = row
        unit.n_measured += 1
        if prev is None or prev["skipped"] or stats["status"] == "ok" or prev["status"] != "ok":
            self._keep(item, stats, stats["status"], stats["error"], row, unit, raw)
        if item["retry"]:
            self.counts["n_retimed"] += 1
            unit.retry_left -= 1
            if unit.retry_left == 0:
                self._submit_round(unit)
            self._progress()
            return
        self.counts["n_measured"] += not item["tried"]
        unit.batch.append(item)
        unit.since_round += 1
        if stats["status"] != "ok":
            self._on_unit_failure(unit, item)
        elif item["tried"]:  # another unit timed it fine: those that failed it are at fault
            for u in self.units.values():
                if u.name in item["tried"] and u.state == "active":
                    u.strikes += 1
                    if u.strikes >= self.fleet.max_unit_failures:
                        self._retire(u, f"{u.strikes} architectures failed on it that other "
                                        f"units timed fine (last error: {prev['error']})")
        step = self.template.check_every
        if self.references and step and unit.since_round >= step and not unit.round_pending:
            self._submit_round(unit)
        self._progress()

    def _on_unit_failure(self, unit, item):
        tried = (*item["tried"], unit.name)
        others = [u for u in self.units.values() if u.state == "active" and u.name not in tried]
        if others and len(tried) < 2:
            self.queue.append({**item, "tried": tried})  # a second opinion on another unit
        else:
            self.counts["n_failed"] += 1

    def _keep(self, item, stats, status, error, row, unit, raw=None):
        self.results[item["key"]] = {
            **{c: stats[c] for c in STAT_COLUMNS}, "status": status, "error": error,
            "skipped": False, "order": row, "retries": item["retry"],
            "seconds": stats.get("seconds"), "unit": None if unit is None else unit.name,
            "worker": None if unit is None else unit.addr, "raw_latency_ms": raw,
            "unit_factor": None if unit is None else unit.factor}

    def _progress(self):
        if self.bar is not None:
            active = sum(u.state == "active" for u in self.units.values())
            self.bar.set_postfix({"units": active, "failed": self.counts["n_failed"]},
                                 refresh=False)
            self.bar.update(1)

    # ------------------------------------------------------------- references
    def _submit_round(self, unit: _Unit):
        unit.round_pending = True
        self.pending[self._submit(self.references, addr=unit.addr, priority=10)] = \
            ("refs", unit.addr, None)

    def _on_round(self, f, unit: _Unit):
        unit.round_pending = False
        if unit.state != "active":
            return
        if f.status == "error":
            self._retire(unit, f"its reference round failed in dask: {f.exception()}")
            return
        report = f.result()
        bad = [r for r in report["results"] if r["status"] != "ok"]
        if bad:
            self._retire(unit, "it cannot time the reference architectures, so its quality "
                               f"cannot be controlled ({bad[0]['error']})")
            return
        unit.values = report["results"]
        retryable = bool(unit.monitor.rounds) and unit.retry < unit.monitor.max_retries
        outcome = unit.monitor.check(unit.last_row, batch=unit.run, retry=unit.retry,
                                     retryable=retryable)
        if unit.first_round is None:  # written once the unit's factor is known
            unit.first_round = (report, outcome)
            self._calibrate()
        else:
            self._write_round(unit, report, outcome)
        if outcome["final"]:
            unit.batch, unit.since_round, unit.retry = [], 0, 0
            return
        unit.retry += 1  # QC failed: this unit times its batch again
        unit.retry_left, unit.since_round = len(unit.batch), 0
        for item in unit.batch:
            self.pending[self._submit([item["arch"]], addr=unit.addr, priority=5)] = \
                ("retime", unit.addr, {**item, "retry": unit.retry, "tried": ()})
        if not unit.batch:
            self._submit_round(unit)

    def _write_round(self, unit: _Unit, report: dict, outcome: dict):
        for ref_id, r in enumerate(report["results"]):
            stats = {c: r[c] for c in STAT_COLUMNS}
            for c in _SCALED:
                stats[c] = stats[c] / unit.factor
            self._add({**self.common, "kind": "reference",
                       "arch_key": arch_key(self.references[ref_id]), "sampling": "reference",
                       "ref_id": ref_id, "qc_round": outcome["round"],
                       "after_arch_id": outcome["after_arch_id"], "batch": unit.run,
                       **stats, "status": "ok",
                       "extra": {**self._unit_extra(unit, report), "raw_latency_ms": r["latency_ms"],
                                 "retry": outcome["retry"], "passed": outcome["passed"],
                                 "final": outcome["final"], "spread": outcome["spread"],
                                 **timing_extra(r)}})
            self.ref_rows.append({"unit": unit.name, "run": unit.run, "ref_id": ref_id,
                                  "round": outcome["round"], "raw_latency_ms": r["latency_ms"],
                                  "latency_ms": stats["latency_ms"], "factor": unit.factor,
                                  "passed": outcome["passed"], "final": outcome["final"]})

    def _stored_levels(self):
        """Per reference, the median latency the store holds for the setting (or None)."""
        if self.store is None or not self.references:
            return None
        refs = self.store.frame(kind="reference", setting_key=self.skey, status="ok")
        levels = refs.groupby("ref_id")["latency_ms"].median()
        if not all(i in levels.index for i in range(len(self.references))):
            return None
        return levels.loc[list(range(len(self.references)))].to_numpy(dtype=float)

    def _calibrate(self):
        """Factors of units whose first round is in; then write what waited for them."""
        if self.levels is None:
            firsts = [u for u in self.units.values() if u.first_round is not None]
            waiting = [u for u in self.units.values() if u.state == "active" and u.first_round is None]
            if waiting or not firsts or not self.references:
                return
            if self.stored_levels is not None:  # the scale of earlier sessions
                self.levels = self.stored_levels
            else:
                self.levels = np.median([[r["latency_ms"] for r in u.first_round[0]["results"]]
                                         for u in firsts], axis=0)
        for unit in self.units.values():
            if unit.first_round is None or unit.factor is not None:
                continue
            report, outcome = unit.first_round
            raw = [r["latency_ms"] for r in report["results"]]
            unit.factor = unit_factor(raw, self.levels) if self.fleet.calibrate else 1.0
            self._write_round(unit, report, outcome)
            for rep, item in unit.buffer:
                self._write_arch(unit, rep, item)
            unit.buffer = []

    # ---------------------------------------------------------------- results
    def _finish(self, keys, labels, n_skipped, seconds):
        fleet = self.fleet
        rows = [{"arch": k, "space": self.space.name, "sampling": lab, **self.results[k]}
                for k, lab in zip(keys, labels, strict=True)]
        cols = ["arch", "space", "sampling", "status", "skipped", *STAT_COLUMNS, "seconds",
                "error", "order", "retries", "unit", "worker", "raw_latency_ms", "unit_factor"]
        stats = pd.DataFrame(rows, columns=cols)
        stats["latency_ms"] = stats["latency_ms"].astype(float)
        fleet.stats_ = stats
        fleet.references_ = pd.DataFrame(self.ref_rows, columns=[
            "unit", "run", "ref_id", "round", "raw_latency_ms", "latency_ms", "factor",
            "passed", "final"])
        qc = []
        for unit in self.units.values():
            frame = unit.monitor.frame()
            frame.insert(0, "unit", unit.name)
            qc.append(frame)
        fleet.qc_ = pd.concat(qc, ignore_index=True) if qc else pd.DataFrame()
        final = fleet.references_[fleet.references_["final"].astype(bool)]
        rounds = final.groupby("run")["round"].transform("nunique")
        final = final[rounds >= 2]  # a unit lost after its first round has nothing to judge
        fleet.qc_check_ = None
        if len(final):
            fleet.qc_check_ = check_references(final[["run", "ref_id", "round", "latency_ms"]],
                                               threshold=self.template.variance_threshold)
        unit_rows = []
        for unit in self.units.values():
            spread = passed = None
            if fleet.qc_check_ is not None:
                mine = fleet.qc_check_.spread[fleet.qc_check_.spread["run"] == unit.run]
                if len(mine):
                    spread = float(mine[fleet.qc_check_.statistic].max())
                    passed = bool(mine["passed"].all())
            unit_rows.append({"unit": unit.name, "worker": unit.addr, "host": unit.info["host"],
                              "core": unit.info["core"], "device": unit.info["device"],
                              "run": unit.run, "state": unit.state, "factor": unit.factor,
                              "n_measured": unit.n_measured, "qc_passed": passed,
                              "qc_spread": spread, "note": unit.note})
        fleet.units_ = pd.DataFrame(unit_rows, columns=[
            "unit", "worker", "host", "core", "device", "run", "state", "factor", "n_measured",
            "qc_passed", "qc_spread", "note"])
        n = self.counts["n_measured"]
        fleet.summary_ = {
            **self.counts, "n_skipped": n_skipped, "n_units": len(self.units),
            "n_lost": sum(u.state == "lost" for u in self.units.values()),
            "n_retired": sum(u.state == "retired" for u in self.units.values()),
            "seconds": seconds, "archs_per_hour": 3600.0 * n / seconds if n else math.nan,
            "seconds_per_arch": seconds / n if n else math.nan,
            "qc_passed": None if fleet.qc_check_ is None else bool(fleet.qc_check_.passed)}


