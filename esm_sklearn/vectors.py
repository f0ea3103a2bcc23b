"""A fixed-length integer codec of architectures, for optimisers (Optuna, pymoo, ...).

Every architecture of a space becomes a row of ``len(vector_columns(space))``
ints, whatever its depth, so a genetic optimiser (e.g. Optuna's NSGA-II) sees a
genome of fixed length and evolves every position. The layout is:

1. ``depth_u<u>`` for every unit: the unit's depth itself (``low..high``);
2. ``block_u<u>_b<b>`` for every unit and every block slot up to the unit's
   largest depth: the index of the block's combination in
   ``space.block_combinations`` (``0..n_combinations - 1``). Slots at or past
   the unit's depth are padding: :func:`to_vector` writes 0 there and
   :func:`from_vector` ignores them (any in-range value). When a block has a
   single possible combination (e.g. ``densenet``, whose kernel is a per-unit
   choice) there are no block columns;
3. ``<field>_u<u>`` for every per-unit choice and unit: the index into
   ``space.unit_choices[field]``;
4. ``<field>`` for every global choice: the index into
   ``space.global_choices[field]``.

Every column is an integer with inclusive bounds :func:`vector_bounds`; only
the depth columns are ordinal, the others are categorical codes.
:func:`vector_choices` lists ``(name, allowed values)`` for optimisers that take
such a list (e.g. ``nevergrad.p.Choice``, ``hyperopt.hp.choice``, a pymoo
integer problem with ``xl``/``xu`` from :func:`vector_bounds`).

This module imports nothing of :mod:`esm_sklearn.spaces` (only the low-level
:mod:`esm_sklearn.archs`): it reads the space
object it is given (``name``, ``n_units``, ``depth_bounds``,
``block_choices``, ``unit_choices``, ``global_choices``,
``block_combinations``, ``validate``), so ``spaces`` can import it.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Mapping
from typing import Any

import numpy as np

from .archs import _same_choice, as_arch_list

__all__ = [
    "from_params",
    "from_vector",
    "suggest",
    "to_vector",
    "vector_bounds",
    "vector_choices",
    "vector_columns",
]


class _Genome:
    """An architecture as indices: depth, combination per block, unit and global choices."""

    __slots__ = ("depth", "blocks", "units", "glob")

    def __init__(self, depth: list, blocks: list, units: list, glob: list):
        self.depth = depth  # depth[u]
        self.blocks = blocks  # blocks[u][b]: index into the canonical combinations
        self.units = units  # units[f][u]: index into unit choice f
        self.glob = glob  # glob[f]: index into global choice f

    def copy(self) -> _Genome:
        return _Genome(
            list(self.depth), [list(b) for b in self.blocks], [list(u) for u in self.units], list(self.glob)
        )


def _canonical(value, choices) -> Any:
    """The entry of ``choices`` naming ``value`` (``validate`` returns those objects)."""
    return next((c for c in choices if _same_choice(value, c)), value)


class _Layout:
    """Everything the codec and the operators need about a space, computed once."""

    def __init__(self, space):
        # No reference to ``space`` is kept: the cache below is keyed weakly on it.
        self.name = space.name
        self.n_units = int(space.n_units)
        self.depth_bounds = [tuple(int(x) for x in pair) for pair in space.depth_bounds]
        self.block_fields = list(space.block_choices)
        # Combination values as validate() spells them (the block_choices entries).
        self.combos = [
            tuple(_canonical(v, space.block_choices[f]) for f, v in zip(self.block_fields, combo))
            for combo in space.block_combinations
        ]
        self.n_combos = len(self.combos)
        self.combo_index = {c: i for i, c in enumerate(self.combos)}
        self.unit_fields = list(space.unit_choices)
        self.unit_values = [tuple(space.unit_choices[f]) for f in self.unit_fields]
        self.unit_index = [{v: i for i, v in enumerate(vals)} for vals in self.unit_values]
        self.glob_fields = list(space.global_choices)
        self.glob_values = [tuple(space.global_choices[f]) for f in self.glob_fields]
        self.glob_index = [{v: i for i, v in enumerate(vals)} for vals in self.glob_values]
        self.n_fields = 1 + len(self.block_fields) + len(self.unit_fields) + len(self.glob_fields)

        names, low, high = [], [], []
        for u, (lo, hi) in enumerate(self.depth_bounds):
            names.append(f"depth_u{u}")
            low.append(lo)
            high.append(hi)
        self.has_slots = self.n_combos > 1
        self.slot_start = []
        for u, (_, hi) in enumerate(self.depth_bounds):
            self.slot_start.append(len(names))
            if self.has_slots:
                for b in range(hi):
                    names.append(f"block_u{u}_b{b}")
                    low.append(0)
                    high.append(self.n_combos - 1)
        self.unit_start = len(names)
        for f, vals in zip(self.unit_fields, self.unit_values):
            for u in range(self.n_units):
                names.append(f"{f}_u{u}")
                low.append(0)
                high.append(len(vals) - 1)
        self.glob_start = len(names)
        for f, vals in zip(self.glob_fields, self.glob_values):
            names.append(f)
            low.append(0)
            high.append(len(vals) - 1)
        self.columns = names
        self.low = np.asarray(low, dtype=np.int64)
        self.high = np.asarray(high, dtype=np.int64)

    # ------------------------------------------------------------ arch <-> genome
    def encode(self, arch, validate) -> _Genome:
        """Genome of ``arch`` (dict or JSON); anything not exactly canonical goes
        through ``validate`` (the space's), which canonicalises it or raises its error."""
        if isinstance(arch, (str, bytes)):
            try:
                arch = json.loads(arch)
            except json.JSONDecodeError:
                return self._encode_exact(validate(arch))
        try:
            return self._encode_exact(arch)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError):
            return self._encode_exact(validate(arch))

    def _encode_exact(self, arch) -> _Genome:
        if arch.get("space", self.name) != self.name or len(arch) - ("space" in arch) != self.n_fields:
            raise KeyError("space or fields")
        depth = arch["depth"]
        if len(depth) != self.n_units:
            raise ValueError("depth length")
        for d, (lo, hi) in zip(depth, self.depth_bounds):
            if type(d) is not int or not lo <= d <= hi:
                raise ValueError("depth value")
        depth = list(depth)
        columns = [arch[f] for f in self.block_fields]
        blocks = []
        for u, d in enumerate(depth):
            per_field = [c[u] for c in columns]
            if any(len(c) != d for c in per_field):
                raise ValueError("block list length")
            if per_field:
                blocks.append([self.combo_index[c] for c in zip(*per_field)])
            else:
                blocks.append([0] * d)
        units = []
        for f, index in zip(self.unit_fields, self.unit_index):
            values = arch[f]
            if isinstance(values, str) or len(values) != self.n_units:
                raise ValueError("unit field length")
            units.append([index[v] for v in values])
        glob = [index[arch[f]] for f, index in zip(self.glob_fields, self.glob_index)]
        return _Genome(depth, blocks, units, glob)

    def decode(self, g: _Genome) -> dict:
        """Canonical architecture dict of a genome (fresh lists, nothing shared)."""
        arch: dict[str, Any] = {"space": self.name, "depth": list(g.depth)}
        combos = self.combos
        for j, f in enumerate(self.block_fields):
            arch[f] = [[combos[i][j] for i in unit] for unit in g.blocks]
        for f, vals, idx in zip(self.unit_fields, self.unit_values, g.units):
            arch[f] = [vals[i] for i in idx]
        for f, vals, i in zip(self.glob_fields, self.glob_values, g.glob):
            arch[f] = vals[i]
        return arch

    # ----------------------------------------------------------- genome <-> row
    def to_row(self, g: _Genome, row: np.ndarray) -> None:
        row[: self.n_units] = g.depth
        if self.has_slots:
            for u, unit in enumerate(g.blocks):
                start = self.slot_start[u]
                row[start : start + len(unit)] = unit
        pos = self.unit_start
        for idx in g.units:
            row[pos : pos + self.n_units] = idx
            pos += self.n_units
        row[self.glob_start :] = g.glob

    def from_row(self, row: list) -> _Genome:
        depth = row[: self.n_units]
        if self.has_slots:
            blocks = [row[s : s + d] for s, d in zip(self.slot_start, depth)]
        else:
            blocks = [[0] * d for d in depth]
        pos = self.unit_start
        units = []
        for _ in self.unit_fields:
            units.append(row[pos : pos + self.n_units])
            pos += self.n_units
        return _Genome(depth, blocks, units, row[self.glob_start :])


_LAYOUTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def layout(space) -> _Layout:
    """The (cached) layout of ``space``."""
    try:
        return _LAYOUTS[space]
    except KeyError:
        lay = _Layout(space)
        _LAYOUTS[space] = lay
        return lay
    except TypeError:  # not weak-referenceable: no cache
        return _Layout(space)


# ------------------------------------------------------------------ public
def vector_columns(space) -> list[str]:
    """Names of the columns of :func:`to_vector` (see the module docstring).

    Examples
    --------
    >>> from esm_sklearn import get_space
    >>> cols = vector_columns(get_space("resnet"))
    >>> len(cols), cols[:5], cols[4:6]
    (32, ['depth_u0', 'depth_u1', 'depth_u2', 'depth_u3', 'block_u0_b0'], ['block_u0_b0', 'block_u0_b1'])
    """
    return list(layout(space).columns)


def vector_bounds(space) -> np.ndarray:
    """Inclusive ``[low, high]`` of every column, an int array of shape ``(d, 2)``.

    Every row of ints within these bounds is an architecture, so any integer
    optimiser can search the space with them (e.g. pymoo's ``xl``/``xu``).

    Examples
    --------
    >>> from esm_sklearn import get_space
    >>> space = get_space("resnet")
    >>> bounds = vector_bounds(space)
    >>> bounds[[0, 4]].tolist()
    [[1, 7], [0, 8]]
    >>> rng = np.random.default_rng(0)  # any optimiser proposing integer rows
    >>> V = rng.integers(bounds[:, 0], bounds[:, 1] + 1, size=(3, len(bounds)))
    >>> archs = from_vector(space, V)
    >>> all(space.validate(a) == a for a in archs)
    True
    """
    lay = layout(space)
    return np.stack([lay.low, lay.high], axis=1)


