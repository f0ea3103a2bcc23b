"""Where the train-evaluate-extend loop draws new architectures from.

A candidate set hands out architectures per depth bin and never the same one
twice: :class:`PoolCandidates` from a given pool (each pool member once),
:class:`SpaceCandidates` from the whole search space. Both answer
``available(b)``, ``total_available()``, ``draw_bin(b, k, rng)`` and
``draw_random(k, rng)``.
"""

from __future__ import annotations

import math

import numpy as np

from .spaces import SearchSpace, arch_key

__all__ = ["PoolCandidates", "SpaceCandidates", "round_robin_cap"]


def round_robin_cap(counts: np.ndarray, budget: int) -> np.ndarray:
    """Cut per-bin ``counts`` to ``budget`` in total, one sample per bin in turn."""
    counts = np.asarray(counts, dtype=int)
    if counts.sum() <= budget:
        return counts
    out = np.zeros_like(counts)
    while budget > 0:
        for b in np.flatnonzero(out < counts):
            if budget == 0:
                break
            out[b] += 1
            budget -= 1
    return out


class PoolCandidates:
    """Candidates from a given pool: each can be drawn once."""

    def __init__(self, archs: list[dict], bins: np.ndarray, n_bins: int):
        self.archs = archs
        self.remaining = [list(np.flatnonzero(bins == b)) for b in range(n_bins)]

    def available(self, b: int) -> int:
        return len(self.remaining[b])

    def total_available(self) -> int:
        return sum(len(r) for r in self.remaining)

    def draw_bin(self, b: int, k: int, rng) -> list[dict]:
        pool = self.remaining[b]
        k = min(k, len(pool))
        if k == 0:
            return []
        picks = set(rng.choice(len(pool), size=k, replace=False).tolist())
        chosen = [pool[i] for i in sorted(picks)]
        self.remaining[b] = [idx for i, idx in enumerate(pool) if i not in picks]
        return [self.archs[i] for i in chosen]

    def draw_random(self, k: int, rng) -> list[dict]:
        flat = sorted(i for r in self.remaining for i in r)
        k = min(k, len(flat))
        if k == 0:
            return []
        chosen = {flat[i] for i in rng.choice(len(flat), size=k, replace=False)}
        self.remaining = [[i for i in r if i not in chosen] for r in self.remaining]
        return [self.archs[i] for i in sorted(chosen)]


class SpaceCandidates:
    """Candidates drawn from the whole space, never the same architecture twice."""

    def __init__(self, space: SearchSpace, n_bins: int):
        self.space = space
        self.n_bins = n_bins
        self.seen: set[str] = set()
        self.exhausted = [False] * n_bins

    def available(self, b: int) -> float:
        return 0 if self.exhausted[b] else math.inf

    def total_available(self) -> float:
        return 0 if all(self.exhausted) else math.inf

    def draw_bin(self, b: int, k: int, rng) -> list[dict]:
        if k <= 0 or self.exhausted[b]:
            return []
        out = self.space.sample_in_bin(b, k, self.n_bins, rng, exclude=self.seen)
        if len(out) < k:
            self.exhausted[b] = True
        self.seen.update(arch_key(a) for a in out)
        return out

    def draw_random(self, k: int, rng) -> list[dict]:
        out: list[dict] = []
        for _ in range(50):
            if len(out) >= k:
                break
            for arch in self.space.sample(k - len(out), strategy="random", random_state=rng):
                key = arch_key(arch)
                if key not in self.seen:
                    self.seen.add(key)
                    out.append(arch)
        if len(out) < k:
            self.exhausted = [True] * self.n_bins
        return out
