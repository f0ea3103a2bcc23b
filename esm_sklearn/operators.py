"""Search operators for NAS loops: mutate, crossover and neighbours of architectures.

Distance one between two architectures of a space means one *site* differs:

- a block's combination of block choices (e.g. its kernel size, or its
  kernel size and expansion together when the space restricts combinations,
  as ``fbnet`` does: only allowed combinations are ever produced);
- a unit's depth by one: ``-1`` drops the unit's last block, ``+1`` appends a
  block at the end of the unit (in the built-in spaces the first block of a
  unit carries its stride and width change, so the tail is where a block can
  come or go);
- a unit's per-unit choice (e.g. DenseNet's kernel size of that unit);
- a global choice (e.g. the input resolution).

:func:`neighbours` lists every architecture at distance one; :func:`mutate`
draws one of them by first drawing a site uniformly among those that can
change (every existing block, every unit whose depth range is not a single
value, every per-unit and global choice with more than one value), then a new
value uniformly (for a depth: ``-1`` or ``+1`` with equal chance where both
are possible, an appended block's combination uniform), so depth neither
grows nor shrinks on average. :func:`crossover` is uniform per unit: the child
takes each unit whole (depth, blocks, per-unit choices) from one parent or
the other, and each global choice from either; units are independent, so the
child is always valid.

Like :mod:`esm_sklearn.vectors`, this module reads the space object it is
given and imports nothing from :mod:`esm_sklearn.spaces`.
"""

from __future__ import annotations

from sklearn.utils import check_random_state

from .vectors import _Genome, layout

__all__ = ["crossover", "mutate", "neighbours"]


def _sites(lay, g: _Genome) -> list[tuple]:
    """Every site of ``g`` that can take another value: (kind, position...)."""
    sites = []
    if lay.n_combos > 1:
        sites.extend(("block", u, b) for u, d in enumerate(g.depth) for b in range(d))
    sites.extend(("depth", u) for u, (lo, hi) in enumerate(lay.depth_bounds) if hi > lo)
    for f, vals in enumerate(lay.unit_values):
        if len(vals) > 1:
            sites.extend(("unit", f, u) for u in range(lay.n_units))
    sites.extend(("glob", f) for f, vals in enumerate(lay.glob_values) if len(vals) > 1)
    return sites


def _other(rng, n: int, current: int) -> int:
    """An index in ``range(n)`` other than ``current``, uniformly."""
    i = int(rng.randint(n - 1))
    return i + (i >= current)


def mutate(space, arch, random_state=None) -> dict:
    """One architecture at distance one from ``arch``, drawn at random.

    Parameters
    ----------
    space : SearchSpace
    arch : dict or str
        An architecture of ``space`` (validated).
    random_state : int, RandomState or None
        Seed; the same seed and input give the same output.

    Returns
    -------
    dict
        A canonical architecture different from ``arch``, one of
        ``neighbours(space, arch)`` (see the module docstring for the draw).

    Raises
    ------
    ValueError
        If ``arch`` is invalid, or the space holds a single architecture.

    Examples
    --------
    >>> from esm_sklearn import get_space
    >>> space = get_space("resnet")
    >>> arch = space.sample(1, random_state=0)[0]
    >>> child = mutate(space, arch, random_state=0)
    >>> child != arch, child in neighbours(space, arch)
    (True, True)
    """
    lay = layout(space)
    rng = check_random_state(random_state)
    g = lay.encode(arch, space.validate).copy()
    sites = _sites(lay, g)
    if not sites:
        raise ValueError(f"{lay.name}: the space holds a single architecture, nothing to mutate")
    site = sites[rng.randint(len(sites))]
    kind = site[0]
    if kind == "block":
        _, u, b = site
        g.blocks[u][b] = _other(rng, lay.n_combos, g.blocks[u][b])
    elif kind == "depth":
        u = site[1]
        lo, hi = lay.depth_bounds[u]
        d = g.depth[u]
        grow = d == lo or (d < hi and rng.randint(2) == 1)
        if grow:
            g.blocks[u].append(int(rng.randint(lay.n_combos)))
            g.depth[u] = d + 1
        else:
            g.blocks[u].pop()
            g.depth[u] = d - 1
    elif kind == "unit":
        _, f, u = site
        g.units[f][u] = _other(rng, len(lay.unit_values[f]), g.units[f][u])
    else:
        f = site[1]
        g.glob[f] = _other(rng, len(lay.glob_values[f]), g.glob[f])
    return lay.decode(g)


