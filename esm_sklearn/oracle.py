"""Oracles: where latencies come from.

:class:`TorchLatencyOracle` builds architectures of a :class:`~esm_sklearn.SearchSpace`
as PyTorch modules and times them on a device (clocks, pairing with an anchor
model and adaptive repeats come from :mod:`esm_sklearn.timing`), with quality
control by repeated timings of reference architectures
(:class:`~esm_sklearn.quality.ReferenceMonitor`), a durable, resumable record in
a :class:`~esm_sklearn.store.MeasurementStore`, and per-block profiling for
lookup tables (:meth:`TorchLatencyOracle.profile_blocks`).

:class:`TableOracle` replays an already measured table, which is how sampling
strategies and encodings are compared offline.
"""

from __future__ import annotations

import json
import os
import time
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state

from . import timing
from ._validation import check_fraction, check_int, check_real, plain
from .collection import STAT_COLUMNS, Collection, stored_anchor_ms, timing_extra
from .quality import ReferenceMonitor
from .spaces import SearchSpace, arch_key, as_arch_list, get_space, infer_space
from .store import MeasurementStore, setting_key
from .table_oracle import TableOracle
from .timing import _parse_device, describe_device, summarize_timings

__all__ = [
    "TorchLatencyOracle",
    "TableOracle",
    "ReferenceMonitor",
    "summarize_timings",
    "describe_device",
]

_LUT_COLUMNS = [
    "space", "unit", "position", "kernel_size", "expand_ratio", "in_channels",
    "out_channels", "in_hw", "stride", "latency_ms", "std_ms", "runs",
]