def vector_choices(space) -> list[tuple[str, list[int]]]:
    """The space as ``(column name, allowed ints)`` pairs, for other optimisers.

    ``from_vector`` of a row holding one allowed value per column is a valid
    architecture. Depth columns hold depths, the others choice indices (the
    meaning of block index ``i`` is ``space.block_combinations[i]``).

    Examples
    --------
    >>> from esm_sklearn import get_space
    >>> vector_choices(get_space("fbnet"))[:2]
    [('depth_u0', [0, 1]), ('depth_u1', [0, 1, 2, 3, 4])]
    """
    lay = layout(space)
    return [(c, list(range(lo, hi + 1))) for c, lo, hi in zip(lay.columns, lay.low.tolist(), lay.high.tolist())]


def to_vector(space, archs) -> np.ndarray:
    """Fixed-length int rows of architectures, shape ``(n, len(vector_columns(space)))``.

    Parameters
    ----------
    space : SearchSpace
    archs : sequence of dict or str
        Architectures of ``space`` (validated; an error names the index).

    Examples
    --------
    >>> from esm_sklearn import get_space
    >>> space = get_space("resnet")
    >>> archs = space.sample(100, random_state=0)
    >>> V = to_vector(space, archs)
    >>> V.shape, from_vector(space, V) == archs
    ((100, 32), True)
    """
    lay = layout(space)
    archs = as_arch_list(archs)
    out = np.zeros((len(archs), len(lay.columns)), dtype=np.int64)
    for i, arch in enumerate(archs):
        try:
            g = lay.encode(arch, space.validate)
        except ValueError as exc:
            raise ValueError(f"architecture {i}: {exc}") from None
        lay.to_row(g, out[i])
    return out


