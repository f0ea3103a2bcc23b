"""Measuring across many devices with dask.distributed: :class:`FleetLatencyOracle`.

A *device unit* is one dask worker that offers the resource ``device:<type>``
(``device:cpu``, ``device:cuda``; see :func:`unit_resource`) with amount 1 and
times one model at a time on one device. :class:`FleetLatencyOracle` wraps a
:class:`~esm_sklearn.TorchLatencyOracle` (the protocol: warm-up, runs, trim,
references, store) and spreads its architectures over the units:

* one task per architecture, restricted to the resource, so dask balances the
  load and, when a worker dies, re-runs its tasks on another unit
  (``distributed.scheduler.allowed-failures``: a task whose worker died more than
  that many times is given up with ``KilledWorker`` and recorded as failed);
* the client alone writes the store, as results arrive; an architecture is
  written once per timing (results are keyed by architecture), and a rerun
  skips what the store holds for the setting, so a killed client resumes;
* the reference architectures are timed on every unit (pinned tasks) at the
  start, every ``check_every`` architectures of that unit and at its end; each
  unit's rounds are judged on their own (its store rows share one ``run``
  number) and a failing round has that unit re-time its batch;
* units of one kind are calibrated against each other: a unit's factor is the
  geometric mean, over references, of its first-round latency divided by the
  fleet's median (or by the store's median for the setting, so that sessions
  share one scale); its results are divided by it (raw values in ``extra``);
* a worker that joins (e.g. restarted by its nanny) is a new unit: its first
  result describes it, its first reference round calibrates it;
* a unit whose failures are not confirmed elsewhere (the architecture times
  fine on another unit) ``max_unit_failures`` times, or that cannot time its
  references, is retired with a warning.

Local mode (``n_workers``) starts a ``LocalCluster`` of single-threaded worker
processes, pinned to one core each on a CPU (``os.sched_setaffinity``), one per
``cuda:i`` on a GPU host. ``scheduler=ADDRESS`` joins a running cluster, e.g.
``dask worker ADDRESS --nthreads 1 --resources device:cpu=1`` (set
``ESM_SKLEARN_DEVICE=cuda:1`` or ``CUDA_VISIBLE_DEVICES`` per GPU worker).
"""

from __future__ import annotations

import os
import weakref

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from ._fleet_loop import _copy, _FleetRun, unit_factor
from ._validation import check_int, check_real
from .oracle import TorchLatencyOracle
from .spaces import arch_key, as_arch_list, get_space, infer_space
from .store import MeasurementStore

__all__ = ["FleetLatencyOracle", "unit_resource", "start_local_cluster", "unit_factor",
           "reference_agreement"]


def unit_resource(device: str = "cpu") -> str:
    """Name of the dask worker resource a unit of ``device``'s type declares.

    Examples
    --------
    >>> unit_resource("cuda:1")
    'device:cuda'
    """
    kind = str(device).split(":", 1)[0]
    if kind not in ("cpu", "cuda"):
        raise ValueError(f"device {device!r}: only 'cpu' and 'cuda[:index]' are supported")
    return f"device:{kind}"


def start_local_cluster(n_workers: int, resource: str = "device:cpu", **kwargs):
    """A ``LocalCluster`` of ``n_workers`` single-threaded processes, each one unit.

    Extra keyword arguments go to ``distributed.LocalCluster``.
    """
    import logging

    from distributed import LocalCluster

    opts = dict(n_workers=int(n_workers), threads_per_worker=1, processes=True,
                resources={resource: 1}, dashboard_address=":0",
                silence_logs=logging.ERROR)
    opts.update(kwargs)
    return LocalCluster(**opts)


# ----------------------------------------------------------------- client side
class _Connection:
    """A client (and the cluster it started); closed by ``close`` or at exit."""

    def __init__(self, client, cluster):
        self.client, self.cluster = client, cluster
        self._finalizer = weakref.finalize(self, _Connection._shutdown, client, cluster)

    @staticmethod
    def _shutdown(client, cluster):
        for thing in (client, cluster):
            if thing is not None:
                try:
                    thing.close()
                except Exception:  # noqa: BLE001 - best effort at shutdown
                    pass

    def close(self):
        self._finalizer()


