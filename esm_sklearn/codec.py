"""The fast reader of architectures shared by the encoders.

:class:`_Codec` reads a batch of architectures of one space into integer
codes (:class:`_Scan`): per architecture a few C-level operations check the
structure and gather depths and block values, which are then checked against
the space for the whole batch with numpy. Anything not in exact canonical form
goes through :meth:`SearchSpace.validate`, which canonicalises it (``0.667``
-> ``0.6667``) or raises a ``ValueError`` naming the unit, block, field and
the allowed values.

It reads only a space's facts, so it sits below :mod:`esm_sklearn.spaces`
(the parameter and FLOP counts of a space use it too).
"""

from __future__ import annotations

import itertools
import math
from numbers import Real

import numpy as np

from .archs import _same_choice, as_arch_list, load_arch


class _Fallback(Exception):
    """The fast reader gives up on an architecture; ``validate`` decides."""


# Anything the fast reader may raise on unusual input: the arch then goes
# through SearchSpace.validate, which canonicalises it or raises ValueError.
_FALLBACK_ERRORS = (_Fallback, KeyError, TypeError, IndexError, AttributeError, ValueError)


class _Scan:
    """Integer codes of a batch of architectures (see :meth:`_Codec.scan`).

    ``depth`` is ``(n, n_units)``; ``combo`` holds, for every block in
    (arch, unit, slot) order, its index into ``space.block_combinations``;
    ``ucode`` is ``(n, n_units)``, the index of the unit's combination of
    per-unit choices; ``gidx`` is ``(n, n_globals)``, the index of each global
    choice; ``group`` is ``arch * n_units + unit`` of every block.
    """

    def __init__(self, codec: _Codec, depth, group, combo, ucode, gidx):
        self.codec = codec
        self.n = depth.shape[0]
        self.depth = depth
        self.group = group
        self.combo = combo
        self.ucode = ucode
        self.gidx = gidx

    @property
    def unit(self) -> np.ndarray:
        return self.group % self.codec.n_units

    @property
    def row(self) -> np.ndarray:
        return self.group // self.codec.n_units

    @property
    def slot(self) -> np.ndarray:
        """Position of every block within its unit."""
        sizes = self.depth.ravel()
        starts = np.cumsum(sizes) - sizes
        return np.arange(self.group.size, dtype=np.intp) - starts[self.group]

    @property
    def code(self) -> np.ndarray:
        """Index of every block into ``space.unit_block_combinations``."""
        return self.combo * self.codec.n_unit_combos + self.ucode.ravel()[self.group]

    def counts(self) -> np.ndarray:
        """``(n, n_units, n_codes)``: blocks of each unit taking each code."""
        n_codes = self.codec.n_codes
        flat = np.bincount(
            self.group * n_codes + self.code, minlength=self.n * self.codec.n_units * n_codes
        )
        return flat.reshape(self.n, self.codec.n_units, n_codes)