def anchor_architecture(space) -> dict:
    """The anchor of paired timing: a fixed mid-size architecture of ``space``.

    Every unit takes the middle of its depth range, every block the middle
    allowed combination of block choices, every per-unit and global choice its
    middle value.

    Examples
    --------
    >>> anchor = anchor_architecture("mobilenetv3")
    >>> anchor["depth"], anchor["kernel_size"][0], anchor["expand_ratio"][0][0]
    ([4, 4, 4, 4], [5, 5, 5, 5], 0.6667)
    """
    space = get_space(space)
    depths = [(low + high + 1) // 2 for low, high in space.depth_bounds]
    combo = space.block_combinations[len(space.block_combinations) // 2]
    arch: dict[str, Any] = {"space": space.name, "depth": depths}
    for j, name in enumerate(space.block_choices):
        arch[name] = [[combo[j]] * d for d in depths]
    for name, choices in space.unit_choices.items():
        arch[name] = [choices[len(choices) // 2]] * space.n_units
    for name, choices in space.global_choices.items():
        arch[name] = choices[len(choices) // 2]
    return space.validate(arch)


@dataclass
class _Session:
    """Timing state shared by the models of one call: clock, anchor, burn-in.

    The burn-in and the anchor's calibration are done lazily, by the first
    model actually timed (:meth:`TorchLatencyOracle._ready`).
    """

    space: SearchSpace
    dev: Any
    clock: str
    anchor: dict | None
    anchor_ms: float | None = None
    warm_archs: list = field(default_factory=list)
    store: MeasurementStore | None = None
    setting_key: str | None = None
    ready: bool = False
    anchor_model: Any = None
    anchor_shape: tuple | None = None
    burn_in_calls: int = 0


# ------------------------------------------------------------------ the oracle
class TorchLatencyOracle(BaseEstimator):
    """Time architectures of a search space on a PyTorch device.

    Each model is built through ``space.build_model``, put in eval mode, moved
    to ``device`` and run under ``torch.inference_mode`` on one input tensor:
    ``warmup`` passes, then up to ``runs`` timed passes (synchronised on a GPU).

    Unpaired, the latency is the mean after dropping the fastest and slowest
    ``trim`` fraction (the ESM protocol). Paired (``paired=True``), every timed
    pass of the model alternates with a pass of the anchor
    (:func:`anchor_architecture`), and the latency is the median per-pair ratio
    times the anchor's calibrated latency: the anchor is timed alone with
    ``max(3 * runs, 60)`` passes on the same clock, once per setting, after the
    burn-in of the first session; the median is its latency. Later sessions on
    the same store reuse that calibration (every row records it in ``extra``),
    so all latencies of a setting share one scale; quality control then judges
    the references' paired latencies, i.e. their ratios.

    The defaults on a CPU (one thread, the thread clock, paired, adaptive
    repeats) are what ``benchmarks/bench_timing_noise.py`` found trustworthy on
    a busy 2-core machine: worst reference spread 1.4% under load with 150
    pairs (1.9-2.9% with 50), against 18% for the thread clock alone and 34%
    for the wall clock (``docs/results/timing_noise.md``). A GPU uses the wall clock with
    synchronisation; pairing works there too.

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
        Most timed passes (pairs when paired) per model.
    trim : float
        Fraction of runs dropped at each end before averaging.
    clock : {"auto", "wall", "thread"}
        ``"wall"``: ``time.perf_counter``. ``"thread"``: the CPU time of the
        timing thread (``time.thread_time``), blind to time lost to other jobs;
        only on a CPU with one torch thread. ``"auto"``: thread there, else wall.
    paired : bool
        Time each model alternately with the anchor (see above).
    min_runs : int
        Adaptive repeats: after this many runs, stop once the 95% interval of
        the statistic is within ``rel_ci`` (:func:`esm_sklearn.timing.time_runs`).
    rel_ci : float or None
        Relative half-width of that interval (0.01: +-1%); None times every model
        ``runs`` times.
    burn_in : float
        Seconds of untimed passes of the anchor and references before the first
        model of a call is timed (the first round after start-up is slow).
    n_references : int
        Reference architectures timed at the start, every ``check_every``
        architectures and at the end; 0 turns quality control off. They are
        drawn with a seed fixed per space (not ``random_state``), and those a
        store already holds for the setting are reused, so every run of a
        setting times the same models under the same ``ref_id``.
    check_every : int or None
        Architectures between reference checks (None: only start and end).
    variance_threshold : float
        Largest allowed spread (coefficient of variation across rounds) of any
        reference; above it the batch since the last passing check is timed again.
    max_retries : int
        How often a batch is timed again before the failure is accepted (and
        recorded).
    threads : int, optional
        torch intra-op threads while timing (restored afterwards). None: one
        on a CPU (the latency of one core at batch 1, and what the thread clock
        needs), torch's current setting on a GPU.
    store : str, path or MeasurementStore, optional
        Every measurement is written there as it completes; architectures
        already recorded under the same device and protocol are not measured
        again (their stored latency is returned).
    drift_correction : bool
        Divide each latency by the reference level interpolated at its position
        (:func:`esm_sklearn.quality.drift_correct`); the raw value stays in
        ``stats_["raw_latency_ms"]`` and in the store.
    random_state : int or None
        Seed of the random input tensors (None is read as 0).
    progress : bool
        Show a tqdm progress bar (ETA, QC state) on standard error.

    Attributes
    ----------
    stats_ : DataFrame
        One row per input architecture of the last :meth:`measure` call: ``arch``
        (key), ``space``, ``sampling``, ``status`` (``ok``/``failed``), ``skipped``
        (taken from the store), ``latency_ms``, ``median_ms``, ``min_ms``,
        ``p90_ms``, ``std_ms``, ``runs`` (used), ``seconds`` (timing time),
        ``error``, ``order`` (store row id), ``retries``; with drift correction
        also ``raw_latency_ms`` and ``drift_factor``.
    qc_ : DataFrame
        One row per reference round of the last call: ``round``, ``batch``,
        ``retry``, ``after_arch_id``, ``n_references``, ``spread`` (largest cv),
        ``passed``, ``final`` (see :class:`~esm_sklearn.quality.ReferenceMonitor`).
    qc_check_ : ReferenceCheck or None
        Spread per reference over every round that closes kept data
        (including earlier sessions in the store); ``qc_check_.passed``.
    references_ : DataFrame
        Reference timings of the last call.
    device_info_ : dict
        The device description (see :func:`describe_device`).
    setting_key_ : str
        Key of device and protocol in the store.
    clock_ : str
        The clock used (``"wall"`` or ``"thread"``).
    anchor_ms_ : float or None
        The anchor's calibrated latency (paired timing).
    summary_ : dict
        ``n_measured``, ``n_failed``, ``n_skipped``, ``n_retimed``, ``seconds``,
        ``seconds_per_arch`` (wall time, references included, per timed
        architecture), ``qc_passed``.

    Notes
    -----
    Resuming: with a store, architectures recorded under the same setting
    (:func:`~esm_sklearn.store.setting_key` of the device description and the
    protocol: warmup, runs, trim, clock, pairing with its anchor, adaptive
    stop) are skipped, failed ones included; the references are timed anew (a
    new QC round, compared with the passing rounds of earlier sessions).
    Re-timed architectures are new store rows; the exports keep the last ok row
    per architecture. Paired rows keep the per-pair ``ratio``, ``anchor_ms`` and
    both sides' raw statistics (``raw``, ``anchor_raw``) in ``extra``.

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
                 trim=0.2, clock="auto", paired=True, min_runs=30, rel_ci=0.01, burn_in=3.0,
                 n_references=4, check_every=150, variance_threshold=0.03, max_retries=2,
                 threads=None, store=None, drift_correction=False, random_state=0,
                 progress=False):
        self.device = device
        self.batch_size = batch_size
        self.resolution = resolution
        self.warmup = warmup
        self.runs = runs
        self.trim = trim
        self.clock = clock
        self.paired = paired
        self.min_runs = min_runs
        self.rel_ci = rel_ci
        self.burn_in = burn_in
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
                          ("max_retries", 0), ("min_runs", 1)):
            check_int(getattr(self, name), name, low=low)
        for name in ("resolution", "check_every", "threads"):
            check_int(getattr(self, name), name, low=1, allow_none=True)
        check_real(self.trim, "trim", low=0, high=0.5, high_open=True)
        check_fraction(self.variance_threshold, "variance_threshold", include_one=False)
        check_real(self.rel_ci, "rel_ci", low=0, high=1, low_open=True, high_open=True,
                   allow_none=True, hint=" (0.01: +-1%)")
        check_real(self.burn_in, "burn_in", low=0, hint=" (seconds)")
        if not isinstance(self.paired, (bool, np.bool_)):
            raise ValueError(f"paired must be True or False, got {plain(self.paired)}")
        self._resolved_clock(dev)
        if not (self.store is None or isinstance(self.store, (str, os.PathLike, MeasurementStore))):
            raise ValueError(
                f"store must be None, a path or a MeasurementStore, got {type(self.store).__name__}"
            )
        if self.drift_correction and self.n_references == 0:
            raise ValueError("drift_correction=True needs n_references >= 1")
        return dev

    def _resolved_clock(self, dev) -> str:
        import torch

        threads = self._threads(dev)
        threads = threads if threads is not None else torch.get_num_threads()
        return timing.resolve_clock(self.clock, dev.type, threads)

    def _threads(self, dev) -> int | None:
        """torch threads while timing: ``threads``, else 1 on a CPU (None: leave as is)."""
        if self.threads is not None:
            return int(self.threads)
        return 1 if dev.type == "cpu" else None

    def _protocol(self, space: SearchSpace, clock: str) -> dict:
        protocol = {"warmup": int(self.warmup), "runs": int(self.runs), "trim": float(self.trim),
                    "clock": clock, "paired": bool(self.paired)}
        if self.paired:
            protocol["anchor"] = arch_key(anchor_architecture(space))
        if self.rel_ci is not None:
            protocol.update(min_runs=int(self.min_runs), rel_ci=float(self.rel_ci))
        return protocol

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
        threads = self._threads(_parse_device(self.device))
        try:
            if threads is not None:
                torch.set_num_threads(threads)
            yield
        finally:
            if threads is not None:
                torch.set_num_threads(before)

    def _open_store(self):
        if self.store is None:
            return None, False
        if isinstance(self.store, MeasurementStore):
            return self.store, False
        return MeasurementStore(self.store), True

    def __getstate__(self):
        state = dict(super().__getstate__())
        state.pop("_session", None)  # built models and the open store stay behind
        return state

    def reference_archs(self, space, stored: dict | None = None) -> list[dict]:
        """The ``n_references`` reference architectures of ``space``.

        Drawn with a seed fixed per space (independent of ``random_state``);
        ``stored`` maps ``ref_id`` to the architecture (dict or key) a store
        already holds for the setting, which is kept under its id.
        """
        space = get_space(space)
        rng = np.random.RandomState(zlib.crc32(f"esm-references:{space.name}".encode()))
        fresh: list[dict] = []
        while len(fresh) < int(self.n_references):
            # One at a time, so 4 references are the first 4 of 6 whatever the sampler does.
            fresh += space.sample(1, strategy="random", random_state=rng, exclude=fresh)
        out = []
        for ref_id, arch in enumerate(fresh):
            kept = (stored or {}).get(ref_id)
            out.append(space.validate(kept) if kept is not None else arch)
        return out

    def device_description(self, space=None) -> dict:
        """Device description (name, type, torch, cuda, threads, batch size, resolution)."""
        dev = self._check_params()
        res = self._effective_resolution(get_space(space)) if space is not None else self.resolution
        return describe_device(dev, self._threads(dev), self.batch_size, res)

    # ----------------------------------------------------------------- timing
    def time_model(self, model, input_shape) -> dict:
        """Time one module alone (unpaired) with this oracle's clock and repeats.

        Parameters
        ----------
        model : torch.nn.Module
            Moved to the device and put in eval mode.
        input_shape : tuple of int
            Shape of the input tensor, e.g. ``(batch_size, 3, 224, 224)``.

        Returns
        -------
        dict
            See :func:`esm_sklearn.timing.summarize_timings`, plus ``clock``,
            ``seconds`` and ``rel_ci``.
        """
        dev = self._check_params()
        return timing.time_model(model, input_shape, dev, warmup=int(self.warmup),
                                 runs=int(self.runs), trim=float(self.trim),
                                 clock=self._resolved_clock(dev), seed=self._input_seed(),
                                 **self._adaptive())

    def _adaptive(self) -> dict:
        return {"min_runs": int(self.min_runs), "rel_ci": self.rel_ci}

    def _input_seed(self) -> int:
        if self.random_state is None:
            return 0
        if isinstance(self.random_state, (int, np.integer)) and not isinstance(
                self.random_state, bool):
            return int(self.random_state) % 2**32
        return int(check_random_state(self.random_state).randint(2**31))

    def _build(self, space: SearchSpace, arch: dict):
        """``(module, input_shape)`` of an architecture."""
        model = space.build_model(arch, resolution=self.resolution)
        res = space.input_resolution(arch, self.resolution)
        return model, (int(self.batch_size), 3, res, res)

    def _session_for(self, space: SearchSpace, dev) -> _Session:
        session = self.__dict__.get("_session")
        if session is None or session.space != space or session.dev != dev:
            clock = self._resolved_clock(dev)
            anchor = anchor_architecture(space) if self.paired else None
            session = _Session(space, dev, clock, anchor)
            self.__dict__["_session"] = session
        return session

    def _ready(self, session: _Session) -> None:
        """Burn-in, then the anchor's calibration (once per session, lazily)."""
        if session.ready:
            return
        models = []
        if session.anchor is not None:
            session.anchor_model, session.anchor_shape = self._build(session.space,
                                                                     session.anchor)
            models.append((session.anchor_model, session.anchor_shape))
        models += [self._build(session.space, a) for a in session.warm_archs]
        if self.burn_in > 0 and models:
            session.burn_in_calls = self._run_burn_in(models, session.dev)
        del models
        if session.anchor is not None and session.anchor_ms is None:
            session.anchor_ms = self._calibrate_anchor(session)
        session.ready = True

    def _run_burn_in(self, models, dev) -> int:
        import torch

        inputs = [(m.to(dev).eval(), torch.randn(*shape, device=dev)) for m, shape in models]
        with torch.inference_mode():
            return timing.burn_in([lambda m=m, x=x: m(x) for m, x in inputs],
                                  float(self.burn_in), clock=timing.clock_function("wall"))

    def _calibrate_anchor(self, session: _Session) -> float:
        stats = timing.time_model(session.anchor_model, session.anchor_shape, session.dev,
                                  warmup=int(self.warmup), runs=max(3 * int(self.runs), 60),
                                  trim=float(self.trim), clock=session.clock,
                                  seed=self._input_seed())
        anchor_ms = float(stats["median_ms"])
        if session.store is not None and session.setting_key is not None:
            # A concurrent session may have recorded one first: the first one wins.
            stored = stored_anchor_ms(session.store, session.setting_key)
            anchor_ms = stored if stored is not None else anchor_ms
        return anchor_ms

    def _time_arch(self, space: SearchSpace, arch: dict, dev) -> dict:
        """Build and time one architecture; any build or run error is returned as failed."""
        import torch

        session = self._session_for(space, dev)
        self._ready(session)  # no anchor, no paired timing: that error is not the arch's
        model = None
        try:
            model, shape = self._build(space, arch)
            stats = timing.time_model(
                model, shape, dev, warmup=int(self.warmup), runs=int(self.runs),
                trim=float(self.trim), clock=session.clock, anchor=session.anchor_model,
                anchor_input_shape=session.anchor_shape, anchor_ms=session.anchor_ms,
                seed=self._input_seed(), **self._adaptive())
            stats.update(status="ok", error=None)
        except Exception as exc:  # noqa: BLE001 - recorded, never dropped: see status/error
            stats = {c: np.nan for c in STAT_COLUMNS}
            stats.update(runs=0, status="failed", error=f"{type(exc).__name__}: {exc}"[:2000])
        finally:
            del model
            if dev.type == "cuda":
                torch.cuda.empty_cache()
        return stats

    def time_architecture(self, arch, space=None) -> dict:
        """Time one architecture with this oracle's full protocol, without a store.

        The entry point for a worker of a fleet: the first call burns in and
        calibrates the anchor, later calls on the same oracle reuse both.

        Returns
        -------
        dict
            ``latency_ms``, ``median_ms``, ``min_ms``, ``p90_ms``, ``std_ms``,
            ``runs``, ``status``, ``error``, the timing details (``clock``,
            ``seconds``, ``rel_ci``; paired also ``ratio``, ``anchor_ms``,
            ``raw``, ``anchor_raw``), ``arch_key``, ``setting_key`` and ``device``.
        """
        dev = self._check_params()
        space = get_space(space) if space is not None else infer_space([arch])
        canon = space.validate(arch)
        with self._thread_setting():
            setting = self._setting(space, dev)
            stats = self._time_arch(space, canon, dev)
        return {**stats, "arch_key": arch_key(canon), "setting_key": setting["setting_key"],
                "device": setting["device"]}

    def setting(self, space) -> dict:
        """The setting this oracle times ``space`` under, without timing anything.

        Returns
        -------
        dict
            ``device`` (:func:`describe_device`), ``protocol`` (warmup, runs,
            trim, clock, pairing and its anchor, adaptive stop) and
            ``setting_key``, the key the store files the measurements under.
        """
        dev = self._check_params()
        with self._thread_setting():
            return self._setting(get_space(space), dev)

    def _setting(self, space: SearchSpace, dev) -> dict:
        device = describe_device(dev, self._threads(dev), self.batch_size,
                                 self._effective_resolution(space))
        protocol = self._protocol(space, self._resolved_clock(dev))
        return {"device": device, "protocol": protocol,
                "setting_key": setting_key(device, protocol)}

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
        t_start = time.perf_counter()
        store, own_store = self._open_store()
        try:
            with self._thread_setting():
                self._measure(space, dev, canon, labels, store)
        finally:
            self.__dict__.pop("_session", None)
            if own_store:
                store.close()
        self.summary_["seconds"] = time.perf_counter() - t_start
        n_timed = self.summary_["n_measured"] + self.summary_["n_retimed"]
        self.summary_["seconds_per_arch"] = (
            self.summary_["seconds"] / n_timed if n_timed else float("nan")
        )
        return self.stats_["latency_ms"].to_numpy(dtype=float)

    def _measure(self, space, dev, canon, labels, store):
        self.__dict__.pop("_session", None)  # a fresh burn-in and calibration per call
        session = self._session_for(space, dev)
        setting = self._setting(space, dev)
        device_info, protocol, skey = setting["device"], setting["protocol"], setting["setting_key"]
        session.store, session.setting_key = store, skey
        self.device_info_, self.setting_key_, self.clock_ = device_info, skey, session.clock
        run = Collection(self, space, dev, {"space": space.name, "setting_key": skey,
                                            "device": device_info, "protocol": protocol}, store)
        run.resume_from_store()
        session.anchor_ms = run.anchor_ms
        keys = [arch_key(a) for a in canon]
        todo = run.plan(keys, canon, labels)
        references = self.reference_archs(space, run.stored_refs) if todo else []
        session.warm_archs = references
        if todo:
            run.begin_run(len(todo))  # H3 (issue 9.3): before any timing
        try:
            if self.progress and todo:
                run.open_progress_bar(len(todo))
            run.run_batches(todo, references)
        finally:
            run.end_run()  # H3 (issue 9.3): releases the claims, also on Ctrl-C
        self.anchor_ms_ = session.anchor_ms
        for name, value in run.finish(keys, labels).items():
            setattr(self, name, value)

    # -------------------------------------------------------- block profiling
    def profile_blocks(self, space, resolution=None, densenet_channel_step: int = 32,
                       store_rows: bool = True) -> pd.DataFrame:
        """Time every distinct block of ``space`` alone on its real input shape.

        Blocks are timed unpaired (a block is far smaller than any anchor), on
        this oracle's clock and with its adaptive repeats.

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
                device_info = describe_device(dev, self._threads(dev), self.batch_size,
                                              resolution if resolution is not None
                                              else self._effective_resolution(space))
                protocol = self._protocol(space, self._resolved_clock(dev))
                skey = setting_key(device_info, protocol)
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
                                   "device": device_info, "protocol": protocol,
                                   **{c: stats[c] for c in STAT_COLUMNS},
                                   "status": "ok", "error": None,
                                   "extra": timing_extra(stats)})
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