class FleetLatencyOracle(BaseEstimator):
    """Time architectures on a fleet of dask workers, one device unit per worker.

    The same ``measure(archs, space=None, sampling=None)`` contract as
    :class:`~esm_sklearn.TorchLatencyOracle`, so
    ``ActiveLatencyEstimator(oracle=FleetLatencyOracle(...))`` runs unchanged
    (nested parameters: ``oracle__oracle__runs``). See the module docstring.

    Parameters
    ----------
    oracle : TorchLatencyOracle, optional
        The protocol and the store (``oracle.store``, written only by the
        client). Its ``device`` gives the units' type; ``threads=None`` means
        one torch thread per CPU unit. Default: ``TorchLatencyOracle()``.
    n_workers : int, optional
        Local mode: start that many worker processes (default: one per CPU
        core this process may use, or per CUDA device). Not with ``scheduler``.
    scheduler : str, optional
        Address of a running dask scheduler (e.g. ``"tcp://10.0.0.1:8786"``)
        whose workers declare ``resource``.
    resource : str, optional
        Worker resource that marks a unit (default ``unit_resource(oracle.device)``);
        give each kind of device its own name (``"device:rtx4090"``).
    pin_cores : bool, default True
        Local CPU mode: pin worker ``i`` to the ``i``-th usable core (turn it
        off on a host shared with other jobs, where one core may be busier).
    calibrate : bool, default True
        Divide each unit's results by its reference factor.
    max_unit_failures : int, default 3
        Failures of a unit that another unit does not reproduce before it is retired.
    worker_timeout : float, default 120
        Seconds to wait for a first unit to appear.

    Attributes
    ----------
    stats_ : DataFrame
        As :attr:`TorchLatencyOracle.stats_`, plus ``unit``, ``worker``,
        ``raw_latency_ms`` and ``unit_factor``.
    units_ : DataFrame
        One row per unit of the last call: ``unit``, ``worker``, ``host``,
        ``core``, ``device``, ``run``, ``state``, ``factor``, ``n_measured``,
        ``qc_passed``, ``qc_spread``, ``note``.
    references_ : DataFrame
        The reference timings of the last call, one row per unit, round and
        reference: ``unit``, ``run``, ``ref_id``, ``round``, ``raw_latency_ms``,
        ``latency_ms`` (divided by the unit's ``factor``), ``factor``, ``passed``,
        ``final``. :func:`reference_agreement` compares the units on them.
    qc_ : DataFrame
        One row per reference round (``unit`` added to the oracle's columns).
    qc_check_ : ReferenceCheck or None
        Spread per (unit run, reference) over the closing rounds of this call.
    summary_ : dict
        ``n_measured``, ``n_failed``, ``n_skipped``, ``n_retimed``,
        ``n_units``, ``n_lost``, ``n_retired``, ``n_duplicates``,
        ``seconds``, ``archs_per_hour``, ``qc_passed``.
    setting_key_, device_info_ : str, dict
        The setting shared by all units.

    Examples
    --------
    >>> from esm_sklearn import TorchLatencyOracle
    >>> fleet = FleetLatencyOracle(TorchLatencyOracle(resolution=32, runs=5), n_workers=2)
    >>> fleet.get_params()["oracle__runs"]
    5
    >>> with fleet:  # doctest: +SKIP
    ...     latencies = fleet.measure(archs)
    """

    def __init__(self, oracle=None, n_workers=None, scheduler=None, resource=None,
                 pin_cores=True, calibrate=True, max_unit_failures=3, worker_timeout=120.0):
        self.oracle = oracle
        self.n_workers = n_workers
        self.scheduler = scheduler
        self.resource = resource
        self.pin_cores = pin_cores
        self.calibrate = calibrate
        self.max_unit_failures = max_unit_failures
        self.worker_timeout = worker_timeout

    # ------------------------------------------------------------ connection
    def __getstate__(self):
        state = dict(super().__getstate__())
        state.pop("_conn", None)  # a live client is never pickled; reconnect lazily
        return state

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        """Close the client and the local cluster this oracle started (idempotent)."""
        conn = self.__dict__.pop("_conn", None)
        if conn is not None:
            conn.close()

    def _connection_id(self) -> int:
        """Worker oracles (burn-in, anchor calibration) live as long as the connection."""
        return id(self.__dict__.get("_conn"))

    def _template(self) -> TorchLatencyOracle:
        oracle = self.oracle if self.oracle is not None else TorchLatencyOracle()
        if not isinstance(oracle, TorchLatencyOracle):
            raise ValueError(f"oracle must be a TorchLatencyOracle, got {type(oracle).__name__}")
        return oracle

    def _check_params(self):
        template = self._template()
        resource = self.resource or unit_resource(template.device)
        kind = unit_resource(template.device).split(":", 1)[1]
        # Validate the protocol here; the device itself is checked where it lives.
        _copy(template, device="cpu", store=None)._check_params()
        if self.n_workers is not None and self.scheduler is not None:
            raise ValueError("give n_workers (start local workers) or scheduler (join a "
                             "cluster), not both")
        check_int(self.n_workers, "n_workers", low=1, allow_none=True)
        check_int(self.max_unit_failures, "max_unit_failures", low=1)
        check_real(self.worker_timeout, "worker_timeout", low=0, low_open=True)
        if self.scheduler is not None and not isinstance(self.scheduler, str):
            raise ValueError("scheduler must be an address string such as 'tcp://host:8786', "
                             f"got {type(self.scheduler).__name__}")
        if template.drift_correction:
            raise ValueError("drift_correction is not supported on a fleet: units are "
                             "calibrated against each other instead (calibrate=True)")
        return template, resource, kind

    def connect(self):
        """The dask ``Client`` (starting the local cluster on first use)."""
        conn = self.__dict__.get("_conn")
        if conn is not None:
            return conn.client
        from distributed import Client

        template, resource, kind = self._check_params()
        if self.scheduler is not None:
            conn = _Connection(Client(self.scheduler, timeout=self.worker_timeout), None)
        else:
            n = self.n_workers
            if n is None:
                if kind == "cuda":
                    import torch

                    n = torch.cuda.device_count()
                else:
                    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
                        else os.cpu_count()
            cluster = start_local_cluster(max(int(n), 1), resource)
            conn = _Connection(Client(cluster), cluster)
        self.__dict__["_conn"] = conn
        return conn.client

    # --------------------------------------------------------------- measure
    def measure(self, archs, space=None, sampling=None) -> np.ndarray:
        """Latency in ms of each architecture, in order (NaN where it failed).

        Parameters and store behaviour as :meth:`TorchLatencyOracle.measure`.
        """
        template, resource, kind = self._check_params()
        archs = as_arch_list(archs)
        space = get_space(space) if space is not None else infer_space(archs)
        canon = space.validate_many(archs)
        if sampling is None or isinstance(sampling, str):
            labels = [sampling] * len(canon)
        else:
            labels = list(sampling)
            if len(labels) != len(canon):
                raise ValueError(f"sampling has {len(labels)} labels for {len(canon)} architectures")
        client = self.connect()
        store = template.store
        own = isinstance(store, (str, os.PathLike))
        if own:
            store = MeasurementStore(store)
        try:
            run = _FleetRun(self, template, resource, kind, client, space, store)
            run.execute(canon, [arch_key(a) for a in canon], labels)
        finally:
            if own:
                store.close()
        return self.stats_["latency_ms"].to_numpy(dtype=float)

