"""Timing primitives: clocks, paired runs, adaptive repeats, device description.

Everything here is independent of search spaces and stores, and torch is
imported only inside the functions that need it (``import esm_sklearn.timing``
loads no torch).

Clocks
    ``"wall"`` is :func:`time.perf_counter`. ``"thread"`` is
    :func:`time.thread_time`, the CPU time of the timing thread: it is blind to
    the time the thread is descheduled by other jobs, but it only sees the work
    done in that thread, so it is valid only on a CPU with one torch thread.
    ``"auto"`` picks ``"thread"`` there and ``"wall"`` everywhere else
    (:func:`resolve_clock`).

Pairing
    Each timed run of a candidate alternates with a run of an *anchor* model
    (anchor first in even pairs, candidate first in odd ones). Both see the
    same machine state within milliseconds, so the per-pair ratio
    ``candidate / anchor`` cancels most of the slow-down a busy host causes.
    The candidate's latency is the median per-pair ratio times the anchor's
    latency calibrated once, alone, on the same clock (:func:`summarize_paired`).

Adaptive repeats
    Timing stops once the 95% confidence interval of the statistic (the trimmed
    mean of the times, or the median of the ratios) is within ``rel_ci`` of it,
    after at least ``min_runs`` runs, and at ``runs`` at the latest
    (:func:`time_runs`, :func:`relative_ci`).
"""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Callable, Sequence

import numpy as np

__all__ = [
    "CLOCKS",
    "summarize_timings",
    "summarize_paired",
    "relative_ci",
    "resolve_clock",
    "clock_function",
    "time_runs",
    "time_model",
    "burn_in",
    "describe_device",
]

CLOCKS = ("auto", "wall", "thread")
# Name -> function giving seconds; a test may swap in a fake clock here.
_CLOCK_FUNCTIONS: dict[str, Callable[[], float]] = {
    "wall": time.perf_counter,
    "thread": time.thread_time,
}
# Two-sided 95% normal quantile: the interval of an adaptive stop.
_Z95 = 1.959964


# ------------------------------------------------------------------ statistics
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