class _Codec:
    """Fast reader of architectures of one space into integer codes.

    Per architecture, a few C-level operations check the structure (fields,
    list types and lengths) and gather depths and block values; depths and
    values are then checked against the space for the whole batch with numpy.
    Any architecture not in exact canonical form goes through
    ``space.validate``, which canonicalises it (e.g. ``0.667`` -> ``0.6667``)
    or raises its ``ValueError``.
    """

    def __init__(self, space):
        self.space = space
        self.name = space.name
        self.n_units = space.n_units
        self.low = np.array([low for low, _ in space.depth_bounds], dtype=np.intp)
        self.high = np.array([high for _, high in space.depth_bounds], dtype=np.intp)
        self.max_slots = [high for _, high in space.depth_bounds]
        self.block_fields = list(space.block_choices)
        self.unit_fields = list(space.unit_choices)
        self.global_fields = list(space.global_choices)
        self.keys = frozenset(space.fields)
        self.keys_with_space = frozenset([*space.fields, "space"])
        self.field_index = [{v: i for i, v in enumerate(c)} for c in space.block_choices.values()]
        # Numeric fields are matched with searchsorted over the sorted choices.
        self.sorted_choices = []
        for choices in space.block_choices.values():
            if all(isinstance(v, Real) and not isinstance(v, bool) for v in choices):
                values = np.array([float(v) for v in choices])
                order = np.argsort(values, kind="stable")
                self.sorted_choices.append((values[order], order.astype(np.intp)))
            else:
                self.sorted_choices.append(None)
        sizes = [len(c) for c in space.block_choices.values()]
        self.strides = [math.prod(sizes[j + 1 :]) for j in range(len(sizes))]
        self.product_to_combo = np.full(math.prod(sizes), -1, dtype=np.intp)
        for i, combo in enumerate(space.block_combinations):
            product = 0
            for value, choices, stride in zip(
                combo, space.block_choices.values(), self.strides, strict=True
            ):
                product += stride * next(
                    j for j, c in enumerate(choices) if _same_choice(value, c)
                )
            self.product_to_combo[product] = i
        self.n_block_combos = len(space.block_combinations)
        self.unit_index = [
            ({v: i for i, v in enumerate(c)}, len(c)) for c in space.unit_choices.values()
        ]
        self.unit_combos = list(itertools.product(*space.unit_choices.values()))
        self.n_unit_combos = len(self.unit_combos)
        self.global_index = [
            (f, {v: i for i, v in enumerate(c)}) for f, c in space.global_choices.items()
        ]
        self.n_codes = self.n_block_combos * self.n_unit_combos
        self.codes = space.unit_block_combinations
        self.code_fields = self.block_fields + self.unit_fields

    def _reader(self, depths, columns, ucodes, gcodes):
        """``read(arch)`` appending one arch to the lists.

        Raises one of ``_FALLBACK_ERRORS`` on a structural problem (the caller
        rolls the lists back and validates). Depths and block columns are only
        gathered here; :meth:`scan` checks them for the whole batch.
        """
        name, keys_exact, keys_with_space = self.name, self.keys, self.keys_with_space
        n_units = self.n_units
        blocks = [(f, c.append) for f, c in zip(self.block_fields, columns, strict=True)]
        units = [(f, i, s) for f, (i, s) in zip(self.unit_fields, self.unit_index, strict=True)]
        single_unit_field = units[0] if len(units) == 1 else None
        globals_ = self.global_index
        extend_depths = depths.extend

        def read(arch):
            if type(arch) is str or type(arch) is bytes:
                arch = load_arch(arch)
            keys = arch.keys()
            if keys == keys_with_space:
                if arch["space"] != name:
                    raise _Fallback
            elif keys != keys_exact:
                raise _Fallback
            depth = arch["depth"]
            if type(depth) is not list or len(depth) != n_units:
                raise _Fallback
            for fname, append in blocks:
                column = arch[fname]
                if type(column) is not list or len(column) != n_units:
                    raise _Fallback
                append(column)
            if single_unit_field is not None:
                fname, index, _ = single_unit_field
                column = arch[fname]
                if type(column) is not list or len(column) != n_units:
                    raise _Fallback
                ucodes.extend(map(index.__getitem__, column))
            elif units:
                codes = [0] * n_units
                for fname, index, size in units:
                    column = arch[fname]
                    if type(column) is not list or len(column) != n_units:
                        raise _Fallback
                    codes = [c * size + index[v] for c, v in zip(codes, column, strict=True)]
                ucodes.extend(codes)
            for fname, index in globals_:
                gcodes.append(index[arch[fname]])
            extend_depths(depth)

        return read

    def scan(self, archs) -> _Scan:
        """Codes of every architecture; ``ValueError`` naming the first bad one."""
        archs = as_arch_list(archs)
        n, n_units, n_globals = len(archs), self.n_units, len(self.global_index)
        depths: list[int] = []
        columns: list[list] = [[] for _ in self.block_fields]
        ucodes: list[int] = []
        gcodes: list[int] = []
        read = self._reader(depths, columns, ucodes, gcodes)
        for i, arch in enumerate(archs):
            try:
                read(arch)
            except _FALLBACK_ERRORS:
                del depths[i * n_units :], gcodes[i * n_globals :]
                del ucodes[i * n_units if self.unit_index else 0 :]
                for column in columns:
                    del column[i:]
                read(self._validate(arch, i))
        depth = self._depth_array(archs, depths, columns)
        group = np.repeat(np.arange(n * n_units, dtype=np.intp), depth.ravel())
        if self.block_fields:
            combo = self._block_combos(archs, columns, depth, group)
        else:
            combo = np.zeros(group.size, dtype=np.intp)
        if self.unit_index:
            ucode = np.array(ucodes, dtype=np.intp).reshape(n, n_units)
        else:
            ucode = np.zeros((n, n_units), dtype=np.intp)
        gidx = np.array(gcodes, dtype=np.intp).reshape(n, n_globals)
        return _Scan(self, depth, group, combo, ucode, gidx)

    def _canonicalise(self, archs, row, depth, columns) -> dict:
        """Validate arch ``row`` (or raise) and put its canonical form in place."""
        canon = self._validate(archs[row], int(row))
        depth[row] = canon["depth"]
        for fname, column in zip(self.block_fields, columns, strict=True):
            column[row] = canon[fname]
        return canon

    def _depth_array(self, archs, depths: list, columns) -> np.ndarray:
        """``(n, n_units)`` depths; non-int or out-of-range ones go through validate."""
        n, n_units = len(archs), self.n_units
        if set(map(type, depths)) <= {int}:  # exact: bools, floats, numpy ints are checked
            depth = np.array(depths, dtype=np.intp).reshape(n, n_units)
            suspect = np.zeros(n, dtype=bool)
        else:
            suspect = np.array([type(d) is not int for d in depths], dtype=bool)
            suspect = suspect.reshape(n, n_units).any(axis=1)
            depth = np.zeros((n, n_units), dtype=np.intp)
            ok = np.repeat(~suspect, n_units)
            depth[~suspect] = np.array(
                [d for d, good in zip(depths, ok, strict=True) if good], dtype=np.intp
            ).reshape(-1, n_units)
        suspect |= ((depth < self.low) | (depth > self.high)).any(axis=1)
        for row in np.flatnonzero(suspect):
            self._canonicalise(archs, row, depth, columns)
        return depth

    def _field_indices(self, j: int, values: list) -> np.ndarray:
        """Choice index of every value of block field ``j``; -1 if not exact."""
        sorted_choices = self.sorted_choices[j]
        if sorted_choices is not None:
            try:
                array = np.array(values)
            except (TypeError, ValueError):
                array = None
            if array is not None and array.ndim == 1 and array.dtype.kind in "biuf":
                choices, order = sorted_choices
                array = array.astype(np.float64, copy=False)
                pos = np.searchsorted(choices, array).clip(0, len(choices) - 1)
                return np.where(choices[pos] == array, order[pos], -1)
        index = self.field_index[j]
        out = np.empty(len(values), dtype=np.intp)
        for b, value in enumerate(values):
            try:
                out[b] = index.get(value, -1)
            except TypeError:  # unhashable
                out[b] = -1
        return out

    def _block_combos(self, archs, columns, depth, group) -> np.ndarray:
        """Index into ``space.block_combinations`` of every block."""
        n, n_units = depth.shape
        flatten = itertools.chain.from_iterable
        # Every unit entry must be a list (or tuple) of the unit's depth.
        for column in columns:
            if not set(map(type, flatten(column))) <= {list, tuple}:
                for row, per_unit in enumerate(column):
                    if any(type(v) not in (list, tuple) for v in per_unit):
                        self._canonicalise(archs, row, depth, columns)
        depth_list = depth.ravel().tolist()
        for column in columns:
            if list(map(len, flatten(column))) == depth_list:
                continue
            lengths = np.fromiter(map(len, flatten(column)), dtype=np.intp, count=n * n_units)
            for row in np.flatnonzero((lengths != depth.ravel()).reshape(n, n_units).any(axis=1)):
                self._canonicalise(archs, row, depth, columns)  # raises
        indices = [self._field_indices(j, list(flatten(flatten(c)))) for j, c in enumerate(columns)]
        bad = np.zeros(group.size, dtype=bool)
        for idx in indices:
            bad |= idx < 0
        if bad.any():
            # Near values (0.667) or invalid ones: validate canonicalises or raises.
            starts = np.concatenate([[0], np.cumsum(depth.sum(axis=1))])
            for row in np.unique(group[bad] // n_units):
                canon = self._canonicalise(archs, row, depth, columns)
                start, stop = starts[row], starts[row + 1]
                for j, fname in enumerate(self.block_fields):
                    index = self.field_index[j]
                    indices[j][start:stop] = [index[v] for v in flatten(canon[fname])]
        product = np.zeros(group.size, dtype=np.intp)
        for idx, stride in zip(indices, self.strides, strict=True):
            product += idx * stride
        combo = self.product_to_combo[product]
        if (combo < 0).any():
            row = int(group[np.flatnonzero(combo < 0)[0]] // n_units)
            self._validate(archs[row], row)  # raises, naming the combination
            raise ValueError(f"architecture {row}: block combination not allowed")
        return combo

    def _validate(self, arch, i: int) -> dict:
        try:
            return self.space.validate(arch)
        except ValueError as exc:
            raise ValueError(f"architecture {i}: {exc}") from None
        except (TypeError, AttributeError) as exc:  # validate trips on some malformed input
            raise ValueError(f"architecture {i}: malformed {self.name} architecture ({exc})") from None

    def numeric(self, fname: str, choices) -> np.ndarray:
        """Choices of a field as floats, or ``ValueError`` if not numeric."""
        try:
            return np.array([float(v) for v in choices], dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(
                f"{self.name}: field {fname!r} has non-numeric choices {list(choices)}; "
                "use OneHotArchEncoder, FeatureCountEncoder or FCCEncoder"
            ) from None