def reference_agreement(references: pd.DataFrame, column: str = "latency_ms") -> pd.DataFrame:
    """How well units agree on each reference: spread across units of their mean latency.

    Parameters
    ----------
    references : DataFrame
        Columns ``unit``, ``ref_id`` and ``column`` (e.g. :attr:`FleetLatencyOracle.references_`,
        whose ``latency_ms`` is calibrated and ``raw_latency_ms`` is not).
    column : str
        The latency column to compare.

    Returns
    -------
    DataFrame
        One row per reference: ``n_units``, ``min_ms``, ``max_ms``, ``cv`` (std/mean
        across units, ddof 0) and ``max_rel_dev`` ((max - min) / mean).

    Examples
    --------
    >>> refs = pd.DataFrame({"unit": ["0", "1"], "ref_id": [0, 0], "latency_ms": [1.0, 1.1]})
    >>> round(float(reference_agreement(refs)["max_rel_dev"].iloc[0]), 4)
    0.0952
    """
    means = references.groupby(["ref_id", "unit"])[column].mean().reset_index()
    g = means.groupby("ref_id")[column]
    out = pd.DataFrame({"n_units": g.size(), "min_ms": g.min(), "max_ms": g.max(),
                        "cv": g.std(ddof=0) / g.mean(),
                        "max_rel_dev": (g.max() - g.min()) / g.mean()})
    return out.reset_index()
