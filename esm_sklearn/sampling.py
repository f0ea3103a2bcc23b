"""Drawing architectures from a search space: random, balanced and mixed.

The functions behind :meth:`SearchSpace.sample` and
:meth:`SearchSpace.sample_in_bin`; they read only a space's facts
(``depth_bounds``, ``block_combinations``, ``unit_choices``,
``global_choices``, ``bin_ranges``), so this module sits below
:mod:`esm_sklearn.spaces`; it imports only :mod:`esm_sklearn.archs`.

Sampling is vectorised: a batch of ``k`` architectures is drawn as a few
numpy arrays (depths, block-combination indices, unit and global choice
indices) and then turned into dicts with list operations. For a balanced
draw, a bin's total depth is uniform over the bin's reachable totals and the
depth vector is then drawn unit by unit with the exact conditional
probabilities (the number of ways the remaining units can complete the
total), i.e. uniformly among the vectors with that total.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import operator

import numpy as np
from sklearn.utils import check_random_state

from .archs import arch_key

__all__ = ["STRATEGIES", "bin_quotas", "interleave", "sample", "sample_in_bin"]

STRATEGIES = ("random", "balanced", "mixed")


def _max_draws(k: int) -> int:
    # A draw of k distinct architectures gives up after drawing this many
    # (the space or bin is then nearly exhausted).
    return 50 * k + 1000


def bin_quotas(n: int, n_bins: int) -> np.ndarray:
    """Equal shares of ``n`` over ``n_bins``; the remainder goes to the first bins.

    Examples
    --------
    >>> bin_quotas(7, 5).tolist()
    [2, 2, 1, 1, 1]
    """
    base, extra = divmod(int(n), int(n_bins))
    return np.array([base + (b < extra) for b in range(n_bins)], dtype=int)


def interleave(groups) -> list:
    """``g0[0], g1[0], ..., g0[1], g1[1], ...``: any prefix stays balanced.

    Examples
    --------
    >>> interleave([[1, 2, 3], ["a"], [10, 20]])
    [1, 'a', 10, 2, 20, 3]
    """
    gap = object()
    rounds = itertools.zip_longest(*groups, fillvalue=gap)
    return [x for row in rounds for x in row if x is not gap]


class _Drawer:
    """Vectorised draws of one space (cached arrays of its facts)."""

    def __init__(self, space):
        self.space = space
        self.n_units = space.n_units
        self.low = np.array([low for low, _ in space.depth_bounds])
        self.high = np.array([high for _, high in space.depth_bounds])
        # counts[u][t]: number of depth vectors of units u.. summing to t.
        max_depth = space.max_depth
        counts = np.zeros((space.n_units + 1, max_depth + 1))
        counts[space.n_units, 0] = 1.0
        for unit in range(space.n_units - 1, -1, -1):
            for d in range(self.low[unit], self.high[unit] + 1):
                counts[unit, d:] += counts[unit + 1, : max_depth + 1 - d]
        self.counts = counts
        combos = space.block_combinations
        self.block_values = [
            _objects([c[j] for c in combos])
            for j in range(len(space.block_choices))
        ]
        self.n_combos = len(combos)
        self.unit_values = [_objects(c) for c in space.unit_choices.values()]
        self.global_values = [_objects(c) for c in space.global_choices.values()]

    def depths_random(self, k: int, rng) -> np.ndarray:
        return np.stack(
            [rng.randint(lo, hi + 1, size=k) for lo, hi in zip(self.low, self.high)], axis=1
        ).reshape(k, self.n_units)

    def depths_with_totals(self, totals: np.ndarray, rng) -> np.ndarray:
        """A depth vector per total, uniform among those with that total."""
        k = len(totals)
        remaining = np.asarray(totals, dtype=np.intp).copy()
        depths = np.empty((k, self.n_units), dtype=np.intp)
        for unit in range(self.n_units):
            options = np.arange(self.low[unit], self.high[unit] + 1)
            rest = remaining[:, None] - options[None, :]
            weights = np.where(rest >= 0, self.counts[unit + 1][rest.clip(0)], 0.0)
            cumulative = weights.cumsum(axis=1)
            u = rng.random_sample(k) * cumulative[:, -1]
            pick = (cumulative <= u[:, None]).sum(axis=1).clip(0, len(options) - 1)
            depths[:, unit] = options[pick]
            remaining -= options[pick]
        return depths

    def archs(self, depths: np.ndarray, rng) -> list[dict]:
        """Architectures with these depths and uniform choices."""
        space, k, n_units = self.space, depths.shape[0], self.n_units
        flat_depths = depths.ravel()
        flat = flat_depths.tolist()
        combo = rng.randint(self.n_combos, size=sum(flat))
        # The blocks of the (arch, unit) with depth d as rows of a (m, d) array:
        # one tolist() per depth makes the per-unit lists, `order` puts them back.
        starts = np.cumsum(flat_depths) - flat_depths
        groups = [
            (d, combo[starts[where][:, None] + np.arange(d)])
            for d in range(int(flat_depths.max(initial=0)) + 1)
            for where in [np.flatnonzero(flat_depths == d)]
            if where.size
        ]
        by_depth = np.argsort(flat_depths, kind="stable")
        order = np.empty_like(by_depth)
        order[by_depth] = np.arange(by_depth.size)
        order = order.tolist()
        reorder = operator.itemgetter(*order) if len(order) > 1 else lambda x: x
        with _gc_paused():
            columns = {"space": [space.name] * k, "depth": _chunks(flat, n_units)}
            for fname, values in zip(space.block_choices, self.block_values):
                per_depth = []
                for d, codes in groups:
                    if d:
                        per_depth += values[codes].tolist()
                    else:
                        per_depth += map(list, itertools.repeat((), len(codes)))
                columns[fname] = _chunks(reorder(per_depth), n_units)
            for fname, values in zip(space.unit_choices, self.unit_values):
                picked = values[rng.randint(len(values), size=k * n_units)].tolist()
                columns[fname] = _chunks(picked, n_units)
            for fname, values in zip(space.global_choices, self.global_values):
                columns[fname] = values[rng.randint(len(values), size=k)].tolist()
            names = list(columns)
            return [dict(zip(names, row)) for row in zip(*columns.values())]


@contextlib.contextmanager
def _gc_paused():
    """Pause the cyclic garbage collector (restored on exit).

    Sampling makes millions of small lists and dicts, none in a cycle; the
    collector would rescan them several times while they are made (about 3x
    the time of making them).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _objects(values) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = list(values)
    return out


