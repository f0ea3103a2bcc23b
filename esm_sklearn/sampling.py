"""Drawing architectures from a search space: random, balanced and mixed.

The functions behind :meth:`SearchSpace.sample` and
:meth:`SearchSpace.sample_in_bin`; they read only a space's facts
(``depth_bounds``, ``block_combinations``, ``unit_choices``,
``global_choices``, ``bin_ranges``), so this module sits below
:mod:`esm_sklearn.spaces` and imports nothing from the package.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from sklearn.utils import check_random_state

__all__ = ["STRATEGIES", "bin_quotas", "interleave", "sample", "sample_in_bin"]

STRATEGIES = ("random", "balanced", "mixed")

# A draw of k distinct architectures gives up after this many tries (the
# space or bin is then nearly exhausted).
def _max_tries(k: int) -> int:
    return 50 * k + 1000


def _key(arch) -> str:
    # Same rule as spaces.arch_key (canonical dicts only here).
    return json.dumps(arch, sort_keys=True, separators=(",", ":"))


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
    groups = [list(g) for g in groups]
    out = []
    for i in range(max((len(g) for g in groups), default=0)):
        out.extend(g[i] for g in groups if i < len(g))
    return out


def _depth_counts(space) -> list[np.ndarray]:
    """counts[u][t]: number of depth vectors of units u.. summing to t."""
    max_depth = space.max_depth
    counts = [np.zeros(max_depth + 1, dtype=float) for _ in range(space.n_units + 1)]
    counts[space.n_units][0] = 1.0
    for unit in range(space.n_units - 1, -1, -1):
        low, high = space.depth_bounds[unit]
        for d in range(low, high + 1):
            counts[unit][d:] += counts[unit + 1][: max_depth + 1 - d]
    return counts


def _depths_with_total(space, total: int, rng, counts) -> list[int]:
    """A depth vector drawn uniformly among those summing to ``total``."""
    depths = []
    remaining = total
    for unit, (low, high) in enumerate(space.depth_bounds):
        options = np.arange(low, min(high, remaining) + 1)
        weights = counts[unit + 1][remaining - options]
        d = int(rng.choice(options, p=weights / weights.sum()))
        depths.append(d)
        remaining -= d
    return depths


def _fill_choices(space, depths: list[int], rng) -> dict:
    arch: dict[str, Any] = {"space": space.name, "depth": list(depths)}
    combos = space.block_combinations
    picks = [rng.randint(len(combos), size=d) for d in depths]
    for j, fname in enumerate(space.block_choices):
        arch[fname] = [[combos[i][j] for i in unit] for unit in picks]
    for fname, choices in space.unit_choices.items():
        arch[fname] = [choices[i] for i in rng.randint(len(choices), size=space.n_units)]
    for fname, choices in space.global_choices.items():
        arch[fname] = choices[rng.randint(len(choices))]
    return arch


def _bin_totals(space, b: int, n_bins: int, counts) -> np.ndarray:
    """The reachable total depths of bin ``b``."""
    low, high = space.bin_ranges(n_bins)[b]
    totals = np.arange(low, high + 1)
    return totals[counts[0][totals] > 0]


def _draw(space, k: int, totals, rng, seen: set | None, counts) -> list[dict] | None:
    """``k`` architectures: total depth uniform over ``totals`` (None: every
    depth uniform). With ``seen``, distinct and new (added to ``seen``); None
    when that many cannot be found."""
    out: list[dict] = []
    tries = 0
    while len(out) < k:
        tries += 1
        if seen is not None and tries > _max_tries(k):
            return None
        if totals is None:
            depths = [int(rng.randint(low, high + 1)) for low, high in space.depth_bounds]
        else:
            depths = _depths_with_total(space, int(rng.choice(totals)), rng, counts)
        arch = _fill_choices(space, depths, rng)
        if seen is not None:
            key = _key(arch)
            if key in seen:
                continue
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
    rng = check_random_state(random_state)
    counts = _depth_counts(space)
    if strategy == "mixed":
        balanced = sample(space, n - n // 2, "balanced", n_bins, rng, seen, False)
        rand = sample(space, n // 2, "random", n_bins, rng, seen, False)
        archs = interleave([balanced, rand])
        labels = interleave([["balanced"] * len(balanced), ["random"] * len(rand)])
        return (archs, labels) if return_labels else archs
    if strategy == "random":
        archs = _draw(space, n, None, rng, seen, counts)
        if archs is None:
            raise _exhausted(space, n, strategy)
    else:
        groups = []
        for b, quota in enumerate(bin_quotas(n, n_bins)):
            group = _draw(space, int(quota), _bin_totals(space, b, n_bins, counts), rng, seen, counts)
            if group is None:
                raise _exhausted(space, int(quota), strategy)
            groups.append(group)
        archs = interleave(groups)
    return (archs, [strategy] * len(archs)) if return_labels else archs


def sample_in_bin(space, b: int, k: int, n_bins: int, random_state, seen: set) -> list[dict]:
    """See :meth:`SearchSpace.sample_in_bin` (``seen``: keys never to return,
    updated with those returned)."""
    rng = check_random_state(random_state)
    counts = _depth_counts(space)
    totals = _bin_totals(space, b, n_bins, counts)
    out: list[dict] = []
    for _ in range(_max_tries(k)):
        if len(out) >= k:
            break
        arch = _fill_choices(
            space, _depths_with_total(space, int(rng.choice(totals)), rng, counts), rng
        )
        key = _key(arch)
        if key not in seen:
            seen.add(key)
            out.append(arch)
    return out
