"""Replaying a measured table as an oracle (:class:`TableOracle`).

Comparing sampling strategies and encodings offline, or running the active loop
on an existing dataset, needs an oracle whose "measurement" is a look-up.
"""

from __future__ import annotations

import json
import math

import numpy as np
from sklearn.base import BaseEstimator

from .spaces import arch_key, as_arch_list, get_space

__all__ = ["TableOracle"]


class TableOracle(BaseEstimator):
    """Replay a measured table: the latency of an architecture is looked up.

    Parameters
    ----------
    archs : sequence of dict or JSON str
        The table's architectures.
    latencies : array-like of float
        Their latencies (ms). NaN marks a failed measurement: such an
        architecture is in the table and replays as NaN (failed) unless another
        row of it has a latency. An architecture listed twice gets the mean of
        its measured rows. Infinite latencies are refused.
    space : str or SearchSpace, optional
        Space used to canonicalise architectures (``0.667`` matches ``0.6667``);
        default: each architecture's ``space`` field.

    Examples
    --------
    >>> from esm_sklearn import get_space
    >>> archs = get_space("densenet").sample(3, random_state=0)
    >>> oracle = TableOracle(archs, [1.0, 2.0, float("nan")])
    >>> oracle.measure([archs[1], archs[0], archs[2]]).tolist()
    [2.0, 1.0, nan]
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
        try:
            lat = np.asarray(self.latencies, dtype=float).ravel()
        except (TypeError, ValueError):
            raise ValueError("TableOracle: latencies must be numbers (NaN for a failed "
                             "measurement)") from None
        if len(archs) != lat.size:
            raise ValueError(f"TableOracle: {len(archs)} architectures but {lat.size} latencies")
        bad = np.flatnonzero(np.isinf(lat))
        if bad.size:
            raise ValueError(f"TableOracle: latency of row {int(bad[0])} is "
                             f"{float(lat[bad[0]])}, not finite (NaN marks a failed measurement)")
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
            if not math.isnan(value):
                sums[key][0] += float(value)
                sums[key][1] += 1
        table = {k: s / n if n else math.nan for k, (s, n) in sums.items()}
        self.__dict__["_cache"] = (ident, table, order)
        return table, order

    def __getstate__(self):
        state = super().__getstate__()
        state = dict(state)
        state.pop("_cache", None)
        return state

    def measure(self, archs, space=None, sampling=None) -> np.ndarray:
        """Latencies (ms) of ``archs`` from the table (NaN: a failed measurement).

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
        """The table's distinct architectures (canonical dicts, table order), failed included."""
        _, order = self._table()
        return [json.loads(k) for k in order]

    @property
    def archs_(self) -> list[dict]:
        """Same as :meth:`candidates`."""
        return self.candidates()

    def __len__(self) -> int:
        return len(self._table()[1])