def _chunks(values: list, size: int) -> list[list]:
    """``values`` cut into lists of ``size``."""
    return list(map(list, zip(*[iter(values)] * size)))


def _bin_totals(space, b: int, n_bins: int, counts) -> np.ndarray:
    """The reachable total depths of bin ``b``."""
    low, high = space.bin_ranges(n_bins)[b]
    totals = np.arange(low, high + 1)
    return totals[counts[0][totals] > 0]


def _pick(totals: np.ndarray, k: int, rng) -> np.ndarray:
    """``k`` totals drawn uniformly from ``totals``."""
    return totals[rng.randint(len(totals), size=k)]


def _draw(drawer: _Drawer, k: int, totals, rng, seen: set | None) -> list[dict]:
    """Up to ``k`` architectures: total depth uniform over ``totals`` (None:
    every depth uniform). With ``seen``, distinct and new (added to ``seen``);
    fewer than ``k`` when that many cannot be found."""
    out: list[dict] = []
    drawn = 0
    while len(out) < k and drawn < _max_draws(k):
        want = k - len(out)
        if totals is None:
            depths = drawer.depths_random(want, rng)
        else:
            depths = drawer.depths_with_totals(_pick(totals, want, rng), rng)
        batch = drawer.archs(depths, rng)
        drawn += want
        if seen is None:
            out.extend(batch)
            continue
        for arch in batch:
            key = arch_key(arch)
            if key not in seen:
                seen.add(key)
                out.append(arch)
    return out


def _exhausted(space, k: int, strategy: str) -> ValueError:
    return ValueError(
        f"{space.name}: could not draw {k} distinct new architectures "
        f"(strategy={strategy!r}); the space or bin is nearly exhausted"
    )


def sample(space, n, strategy, n_bins, random_state, seen: set | None, return_labels: bool):
    """See :meth:`SearchSpace.sample` (``seen``: keys never to return, or None)."""
    with _gc_paused():
        return _sample(space, n, strategy, n_bins, random_state, seen, return_labels)


def _sample(space, n, strategy, n_bins, random_state, seen, return_labels):
    rng = check_random_state(random_state)
    if strategy == "mixed":
        balanced = _sample(space, n - n // 2, "balanced", n_bins, rng, seen, False)
        rand = _sample(space, n // 2, "random", n_bins, rng, seen, False)
        archs = interleave([balanced, rand])
        labels = interleave([["balanced"] * len(balanced), ["random"] * len(rand)])
        return (archs, labels) if return_labels else archs
    drawer = _Drawer(space)
    if strategy == "random":
        archs = _draw(drawer, n, None, rng, seen)
        if len(archs) < n:
            raise _exhausted(space, n, strategy)
    elif seen is None:
        # One batch: every bin's totals, in interleaved order (round, then bin).
        quotas = bin_quotas(n, n_bins)
        totals = np.concatenate([
            _pick(_bin_totals(space, b, n_bins, drawer.counts), q, rng) for b, q in enumerate(quotas)
        ])
        rounds = np.concatenate([np.arange(q) for q in quotas])
        order = np.lexsort((np.repeat(np.arange(n_bins), quotas), rounds))
        archs = drawer.archs(drawer.depths_with_totals(totals[order], rng), rng)
    else:
        groups = []
        for b, quota in enumerate(bin_quotas(n, n_bins)):
            totals = _bin_totals(space, b, n_bins, drawer.counts)
            groups.append(_draw(drawer, int(quota), totals, rng, seen))
            if len(groups[-1]) < quota:
                raise _exhausted(space, int(quota), strategy)
        archs = interleave(groups)
    return (archs, [strategy] * len(archs)) if return_labels else archs


def sample_in_bin(space, b: int, k: int, n_bins: int, random_state, seen: set) -> list[dict]:
    """See :meth:`SearchSpace.sample_in_bin` (``seen``: keys never to return,
    updated with those returned)."""
    rng = check_random_state(random_state)
    drawer = _Drawer(space)
    with _gc_paused():
        return _draw(drawer, k, _bin_totals(space, b, n_bins, drawer.counts), rng, seen)