def neighbours(space, arch) -> list[dict]:
    """Every architecture at distance one from ``arch``, in a fixed order.

    The order: per unit, each block's other combinations (block by block),
    then the unit without its last block (if its depth can shrink), then the
    unit with one more block for each combination (if it can grow); then
    every other value of each per-unit choice, unit by unit; then every other
    value of each global choice. All are distinct, canonical and different
    from ``arch``.

    Examples
    --------
    >>> from esm_sklearn import get_space
    >>> space = get_space("densenet")
    >>> arch = space.sample(1, random_state=0)[0]
    >>> # 5 units: depth -1 and +1 where possible, 4 other kernel sizes each
    >>> len(neighbours(space, arch)) == sum((d > 1) + (d < 20) for d in arch["depth"]) + 5 * 4
    True
    """
    lay = layout(space)
    g = lay.encode(arch, space.validate)
    out = []
    for u, d in enumerate(g.depth):
        if lay.n_combos > 1:
            for b in range(d):
                for c in range(lay.n_combos):
                    if c != g.blocks[u][b]:
                        n = g.copy()
                        n.blocks[u][b] = c
                        out.append(n)
        lo, hi = lay.depth_bounds[u]
        if d > lo:
            n = g.copy()
            n.blocks[u].pop()
            n.depth[u] = d - 1
            out.append(n)
        if d < hi:
            for c in range(lay.n_combos):
                n = g.copy()
                n.blocks[u].append(c)
                n.depth[u] = d + 1
                out.append(n)
    for f, vals in enumerate(lay.unit_values):
        for u in range(lay.n_units):
            for i in range(len(vals)):
                if i != g.units[f][u]:
                    n = g.copy()
                    n.units[f][u] = i
                    out.append(n)
    for f, vals in enumerate(lay.glob_values):
        for i in range(len(vals)):
            if i != g.glob[f]:
                n = g.copy()
                n.glob[f] = i
                out.append(n)
    return [lay.decode(n) for n in out]


def crossover(space, a, b, random_state=None) -> dict:
    """A child of ``a`` and ``b``: each unit whole from one parent, each global choice from either.

    Each parent is chosen with probability 1/2, independently per unit and per
    global choice; the child is canonical and valid (and may equal a parent,
    e.g. when the parents share units).

    Examples
    --------
    >>> from esm_sklearn import get_space
    >>> space = get_space("resnet")
    >>> a, b = space.sample(2, random_state=0)
    >>> child = crossover(space, a, b, random_state=0)
    >>> all(child["depth"][u] in (a["depth"][u], b["depth"][u]) for u in range(4))
    True
    """
    lay = layout(space)
    rng = check_random_state(random_state)
    ga, gb = lay.encode(a, space.validate), lay.encode(b, space.validate)
    take_b = rng.randint(2, size=lay.n_units + len(lay.glob_fields)).astype(bool)
    parents = [gb if t else ga for t in take_b[: lay.n_units]]
    child = _Genome(
        [p.depth[u] for u, p in enumerate(parents)],
        [list(p.blocks[u]) for u, p in enumerate(parents)],
        [[p.units[f][u] for u, p in enumerate(parents)] for f in range(len(lay.unit_fields))],
        [(gb if t else ga).glob[f] for f, t in enumerate(take_b[lay.n_units :])],
    )
    return lay.decode(child)