def relative_ci(values, statistic: str = "trimmed_mean", trim: float = 0.2) -> float:
    """Half-width of the 95% confidence interval of a statistic, relative to it.

    ``"median"``: distribution-free interval between the order statistics
    ``n/2 -+ 1.96 sqrt(n)/2``. ``"trimmed_mean"``: Tukey-McLaughlin standard
    error, ``s_w / ((1 - 2 trim) sqrt(n))`` with ``s_w`` the standard deviation
    of the winsorized sample, times 1.96. Fewer than 3 values give ``inf``.

    Examples
    --------
    >>> relative_ci([1.0] * 20, "median")
    0.0
    >>> round(relative_ci([1.0, 1.1] * 50, "trimmed_mean"), 4)
    0.0156
    """
    x = np.sort(np.asarray(values, dtype=float).ravel())
    n = x.size
    if n < 3:
        return math.inf
    if statistic == "median":
        center = float(np.median(x))
        half = _Z95 * math.sqrt(n) / 2
        lo, hi = max(int(math.floor(n / 2 - half)), 0), min(int(math.ceil(n / 2 + half)), n - 1)
        width = (x[hi] - x[lo]) / 2
    elif statistic == "trimmed_mean":
        g = min(int(math.floor(n * trim)), (n - 1) // 2)
        center = float(x[g : n - g].mean())
        winsorized = np.clip(x, x[g], x[n - 1 - g])
        kept = (n - 2 * g) / n
        width = _Z95 * float(winsorized.std(ddof=1)) / (kept * math.sqrt(n))
    else:
        raise ValueError(f"statistic must be 'median' or 'trimmed_mean', got {statistic!r}")
    return float(width / abs(center)) if center else math.inf


def summarize_paired(times_ms, anchor_times_ms, anchor_ms: float, trim: float = 0.2) -> dict:
    """Statistics of paired timings: per-pair ratios scaled by the anchor's latency.

    Parameters
    ----------
    times_ms, anchor_times_ms : array-like of float
        The candidate's and the anchor's time in each pair (ms).
    anchor_ms : float
        The anchor's calibrated latency on the same clock (ms).
    trim : float
        Trim of the raw statistics.

    Returns
    -------
    dict
        ``latency_ms`` = median ratio x ``anchor_ms``; ``median_ms``, ``min_ms``,
        ``p90_ms`` and ``std_ms`` of the ratios times ``anchor_ms``; ``runs``
        (pairs); ``ratio`` (median), ``anchor_ms``, and ``raw`` / ``anchor_raw``:
        :func:`summarize_timings` of each side's own times.

    Examples
    --------
    >>> stats = summarize_paired([4.0, 6.0, 2.2], [2.0, 3.0, 1.0], anchor_ms=1.5)
    >>> stats["ratio"], stats["latency_ms"]
    (2.0, 3.0)
    """
    cand = np.asarray(times_ms, dtype=float).ravel()
    anchor = np.asarray(anchor_times_ms, dtype=float).ravel()
    if cand.size != anchor.size or cand.size == 0:
        raise ValueError(f"paired timings need as many anchor times ({anchor.size}) as "
                         f"candidate times ({cand.size}), at least one")
    if not (math.isfinite(anchor_ms) and anchor_ms > 0):
        raise ValueError(f"anchor_ms must be a positive number, got {anchor_ms!r}")
    if (anchor <= 0).any():
        raise ValueError("an anchor run took no measurable time: the clock is too coarse")
    ratios = cand / anchor
    return {
        "latency_ms": float(np.median(ratios) * anchor_ms),
        "median_ms": float(np.median(ratios) * anchor_ms),
        "min_ms": float(ratios.min() * anchor_ms),
        "p90_ms": float(np.percentile(ratios, 90) * anchor_ms),
        "std_ms": float(ratios.std() * anchor_ms),
        "runs": int(ratios.size),
        "ratio": float(np.median(ratios)),
        "anchor_ms": float(anchor_ms),
        "raw": summarize_timings(cand, trim),
        "anchor_raw": summarize_timings(anchor, trim),
    }


# ---------------------------------------------------------------------- clocks
def resolve_clock(clock: str, device_type: str, threads: int) -> str:
    """The clock a timing uses: ``"wall"`` or ``"thread"``.

    Parameters
    ----------
    clock : {"auto", "wall", "thread"}
    device_type : {"cpu", "cuda"}
    threads : int
        torch intra-op threads during the timing.

    Examples
    --------
    >>> resolve_clock("auto", "cpu", 1), resolve_clock("auto", "cpu", 4)
    ('thread', 'wall')
    >>> resolve_clock("thread", "cuda", 1)
    Traceback (most recent call last):
    ...
    ValueError: clock='thread' measures the CPU time of the timing thread, so it needs a CPU device; got device type 'cuda' (use clock='wall' or 'auto')
    """
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {CLOCKS}, got {clock!r}")
    thread_ok = device_type == "cpu" and threads == 1
    if clock == "auto":
        return "thread" if thread_ok else "wall"
    if clock == "thread" and device_type != "cpu":
        raise ValueError("clock='thread' measures the CPU time of the timing thread, so it "
                         f"needs a CPU device; got device type {device_type!r} "
                         "(use clock='wall' or 'auto')")
    if clock == "thread" and threads != 1:
        raise ValueError("clock='thread' measures the CPU time of the timing thread only, so it "
                         f"needs one torch thread (threads=1); got {threads} threads "
                         "(use clock='wall' or 'auto')")
    return clock


def clock_function(name: str) -> Callable[[], float]:
    """The function (seconds) behind a resolved clock name."""
    try:
        return _CLOCK_FUNCTIONS[name]
    except KeyError:
        raise ValueError(f"clock must be 'wall' or 'thread' here, got {name!r}") from None


# ------------------------------------------------------------------ run loops
def time_runs(run: Callable[[], object], runs: int, clock: str = "wall",
              anchor: Callable[[], object] | None = None, min_runs: int | None = None,
              rel_ci: float | None = None, trim: float = 0.2,
              before: Callable[[], object] | None = None) -> dict:
    """Time ``run()`` up to ``runs`` times, paired with ``anchor()`` when given.

    Parameters
    ----------
    run, anchor : callable
        One inference each (results ignored).
    runs : int
        Largest number of timed runs (pairs when paired).
    clock : {"wall", "thread"}
        A resolved clock (:func:`resolve_clock`).
    min_runs, rel_ci : int and float, optional
        Adaptive stop: after ``min_runs`` runs, stop as soon as
        :func:`relative_ci` of the statistic (median ratio when paired, else
        the trimmed mean) is at most ``rel_ci``. None: always ``runs``.
    before : callable, optional
        Called untimed before each timed call (e.g. ``torch.cuda.synchronize``).

    Returns
    -------
    dict
        ``times_ms`` and ``anchor_times_ms`` (None unpaired) arrays of the runs
        done, ``runs``, ``stopped_early``, ``rel_ci`` (reached; NaN when not
        adaptive), ``seconds`` (wall time of the loop).

    Examples
    --------
    >>> out = time_runs(lambda: sum(range(100)), runs=5)
    >>> out["runs"], out["times_ms"].shape, out["anchor_times_ms"]
    (5, (5,), None)
    """
    now = clock_function(clock)
    adaptive = rel_ci is not None
    first_check = max(int(min_runs or 1), 3)
    times = np.empty(int(runs))
    anchor_times = np.empty(int(runs)) if anchor is not None else None
    statistic = "median" if anchor is not None else "trimmed_mean"
    start_wall = time.perf_counter()
    reached, n = math.nan, 0

    def timed(fn) -> float:
        if before is not None:
            before()
        t0 = now()
        fn()
        if before is not None:
            before()
        return (now() - t0) * 1e3

    for i in range(int(runs)):
        if anchor is None:
            times[i] = timed(run)
        elif i % 2 == 0:
            anchor_times[i] = timed(anchor)
            times[i] = timed(run)
        else:
            times[i] = timed(run)
            anchor_times[i] = timed(anchor)
        n = i + 1
        if adaptive and n >= first_check:
            values = times[:n] if anchor is None else times[:n] / np.maximum(
                anchor_times[:n], 1e-12)
            reached = relative_ci(values, statistic, trim)
            if reached <= rel_ci:
                break
    return {
        "times_ms": times[:n],
        "anchor_times_ms": None if anchor_times is None else anchor_times[:n],
        "runs": n,
        "stopped_early": n < int(runs),
        "rel_ci": reached,
        "seconds": time.perf_counter() - start_wall,
    }


def burn_in(calls: Sequence[Callable[[], object]], seconds: float,
            clock: Callable[[], float] = time.perf_counter) -> int:
    """Run ``calls`` in turn, untimed, for about ``seconds``; returns the calls made.

    The first timings after start-up are slow (clock ramp, caches, allocator,
    lazy kernel set-up); a burn-in before the first reference round keeps that
    out of quality control. Every call runs at least once when ``seconds > 0``.

    Examples
    --------
    >>> burn_in([lambda: None], 0.0)
    0
    """
    if seconds <= 0 or not calls:
        return 0
    end = clock() + seconds
    done = 0
    while True:
        for call in calls:
            call()
            done += 1
        if clock() >= end:
            return done


def time_model(model, input_shape, device="cpu", warmup: int = 10, runs: int = 150,
               trim: float = 0.2, clock: str = "wall", anchor=None,
               anchor_input_shape=None, anchor_ms: float | None = None,
               min_runs: int | None = None, rel_ci: float | None = None,
               seed: int | None = None) -> dict:
    """Time a ``torch.nn.Module`` on a device (ESM protocol, optionally paired).

    Parameters
    ----------
    model : torch.nn.Module
        Moved to ``device`` and put in eval mode; run under
        ``torch.inference_mode`` on one random input of ``input_shape``.
    input_shape : tuple of int
        E.g. ``(batch_size, 3, 224, 224)``.
    device : str or torch.device
    warmup, runs, trim : int, int, float
        Untimed passes (of each model), most timed passes, trim of the mean.
    clock : {"wall", "thread"}
        A resolved clock; on CUDA every timed pass is synchronised.
    anchor : torch.nn.Module, optional
        Paired timing against this model (:func:`summarize_paired`); then
        ``anchor_ms`` (its calibrated latency) is required.
    anchor_input_shape : tuple of int, optional
        Input of the anchor (default ``input_shape``).
    min_runs, rel_ci : optional
        Adaptive stop (:func:`time_runs`).
    seed : int, optional
        Seed of the random inputs.

    Returns
    -------
    dict
        :func:`summarize_timings` (unpaired) or :func:`summarize_paired`
        statistics, plus ``clock``, ``seconds`` and ``rel_ci`` (the relative
        95% interval reached, NaN when not adaptive).

    Examples
    --------
    >>> import torch
    >>> stats = time_model(torch.nn.Linear(4, 2), (1, 4), warmup=1, runs=3)
    >>> stats["runs"], stats["clock"]
    (3, 'wall')
    """
    import torch

    dev = torch.device(device) if isinstance(device, str) else device
    if anchor is not None and anchor_ms is None:
        raise ValueError("paired timing needs the anchor's calibrated latency (anchor_ms)")
    generator = torch.Generator().manual_seed(int(seed)) if seed is not None else None

    def random_input(shape):
        return torch.randn(*tuple(int(s) for s in shape), generator=generator).to(dev)

    model = model.to(dev).eval()
    x = random_input(input_shape)
    before = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else None
    pair = None
    with torch.inference_mode():
        if anchor is not None:
            anchor = anchor.to(dev).eval()
            shape = input_shape if anchor_input_shape is None else anchor_input_shape
            xa = random_input(shape)

            def pair():
                return anchor(xa)

        for _ in range(int(warmup)):
            model(x)
            if pair is not None:
                pair()
        out = time_runs(lambda: model(x), runs, clock=clock, anchor=pair, min_runs=min_runs,
                        rel_ci=rel_ci, trim=trim, before=before)
    if pair is None:
        stats = summarize_timings(out["times_ms"], trim)
    else:
        stats = summarize_paired(out["times_ms"], out["anchor_times_ms"], anchor_ms, trim)
    stats.update(clock=clock, seconds=out["seconds"], rel_ci=out["rel_ci"])
    return stats


# ------------------------------------------------------------------ devices
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

    Examples
    --------
    >>> info = describe_device("cpu", threads=1, resolution=128)
    >>> info["type"], info["threads"], info["batch_size"], info["resolution"]
    ('cpu', 1, 1, 128)
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
