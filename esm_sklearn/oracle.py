"""Oracles: where latencies come from.

:class:`TorchLatencyOracle` builds architectures of a :class:`~esm_sklearn.SearchSpace`
as PyTorch modules and times them on a device with the ESM protocol (warm-up,
``runs`` timed inferences, mean of the middle 60%), with quality control by
repeated timings of reference architectures (:class:`ReferenceMonitor`), a
durable, resumable record in a :class:`~esm_sklearn.store.MeasurementStore`, and
per-block profiling for lookup tables (:meth:`TorchLatencyOracle.profile_blocks`).

:class:`TableOracle` replays an already measured table, which is how sampling
strategies and encodings are compared offline.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state

from .quality import ReferenceCheck, check_references, drift_correct
from .spaces import SearchSpace, arch_key, as_arch_list, get_space, infer_space
from .store import MeasurementStore, setting_key

__all__ = [
    "TorchLatencyOracle",
    "TableOracle",
    "ReferenceMonitor",
    "summarize_timings",
    "describe_device",
]

_STAT_COLUMNS = ["latency_ms", "median_ms", "min_ms", "p90_ms", "std_ms", "runs"]
_LUT_COLUMNS = [
    "space", "unit", "position", "kernel_size", "expand_ratio", "in_channels",
    "out_channels", "in_hw", "stride", "latency_ms", "std_ms", "runs",
]


# --------------------------------------------------------------------- helpers
def summarize_timings(times_ms, trim: float = 0.2) -> dict:
    """Statistics of repeated timings in the ESM format.

    Parameters
    ----------
    times_ms : array-like of float
        One timing per run, in milliseconds.
    trim : float
        Fraction dropped at each end before averaging (0.2 keeps the middle 60%).
        At least one run is always kept.

    Returns
    -------
    dict
        ``latency_ms`` (trimmed mean), and ``median_ms``, ``min_ms``, ``p90_ms``,
        ``std_ms`` over all runs, and ``runs``.

    Examples
    --------
    >>> summarize_timings([1, 2, 3, 4, 100], trim=0.2)["latency_ms"]
    3.0
    """
    times = np.sort(np.asarray(times_ms, dtype=float).ravel())
    n = times.size
    if n == 0:
        raise ValueError("summarize_timings needs at least one timing")
    if not 0 <= trim < 0.5:
        raise ValueError(f"trim must be in [0, 0.5), got {trim!r}")
    k = min(int(math.floor(n * trim)), (n - 1) // 2)
    return {
        "latency_ms": float(times[k : n - k].mean()),
        "median_ms": float(np.median(times)),
        "min_ms": float(times[0]),
        "p90_ms": float(np.percentile(times, 90)),
        "std_ms": float(times.std()),
        "runs": int(n),
    }


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _parse_device(device):
    """``torch.device`` for a device string, or ``ValueError`` saying why not."""
    import torch

    if isinstance(device, torch.device):
        dev = device
    elif isinstance(device, str):
        try:
            dev = torch.device(device)
        except (RuntimeError, ValueError) as exc:
            raise ValueError(
                f"device {device!r} is not a valid torch device string "
                f"(use 'cpu', 'cuda' or 'cuda:<index>'): {exc}"
            ) from None
    else:
        raise ValueError(f"device must be a string such as 'cpu' or 'cuda:0', got {device!r}")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device {device!r}: only 'cpu' and 'cuda[:index]' are supported")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available here")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) exist"
            )
    return dev


def describe_device(device="cpu", threads: int | None = None, batch_size: int = 1,
                    resolution: int | None = None) -> dict:
    """Description of a timing setting, as written to the store.

    Returns a dict with ``name`` (CPU model or CUDA device name), ``type``,
    ``torch``, ``cuda`` (CUDA version of the torch build or None), ``threads``
    (torch intra-op threads; the current setting when None), ``batch_size`` and
    ``resolution``.
    """
    import torch

    dev = _parse_device(device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else _cpu_name()
    return {
        "name": name,
        "type": dev.type,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "threads": int(threads) if threads is not None else int(torch.get_num_threads()),
        "batch_size": int(batch_size),
        "resolution": None if resolution is None else int(resolution),
    }


def _is_int(value, low: int) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= low


def _load_extra(value) -> dict:
    if isinstance(value, dict):
        return value
    if isinstance(value, str) and value:
        try:
            out = json.loads(value)
        except json.JSONDecodeError:
            return {}
        return out if isinstance(out, dict) else {}
    return {}


# --------------------------------------------------------------- quality control
class ReferenceMonitor:
    """Quality control by repeated timings of reference architectures.

    Every QC round times each reference once (``timer``) and computes the spread
    of every reference across the rounds that passed so far plus this one, with
    :func:`esm_sklearn.quality.check_references` (coefficient of variation,
    ``std / mean`` with ddof 0). :meth:`run` times a round at the start, after
    every batch, which is timed again (up to ``max_retries`` times) while its
    closing round fails. Every round is recorded in :attr:`rounds` (and passed to
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
        base = self._frame("passed")
        if len(base):
            check = check_references(pd.concat([base, candidate], ignore_index=True),
                                     threshold=self.threshold)
            passed = bool(check.passed)
        else:  # the first round has nothing to be compared with
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

        None before two such rounds exist.
        """
        frame = self._frame("final")
        if frame["round"].nunique() < 2:
            return None
        return check_references(frame, threshold=self.threshold)

    def frame(self) -> pd.DataFrame:
        """One row per round of this session: passed, spread, retry, ..."""
        cols = ["round", "batch", "retry", "after_arch_id", "n_references", "spread",
                "passed", "final"]
        return pd.DataFrame([{k: o[k] for k in cols} for o in self.rounds], columns=cols)


# ------------------------------------------------------------------ the oracle
class TorchLatencyOracle(BaseEstimator):
    """Time architectures of a search space on a PyTorch device.

    Each model is built through ``space.build_model``, put in eval mode, moved
    to ``device`` and run under ``torch.inference_mode`` on one input tensor:
    ``warmup`` passes, then ``runs`` passes each timed with
    ``time.perf_counter`` (with ``torch.cuda.synchronize`` around it on a GPU).
    The latency is the mean after dropping the fastest and slowest ``trim``
    fraction; median, min, p90 and std over all runs are kept in :attr:`stats_`.

    Parameters
    ----------
    device : str
        ``"cpu"``, ``"cuda"`` or ``"cuda:<index>"``.
    batch_size : int
        Input batch size.
    resolution : int, optional
        Input resolution; default: the architecture's ``resolution`` choice, else
        the space's ``default_resolution``.
    warmup : int
        Untimed passes before timing.
    runs : int
        Timed passes per model.
    trim : float
        Fraction of runs dropped at each end before averaging.
    n_references : int
        Reference architectures drawn from the space (seeded by
        ``random_state``) and timed at the start, every ``check_every``
        architectures and at the end; 0 turns quality control off.
    check_every : int or None
        Architectures between reference checks (None: only start and end).
    variance_threshold : float
        Largest allowed spread (coefficient of variation across rounds) of any
        reference; above it the batch since the last passing check is timed again.
    max_retries : int
        How often a batch is timed again before the failure is accepted (and
        recorded).
    threads : int, optional
        torch intra-op threads while timing (restored afterwards); None keeps
        the current setting.
    store : str, path or MeasurementStore, optional
        Every measurement is written there as it completes; architectures
        already recorded under the same device and protocol are not measured
        again (their stored latency is returned).
    drift_correction : bool
        Divide each latency by the reference level interpolated at its position
        (:func:`esm_sklearn.quality.drift_correct`); the raw value stays in
        ``stats_["raw_latency_ms"]`` and in the store.
    random_state : int or None
        Seed of the reference architectures (None is read as 0: references must
        be the same when a collection resumes).
    progress : bool
        Show a tqdm progress bar (ETA, QC state) on standard error.

    Attributes
    ----------
    stats_ : DataFrame
        One row per input architecture of the last :meth:`measure` call: ``arch``
        (key), ``space``, ``sampling``, ``status`` (``ok``/``failed``), ``skipped``
        (taken from the store), ``latency_ms``, ``median_ms``, ``min_ms``,
        ``p90_ms``, ``std_ms``, ``runs``, ``error``, ``order`` (store row id),
        ``retries``; with drift correction also ``raw_latency_ms`` and
        ``drift_factor``.
    qc_ : DataFrame
        One row per reference round of the last call: ``round``, ``batch``,
        ``retry``, ``after_arch_id``, ``n_references``, ``spread`` (largest cv),
        ``passed``, ``final`` (see :class:`ReferenceMonitor`).
    qc_check_ : ReferenceCheck or None
        Spread per reference over every round that closes kept data
        (including earlier sessions in the store); ``qc_check_.passed``.
    references_ : DataFrame
        Reference timings of the last call.
    device_info_ : dict
        The device description (see :func:`describe_device`).
    setting_key_ : str
        Key of device and protocol in the store.
    summary_ : dict
        ``n_measured``, ``n_failed``, ``n_skipped``, ``n_retimed``, ``seconds``,
        ``seconds_per_arch`` (wall time, references included, per timed
        architecture), ``qc_passed``.

    Notes
    -----
    Resuming: with a store, architectures recorded under the same setting
    (:func:`~esm_sklearn.store.setting_key` of the device description and
    ``warmup``/``runs``/``trim``) are skipped, failed ones included; the
    references are timed anew (a new QC round, compared with the passing
    rounds of earlier sessions). Re-timed architectures are new store rows; the
    exports keep the last ok row per architecture.

    Examples
    --------
    >>> from esm_sklearn import get_space
    >>> space = get_space("mobilenetv3")
    >>> archs = space.sample(2, random_state=0)
    >>> oracle = TorchLatencyOracle(resolution=32, warmup=1, runs=5, n_references=0)
    >>> oracle.measure(archs).shape  # doctest: +SKIP
    (2,)
    """

    def __init__(self, device="cpu", batch_size=1, resolution=None, warmup=10, runs=150,
                 trim=0.2, n_references=4, check_every=150, variance_threshold=0.03,
                 max_retries=2, threads=None, store=None, drift_correction=False,
                 random_state=0, progress=False):
        self.device = device
        self.batch_size = batch_size
        self.resolution = resolution
        self.warmup = warmup
        self.runs = runs
        self.trim = trim
        self.n_references = n_references
        self.check_every = check_every
        self.variance_threshold = variance_threshold
        self.max_retries = max_retries
        self.threads = threads
        self.store = store
        self.drift_correction = drift_correction
        self.random_state = random_state
        self.progress = progress

    # ------------------------------------------------------------ validation
    def _check_params(self):
        dev = _parse_device(self.device)
        for name, low in (("batch_size", 1), ("warmup", 0), ("runs", 1), ("n_references", 0),
                          ("max_retries", 0)):
            if not _is_int(getattr(self, name), low):
                raise ValueError(f"{name} must be an int >= {low}, got {getattr(self, name)!r}")
        for name in ("resolution", "check_every", "threads"):
            value = getattr(self, name)
            if value is not None and not _is_int(value, 1):
                raise ValueError(f"{name} must be None or an int >= 1, got {value!r}")
        if not isinstance(self.trim, (int, float)) or not 0 <= self.trim < 0.5:
            raise ValueError(f"trim must be in [0, 0.5), got {self.trim!r}")
        if not isinstance(self.variance_threshold, (int, float)) or not self.variance_threshold > 0:
            raise ValueError(f"variance_threshold must be > 0, got {self.variance_threshold!r}")
        if not (self.store is None or isinstance(self.store, (str, os.PathLike, MeasurementStore))):
            raise ValueError(
                f"store must be None, a path or a MeasurementStore, got {type(self.store).__name__}"
            )
        if self.drift_correction and self.n_references == 0:
            raise ValueError("drift_correction=True needs n_references >= 1")
        return dev

    def _protocol(self) -> dict:
        return {"warmup": int(self.warmup), "runs": int(self.runs), "trim": float(self.trim)}

    def _effective_resolution(self, space: SearchSpace) -> int | None:
        if self.resolution is not None:
            return int(self.resolution)
        if "resolution" in space.global_choices:
            return None  # per architecture
        return int(space.default_resolution)

    @contextmanager
    def _thread_setting(self):
        import torch

        before = torch.get_num_threads()
        try:
            if self.threads is not None:
                torch.set_num_threads(int(self.threads))
            yield
        finally:
            if self.threads is not None:
                torch.set_num_threads(before)

    def _open_store(self):
        if self.store is None:
            return None, False
        if isinstance(self.store, MeasurementStore):
            return self.store, False
        return MeasurementStore(self.store), True

    def reference_archs(self, space) -> list[dict]:
        """The ``n_references`` reference architectures of ``space`` (seeded)."""
        space = get_space(space)
        seed = 0 if self.random_state is None else self.random_state
        if isinstance(seed, (int, np.integer)):
            # Own stream: references differ from archs sampled with the same seed.
            rng = np.random.RandomState([int(seed) % (2**32), 0x5EF])
        else:
            rng = check_random_state(seed)
        return space.sample(int(self.n_references), strategy="random", random_state=rng,
                            unique=True)

    def device_description(self, space=None) -> dict:
        """Device description (name, type, torch, cuda, threads, batch size, resolution)."""
        dev = self._check_params()
        res = self._effective_resolution(get_space(space)) if space is not None else self.resolution
        return describe_device(dev, self.threads, self.batch_size, res)

    # ----------------------------------------------------------------- timing
    def time_model(self, model, input_shape) -> dict:
        """Time one module with this oracle's protocol.

        Parameters
        ----------
        model : torch.nn.Module
            Moved to the device and put in eval mode.
        input_shape : tuple of int
            Shape of the input tensor, e.g. ``(batch_size, 3, 224, 224)``.

        Returns
        -------
        dict
            See :func:`summarize_timings`.
        """
        import torch

        dev = self._check_params()
        cuda = dev.type == "cuda"
        model = model.to(dev).eval()
        x = torch.randn(*tuple(int(s) for s in input_shape), device=dev)
        times = np.empty(int(self.runs))
        with torch.inference_mode():
            for _ in range(int(self.warmup)):
                model(x)
            for i in range(int(self.runs)):
                if cuda:
                    torch.cuda.synchronize(dev)
                start = time.perf_counter()
                model(x)
                if cuda:
                    torch.cuda.synchronize(dev)
                times[i] = time.perf_counter() - start
        return summarize_timings(times * 1e3, self.trim)

    def _time_arch(self, space: SearchSpace, arch: dict, dev) -> dict:
        """Build and time one architecture; any build or run error is returned as failed."""
        import torch

        model = None
        try:
            model = space.build_model(arch, resolution=self.resolution)
            res = space.input_resolution(arch, self.resolution)
            stats = self.time_model(model, (int(self.batch_size), 3, res, res))
            stats.update(status="ok", error=None)
        except Exception as exc:  # noqa: BLE001 - recorded, never dropped: see status/error
            stats = {c: np.nan for c in _STAT_COLUMNS}
            stats.update(runs=0, status="failed", error=f"{type(exc).__name__}: {exc}"[:2000])
        finally:
            del model
            if dev.type == "cuda":
                torch.cuda.empty_cache()
        return stats

    # ---------------------------------------------------------------- measure
    def measure(self, archs, space=None, sampling=None) -> np.ndarray:
        """Latency in ms of each architecture, in order (NaN where it failed).

        Parameters
        ----------
        archs : sequence of dict or JSON str
            Architectures of one space; all are validated before anything runs.
        space : str or SearchSpace, optional
            Default: the ``space`` field of the architectures.
        sampling : str or sequence of str, optional
            Label(s) written to the store's ``sampling`` column.

        Returns
        -------
        ndarray of shape (n_archs,)
        """
        dev = self._check_params()
        archs = as_arch_list(archs)
        space = get_space(space) if space is not None else infer_space(archs)
        canon = space.validate_many(archs)
        if sampling is None or isinstance(sampling, str):
            labels = [sampling] * len(canon)
        else:
            labels = list(sampling)
            if len(labels) != len(canon):
                raise ValueError(
                    f"sampling has {len(labels)} labels for {len(canon)} architectures"
                )
        keys = [arch_key(a) for a in canon]
        t_start = time.perf_counter()
        store, own_store = self._open_store()
        try:
            with self._thread_setting():
                self._measure(space, dev, canon, keys, labels, store)
        finally:
            if own_store:
                store.close()
        self.summary_["seconds"] = time.perf_counter() - t_start
        n_timed = self.summary_["n_measured"] + self.summary_["n_retimed"]
        self.summary_["seconds_per_arch"] = (
            self.summary_["seconds"] / n_timed if n_timed else float("nan")
        )
        return self.stats_["latency_ms"].to_numpy(dtype=float)

    def _measure(self, space, dev, canon, keys, labels, store):
        device_info = describe_device(dev, self.threads, self.batch_size,
                                      self._effective_resolution(space))
        protocol = self._protocol()
        skey = setting_key(device_info, protocol)
        self.device_info_ = device_info
        self.setting_key_ = skey

        # What the store already holds under this setting. Positions (``order``,
        # ``after_arch_id``) are store row ids, as in MeasurementStore.to_latency_table;
        # without a store a local counter plays that role.
        results: dict[str, dict] = {}
        ref_history = None
        state = {"position": -1, "session": 1}
        if store is not None:
            prev = store.frame(kind="arch", setting_key=skey)
            refs = store.frame(kind="reference", setting_key=skey)
            if len(prev):
                state["position"] = int(prev["id"].max())
            sessions = [_load_extra(e).get("session", 0) for e in [*prev["extra"], *refs["extra"]]]
            state["session"] = max([0, *sessions]) + 1
            for row in prev.to_dict("records"):
                old = results.get(row["arch_key"])
                # The last ok row wins; a failure only stands when nothing succeeded.
                if old is None or row["status"] == "ok" or old["status"] != "ok":
                    results[row["arch_key"]] = {
                        **{c: row.get(c) for c in _STAT_COLUMNS}, "status": row["status"],
                        "error": row.get("error"), "skipped": True, "order": int(row["id"]),
                        "retries": _load_extra(row.get("extra")).get("retry", 0)}
            if len(refs):
                ref_history = pd.DataFrame({
                    "ref_id": refs["ref_id"].astype(int),
                    "round": refs["qc_round"].astype(int),
                    "latency_ms": refs["latency_ms"].astype(float),
                    "passed": [_load_extra(e).get("passed", True) for e in refs["extra"]],
                    "final": [_load_extra(e).get("final", True) for e in refs["extra"]],
                })
        n_skipped = sum(1 for k in dict.fromkeys(keys) if k in results)
        todo = []
        for key, arch, label in zip(keys, canon, labels, strict=True):
            if key not in results:
                results[key] = None  # placeholder: measured below
                todo.append((key, arch, label))
        counts = {"n_measured": 0, "n_failed": 0, "n_retimed": 0}
        common = {"space": space.name, "setting_key": skey, "device": device_info,
                  "protocol": protocol}
        ref_rows: list[dict] = []
        monitor = None

        bar = None
        if self.progress and todo:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(todo), desc=f"{space.name} on {device_info['type']}",
                       unit="arch", file=sys.stderr, dynamic_ncols=True)

        def postfix():
            if bar is not None:
                info = {"failed": counts["n_failed"]}
                if monitor is not None:
                    info["qc"] = monitor.state
                bar.set_postfix(info, refresh=True)

        def add(record) -> int:
            if store is not None:
                return store.add(record)
            state["local_id"] = state.get("local_id", 0) + 1
            return state["local_id"]

        def measure_batch(b, batch, retry):
            if retry and bar is not None:
                bar.total += len(batch)
                bar.refresh()
            for key, arch, label in batch:
                stats = self._time_arch(space, arch, dev)
                row_id = add({**common, "kind": "arch", "arch_key": key, "sampling": label,
                              **{c: stats[c] for c in _STAT_COLUMNS}, "status": stats["status"],
                              "error": stats["error"],
                              "extra": {"session": state["session"], "qc_batch": b,
                                        "retry": retry,
                                        "resolution": space.input_resolution(arch, self.resolution)}})
                state["position"] = row_id
                prev = results.get(key)
                if prev is None or stats["status"] == "ok" or prev["status"] != "ok":
                    results[key] = {**{c: stats[c] for c in _STAT_COLUMNS},
                                    "status": stats["status"], "error": stats["error"],
                                    "skipped": False, "order": row_id, "retries": retry}
                if retry:
                    counts["n_retimed"] += 1
                else:
                    counts["n_measured"] += 1
                    counts["n_failed"] += stats["status"] != "ok"
                if bar is not None:
                    postfix()
                    bar.update(1)

        def time_reference(ref_id, ref):
            stats = self._time_arch(space, ref, dev)
            if stats["status"] != "ok":
                raise RuntimeError(
                    f"reference architecture {ref_id} ({arch_key(ref)}) could not be timed, "
                    f"so quality control is impossible: {stats['error']}"
                )
            return stats

        def on_round(rows, outcome):
            extra = {"session": state["session"], "qc_batch": outcome["batch"],
                     "retry": outcome["retry"], "passed": outcome["passed"],
                     "final": outcome["final"], "spread": outcome["spread"]}
            for row in rows:
                ref = monitor.references[row["ref_id"]]
                add({**common, "kind": "reference", "arch_key": arch_key(ref),
                     "sampling": "reference", "ref_id": row["ref_id"], "qc_round": row["round"],
                     "after_arch_id": row["after_arch_id"],
                     **{c: row[c] for c in _STAT_COLUMNS}, "status": "ok", "extra": extra})
                ref_rows.append({"space": space.name, "ref_id": row["ref_id"],
                                 "round": row["round"], "after_arch_id": row["after_arch_id"],
                                 "batch_size": int(self.batch_size),
                                 **{c: row[c] for c in ("latency_ms", "median_ms", "std_ms",
                                                        "runs")},
                                 **{k: extra[k] for k in ("retry", "passed", "final")}})
            postfix()

        step = int(self.check_every) if self.check_every else max(len(todo), 1)
        batches = [todo[i : i + step] for i in range(0, len(todo), step)]
        try:
            if self.n_references and todo:
                monitor = ReferenceMonitor(self.reference_archs(space), time_reference,
                                           threshold=self.variance_threshold,
                                           max_retries=int(self.max_retries),
                                           history=ref_history, on_round=on_round)
                monitor.run(batches, measure_batch, position=lambda: state["position"])
            else:
                for b, batch in enumerate(batches):
                    measure_batch(b, batch, 0)
        finally:
            if bar is not None:
                bar.close()

        rows = [{"arch": key, "space": space.name, "sampling": label, **results[key]}
                for key, label in zip(keys, labels, strict=True)]
        stats = pd.DataFrame(rows, columns=["arch", "space", "sampling", "status", "skipped",
                                            *_STAT_COLUMNS, "error", "order", "retries"])
        stats["latency_ms"] = stats["latency_ms"].astype(float)
        self.references_ = pd.DataFrame(
            ref_rows, columns=["space", "ref_id", "round", "after_arch_id", "batch_size",
                               "latency_ms", "median_ms", "std_ms", "runs", "retry", "passed",
                               "final"])
        if monitor is not None:
            self.qc_ = monitor.frame()
            self.qc_check_ = monitor.summary()
        else:
            self.qc_ = ReferenceMonitor([], None).frame()
            self.qc_check_ = None
            if ref_history is not None:
                final = ref_history[ref_history["final"].astype(bool)]
                if final["round"].nunique() >= 2:
                    self.qc_check_ = check_references(final[["ref_id", "round", "latency_ms"]],
                                                      threshold=self.variance_threshold)
        if self.drift_correction:
            stats = self._drift_correct(stats, store, skey)
        self.stats_ = stats
        self.summary_ = {**counts, "n_skipped": n_skipped,
                         "qc_passed": None if self.qc_check_ is None else bool(self.qc_check_.passed)}

    def _drift_correct(self, stats: pd.DataFrame, store, skey) -> pd.DataFrame:
        """Divide latencies by the reference level interpolated at their position."""
        if store is not None:
            refs = store.frame(kind="reference", setting_key=skey, status="ok")
            refs = pd.DataFrame({"ref_id": refs["ref_id"], "round": refs["qc_round"],
                                 "after_arch_id": refs["after_arch_id"],
                                 "latency_ms": refs["latency_ms"]})
        else:
            refs = self.references_[["ref_id", "round", "after_arch_id", "latency_ms"]]
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

    # -------------------------------------------------------- block profiling
    def profile_blocks(self, space, resolution=None, densenet_channel_step: int = 32,
                       store_rows: bool = True) -> pd.DataFrame:
        """Time every distinct block of ``space`` alone on its real input shape.

        Parameters
        ----------
        space : str or SearchSpace
        resolution : int, optional
            Input resolution of the whole network (default: ``self.resolution``,
            else the space's default).
        densenet_channel_step : int
            DenseNet layers are profiled on a grid of input widths with this step
            (the lookup-table encoder interpolates between them).
        store_rows : bool
            Also write each block to ``store`` (kind ``"block"``) when one is set.

        Returns
        -------
        DataFrame
            The ``*_b1_lut.csv`` format: space, unit, position, kernel_size,
            expand_ratio, in_channels, out_channels, in_hw, stride, latency_ms,
            std_ms, runs.
        """
        from .models import block_specs

        dev = self._check_params()
        space = get_space(space)
        if resolution is None:
            resolution = self.resolution
        specs = block_specs(space, resolution=resolution,
                            densenet_channel_step=densenet_channel_step)
        store, own_store = self._open_store() if store_rows else (None, False)
        rows = []
        try:
            with self._thread_setting():
                device_info = describe_device(dev, self.threads, self.batch_size,
                                              resolution if resolution is not None
                                              else self._effective_resolution(space))
                skey = setting_key(device_info, self._protocol())
                for spec in specs:
                    fields = {c: getattr(spec, c) for c in _LUT_COLUMNS[:9]}
                    module = spec.build()
                    try:
                        stats = self.time_model(module, spec.input_shape(int(self.batch_size)))
                    finally:
                        del module
                        if dev.type == "cuda":
                            import torch

                            torch.cuda.empty_cache()
                    rows.append({**fields, "latency_ms": stats["latency_ms"],
                                 "std_ms": stats["std_ms"], "runs": stats["runs"]})
                    if store is not None:
                        store.add({"kind": "block", "space": space.name, "setting_key": skey,
                                   "arch_key": json.dumps(_jsonable(fields), sort_keys=True,
                                                          separators=(",", ":")),
                                   "device": device_info, "protocol": self._protocol(),
                                   **{c: stats[c] for c in _STAT_COLUMNS},
                                   "status": "ok", "error": None})
        finally:
            if own_store:
                store.close()
        return pd.DataFrame(rows, columns=_LUT_COLUMNS)


def _jsonable(fields: dict) -> dict:
    out = {}
    for k, v in fields.items():
        if isinstance(v, np.generic):
            v = v.item()
        out[k] = v
    return out


# -------------------------------------------------------------- table oracle
class TableOracle(BaseEstimator):
    """Replay a measured table: the latency of an architecture is looked up.

    Parameters
    ----------
    archs : sequence of dict or JSON str
        The table's architectures.
    latencies : array-like of float
        Their latencies (ms). An architecture listed twice gets the mean.
    space : str or SearchSpace, optional
        Space used to canonicalise architectures (``0.667`` matches ``0.6667``);
        default: each architecture's ``space`` field.

    Examples
    --------
    >>> from esm_sklearn import get_space
    >>> archs = get_space("densenet").sample(3, random_state=0)
    >>> oracle = TableOracle(archs, [1.0, 2.0, 3.0])
    >>> oracle.measure([archs[2], archs[0]]).tolist()
    [3.0, 1.0]
    """

    def __init__(self, archs, latencies, space=None):
        self.archs = archs
        self.latencies = latencies
        self.space = space

    def _canon_key(self, arch, space) -> str:
        if space is None:
            if isinstance(arch, (str, bytes)):
                try:
                    arch = json.loads(arch)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"architecture is not valid JSON: {exc}") from None
            if not isinstance(arch, dict) or "space" not in arch:
                raise ValueError(
                    f"architecture {str(arch)[:80]!r} has no 'space' field; pass space="
                )
            space = arch["space"]
        return arch_key(get_space(space).validate(arch))

    def _table(self) -> tuple[dict, list]:
        # The cache holds the parameter objects themselves, so set_params invalidates it.
        ident = (self.archs, self.latencies, self.space)
        cached = self.__dict__.get("_cache")
        if cached is not None and all(a is b for a, b in zip(cached[0], ident, strict=True)):
            return cached[1], cached[2]
        archs = as_arch_list(self.archs)
        lat = np.asarray(self.latencies, dtype=float).ravel()
        if len(archs) != lat.size:
            raise ValueError(f"TableOracle: {len(archs)} architectures but {lat.size} latencies")
        bad = np.flatnonzero(~np.isfinite(lat))
        if bad.size:
            raise ValueError(f"TableOracle: latency of row {int(bad[0])} is {lat[bad[0]]}, not finite")
        sums: dict[str, list] = {}
        order = []
        for i, (arch, value) in enumerate(zip(archs, lat, strict=True)):
            try:
                key = self._canon_key(arch, self.space)
            except ValueError as exc:
                raise ValueError(f"TableOracle row {i}: {exc}") from None
            if key not in sums:
                sums[key] = [0.0, 0]
                order.append(key)
            sums[key][0] += float(value)
            sums[key][1] += 1
        table = {k: s / n for k, (s, n) in sums.items()}
        self.__dict__["_cache"] = (ident, table, order)
        return table, order

    def __getstate__(self):
        state = super().__getstate__()
        state = dict(state)
        state.pop("_cache", None)
        return state

    def measure(self, archs, space=None, sampling=None) -> np.ndarray:
        """Latencies (ms) of ``archs`` from the table.

        Raises
        ------
        KeyError
            Naming the first architecture that is not in the table.
        """
        table, _ = self._table()
        space = space if space is not None else self.space
        out = []
        for i, arch in enumerate(as_arch_list(archs)):
            key = self._canon_key(arch, space)
            if key not in table:
                raise KeyError(f"architecture {i} is not in the table: {key}")
            out.append(table[key])
        return np.asarray(out, dtype=float)

    def candidates(self) -> list[dict]:
        """The table's distinct architectures (canonical dicts, table order)."""
        _, order = self._table()
        return [json.loads(k) for k in order]

    @property
    def archs_(self) -> list[dict]:
        """Same as :meth:`candidates`."""
        return self.candidates()

    def __len__(self) -> int:
        return len(self._table()[1])