def _check_vector(lay: _Layout, V) -> np.ndarray:
    V = np.asarray(V)
    if V.ndim != 2 or V.shape[1] != len(lay.columns):
        raise ValueError(
            f"{lay.name}: expected an array of shape (n, {len(lay.columns)}) (one row per "
            f"architecture, columns as in vector_columns), got shape {V.shape}; a single vector "
            "v is passed as [v]"
        )
    if V.dtype.kind not in "iub":
        if V.dtype.kind != "f":
            raise ValueError(f"{lay.name}: vector values must be integers, got dtype {V.dtype}")
        bad = ~np.isfinite(V) | (V != np.round(V))
        if bad.any():
            i, j = (int(x) for x in np.argwhere(bad)[0])
            raise ValueError(
                f"{lay.name}: row {i}, column {lay.columns[j]!r}: value {float(V[i, j])} is not an integer"
            )
    # Compare before any cast: a huge float must not wrap into range.
    bad = (V < lay.low) | (V > lay.high)
    if bad.any():
        i, j = (int(x) for x in np.argwhere(bad)[0])
        value = V[i, j].item()
        value = int(value) if float(value).is_integer() else value
        raise ValueError(
            f"{lay.name}: row {i}, column {lay.columns[j]!r}: value {value} outside the "
            f"allowed range {int(lay.low[j])}..{int(lay.high[j])}"
        )
    return V.astype(np.int64)


def from_vector(space, V) -> list[dict]:
    """Canonical architectures of the rows of ``V`` (inverse of :func:`to_vector`).

    Padding slots (at or past a unit's depth) are ignored, so
    ``from_vector(to_vector(a)) == a`` and ``to_vector(from_vector(V))``
    equals ``V`` with its padding set to 0.

    Raises
    ------
    ValueError
        For a wrong shape, a non-integer value or one outside its column's
        range, naming the row, the column and the allowed range.

    Examples
    --------
    >>> from esm_sklearn import get_space
    >>> space = get_space("densenet")
    >>> from_vector(space, [[1, 2, 1, 1, 1, 0, 4, 0, 0, 0]])[0]["kernel_size"]
    [1, 9, 1, 1, 1]
    """
    lay = layout(space)
    rows = _check_vector(lay, V).tolist()
    return [lay.decode(lay.from_row(row)) for row in rows]


def from_params(space, params: Mapping) -> dict:
    """The architecture of a ``{column: value}`` mapping, e.g. an Optuna trial's ``params``.

    Examples
    --------
    >>> from esm_sklearn import get_space
    >>> space = get_space("resnet")
    >>> arch = space.sample(1, random_state=1)[0]
    >>> params = dict(zip(vector_columns(space), to_vector(space, [arch])[0].tolist()))
    >>> from_params(space, params) == arch
    True
    """
    lay = layout(space)
    missing = [c for c in lay.columns if c not in params]
    if missing:
        raise ValueError(f"{lay.name}: params lack column(s) {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    return from_vector(space, [[params[c] for c in lay.columns]])[0]


def suggest(space, trial) -> dict:
    """Draw an architecture with an Optuna ``trial``, over the fixed layout.

    Every column is suggested in every trial (depths with ``suggest_int``,
    the other columns with ``suggest_categorical`` over their indices), padding
    slots included, so a genetic sampler such as ``NSGAIISampler`` evolves a
    genome of fixed length. The trial's ``params`` then hold the vector
    (:func:`from_params` turns them back into the architecture).

    Examples
    --------
    >>> import optuna  # doctest: +SKIP
    >>> from esm_sklearn import get_space
    >>> space = get_space("resnet")
    >>> study = optuna.create_study()  # doctest: +SKIP
    >>> study.optimize(lambda t: sum(space.suggest(t)["depth"]), n_trials=3)  # doctest: +SKIP
    """
    lay = layout(space)
    row = []
    for j, name in enumerate(lay.columns):
        low, high = int(lay.low[j]), int(lay.high[j])
        if j < lay.n_units:
            row.append(trial.suggest_int(name, low, high))
        else:
            row.append(trial.suggest_categorical(name, list(range(low, high + 1))))
    return lay.decode(lay.from_row(row))
