"""Encoders: scikit-learn transformers from architectures to feature matrices.

Every encoder takes a sequence of architectures (list of dicts or JSON strings,
a pandas Series of either, a one-column DataFrame or an ``(n, 1)`` object
array) and returns a dense ``(n_archs, n_features)`` array. Columns are
concatenated per unit (``unit0__...``, ``unit1__...``); a per-unit choice acts
as a feature of every block of its unit; a global choice (e.g. ``resolution``)
is one numeric column named by the field (one-hot columns for
:class:`OneHotArchEncoder`), after the unit columns.

- :class:`OneHotArchEncoder`: one-hot of every block slot (absent slot: zeros);
- :class:`FeatureEncoder`: depth and the values of every block slot;
- :class:`FeatureCountEncoder` (FC): blocks taking each value of each feature;
- :class:`FCCEncoder` (FCC): blocks taking each combination of all features;
- :class:`StatisticalEncoder`: depth, mean and std of every feature;
- :class:`LookupTableEncoder`: sum of the profiled latencies of the unit's blocks.

All encoders read architectures through one fast, batched path, the codec
of :mod:`esm_sklearn.codec`.
"""

from __future__ import annotations

import math
import os
from numbers import Real

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from .codec import _Codec, _Scan
from .macro import get_macro
from .spaces import SearchSpace, _format_value, _same_choice, as_arch_list, get_space, infer_space

__all__ = [
    "OneHotArchEncoder",
    "FeatureEncoder",
    "FeatureCountEncoder",
    "FCCEncoder",
    "StatisticalEncoder",
    "LookupTableEncoder",
]


class _ArchEncoder(TransformerMixin, BaseEstimator):
    """Shared machinery of the architecture encoders (after ``DictVectorizer``).

    Subclasses implement ``_setup(codec)`` returning the unit feature names and
    ``_encode(scan)`` returning the matching ``(n, n_unit_features)`` array.
    """

    # Whether an integer dtype represents the output exactly.
    _integer_output = False
    # Global choices as one-hot columns instead of one numeric column.
    _one_hot_globals = False

    def __init__(self, space=None, dtype=np.float32):
        self.space = space
        self.dtype = dtype

    # ----------------------------------------------------------------- fit
    def _resolve_space(self, archs) -> SearchSpace:
        if self.space is None:
            return infer_space(archs)
        if not isinstance(self.space, (str, SearchSpace)):
            raise ValueError(
                f"space must be None, a space name or a SearchSpace, got {self.space!r}"
            )
        return get_space(self.space)

    def _check_dtype(self) -> np.dtype:
        try:
            dtype = np.dtype(self.dtype)
        except TypeError:
            raise ValueError(f"dtype={self.dtype!r} is not a numpy dtype") from None
        allowed = "fiu" if self._integer_output else "f"
        if dtype.kind not in allowed:
            kinds = "a numeric" if self._integer_output else "a floating-point"
            raise ValueError(f"{type(self).__name__} needs {kinds} dtype, got dtype={self.dtype!r}")
        return dtype

    def _fit(self, archs) -> None:
        self._check_dtype()
        self.space_ = self._resolve_space(archs)
        self._codec_ = _Codec(self.space_)
        names = list(self._setup(self._codec_))
        self._n_unit_features_ = len(names)
        for fname, choices in self.space_.global_choices.items():
            if self._one_hot_globals:
                names.extend(f"{fname}={_format_value(v)}" for v in choices)
            else:
                self._codec_.numeric(fname, choices)
                names.append(fname)
        self.feature_names_out_ = np.asarray(names, dtype=object)
        self.n_features_out_ = len(names)

    def fit(self, X, y=None):
        """Learn the search space (given or inferred) and check ``X`` against it.

        Parameters
        ----------
        X : sequence of dict or str
            Architectures (dicts or JSON strings), a pandas Series of either, a
            one-column DataFrame or an ``(n, 1)`` object array.
        y : ignored

        Returns
        -------
        self

        Raises
        ------
        ValueError
            If the space is missing or mixed (when ``space=None``) or an
            architecture is outside it.
        """
        archs = as_arch_list(X)
        self._fit(archs)
        self._codec_.scan(archs)
        return self

    def fit_transform(self, X, y=None, **fit_params):
        """Fit to ``X`` and encode it (reads ``X`` once)."""
        archs = as_arch_list(X)
        self._fit(archs)
        return self._transform_archs(archs)

    # ----------------------------------------------------------- transform
    def transform(self, X):
        """Encode architectures.

        Parameters
        ----------
        X : sequence of dict or str
            Architectures of the fitted space (see :meth:`fit`).

        Returns
        -------
        ndarray of shape (n_archs, n_features_out_)
            Encoded architectures, of type ``dtype``.

        Raises
        ------
        ValueError
            Naming the architecture, unit, block, field and allowed values of
            the first architecture outside the fitted space.
        """
        check_is_fitted(self)
        return self._transform_archs(as_arch_list(X))

    def _transform_archs(self, archs) -> np.ndarray:
        scan = self._codec_.scan(archs)
        dtype = self._check_dtype()
        out = np.empty((scan.n, self.n_features_out_), dtype=dtype)
        col = self._n_unit_features_
        out[:, :col] = self._encode(scan)
        for gi, (fname, choices) in enumerate(self.space_.global_choices.items()):
            if self._one_hot_globals:
                width = len(choices)
                out[:, col : col + width] = np.eye(width, dtype=dtype)[scan.gidx[:, gi]]
            else:
                width = 1
                out[:, col] = self._codec_.numeric(fname, choices)[scan.gidx[:, gi]]
            col += width
        return out

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """Names of the output columns (``unit0__...``, then global fields).

        Parameters
        ----------
        input_features : ignored
            Architectures have no input feature names.

        Returns
        -------
        ndarray of str objects
        """
        check_is_fitted(self)
        return self.feature_names_out_.copy()

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.dict = True
        tags.input_tags.string = True
        return tags

    # ---------------------------------------------------------- subclasses
    def _setup(self, codec: _Codec) -> list[str]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _encode(self, scan: _Scan) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


def _slot_table(scan: _Scan, fill: int, values=None) -> np.ndarray:
    """``(n, n_units, max_depth)`` table of ``values`` per slot (``fill`` if absent).

    ``values`` defaults to each block's index into ``space.block_combinations``.
    """
    max_slots = max(scan.codec.max_slots) if scan.codec.max_slots else 0
    table = np.full((scan.n, scan.codec.n_units, max(max_slots, 1)), fill, dtype=np.intp)
    values = scan.combo if values is None else values
    table.reshape(-1)[scan.group * table.shape[2] + scan.slot] = values
    return table


class OneHotArchEncoder(_ArchEncoder):
    """One-hot encoding of every block slot, concatenated per unit.

    For every slot ``j`` below unit ``u``'s maximum depth there is a one-hot
    group per block field (``unit0__block1__kernel_size=5``); per-unit fields
    act as features of every block of the unit, so they are one-hot per slot
    too (DenseNet: ``unit0__block3__kernel_size=5``). An absent slot is all
    zeros, so depth is encoded by which slots are present. Global choices are
    one-hot too (``resolution=128``).

    Parameters
    ----------
    space : str, SearchSpace or None, default=None
        The search space; ``None`` infers it in ``fit`` from the
        architectures' ``"space"`` field.
    dtype : numpy dtype, default=np.float32
        Output type.

    Attributes
    ----------
    space_ : SearchSpace
        The fitted space.
    feature_names_out_ : ndarray of str
        Column names.
    n_features_out_ : int
        Number of columns.

    Examples
    --------
    >>> from esm_sklearn import OneHotArchEncoder, get_space
    >>> archs = get_space("resnet").sample(3, random_state=0)
    >>> OneHotArchEncoder().fit_transform(archs).shape
    (3, 168)
    """

    _integer_output = True
    _one_hot_globals = True

    def _setup(self, codec):
        space = codec.space
        fields = {**space.block_choices, **space.unit_choices}
        names = []
        for unit in range(codec.n_units):
            for slot in range(codec.max_slots[unit]):
                for fname, choices in fields.items():
                    names.extend(
                        f"unit{unit}__block{slot}__{fname}={_format_value(v)}" for v in choices
                    )
        # Rows: block code (block and unit choices; last row: absent slot); columns: one-hot per field.
        self._block_table_ = _one_hot_table(space.unit_block_combinations, fields, True)
        return names

    def _encode(self, scan):
        codec = scan.codec
        slots = self._block_table_[_slot_table(scan, codec.n_codes, scan.code)]
        parts = [
            slots[:, unit, : codec.max_slots[unit]].reshape(scan.n, -1)
            for unit in range(codec.n_units)
        ]
        return np.concatenate(parts, axis=1)


def _one_hot_table(combos, choices: dict, absent_row: bool) -> np.ndarray:
    width = sum(len(c) for c in choices.values())
    table = np.zeros((len(combos) + absent_row, width), dtype=np.int8)
    for row, combo in enumerate(combos):
        offset = 0
        for value, options in zip(combo, choices.values(), strict=True):
            table[row, offset + options.index(value)] = 1
            offset += len(options)
    return table


class FeatureEncoder(_ArchEncoder):
    """Numeric value of every block slot, concatenated per unit.

    Unit ``u`` has ``unit0__depth``, one column per per-unit field
    (``unit0__kernel_size``) and, for every slot ``j`` below the unit's maximum
    depth, one column per block field (``unit0__block1__kernel_size``), 0 for an
    absent slot.

    Parameters
    ----------
    space : str, SearchSpace or None, default=None
        The search space; ``None`` infers it in ``fit`` from the data.
    dtype : numpy floating dtype, default=np.float32
        Output type.

    Attributes
    ----------
    space_ : SearchSpace
    feature_names_out_ : ndarray of str
    n_features_out_ : int

    Examples
    --------
    >>> from esm_sklearn import FeatureEncoder, get_space
    >>> archs = get_space("resnet").sample(3, random_state=0)
    >>> FeatureEncoder().fit(archs).get_feature_names_out()[:3].tolist()
    ['unit0__depth', 'unit0__block0__kernel_size', 'unit0__block0__expand_ratio']
    """

    def _setup(self, codec):
        space = codec.space
        names = []
        for unit in range(codec.n_units):
            names.append(f"unit{unit}__depth")
            names.extend(f"unit{unit}__{fname}" for fname in space.unit_choices)
            for slot in range(codec.max_slots[unit]):
                names.extend(f"unit{unit}__block{slot}__{fname}" for fname in space.block_choices)
        n_fields = len(space.block_choices)
        table = np.zeros((codec.n_block_combos + 1, n_fields))
        for j, (fname, choices) in enumerate(space.block_choices.items()):
            values = dict(zip(choices, codec.numeric(fname, choices), strict=True))
            table[:-1, j] = [values[c[j]] for c in space.block_combinations]
        self._block_table_ = table
        unit_table = np.zeros((codec.n_unit_combos, len(space.unit_choices)))
        for j, (fname, choices) in enumerate(space.unit_choices.items()):
            values = dict(zip(choices, codec.numeric(fname, choices), strict=True))
            unit_table[:, j] = [values[c[j]] for c in codec.unit_combos]
        self._unit_table_ = unit_table
        return names

    def _encode(self, scan):
        codec = scan.codec
        slots = self._block_table_[_slot_table(scan, codec.n_block_combos)]
        units = self._unit_table_[scan.ucode]
        parts = []
        for unit in range(codec.n_units):
            parts.append(scan.depth[:, unit : unit + 1])
            parts.append(units[:, unit])
            parts.append(slots[:, unit, : codec.max_slots[unit]].reshape(scan.n, -1))
        return np.concatenate(parts, axis=1)


class FeatureCountEncoder(_ArchEncoder):
    """Feature count (FC): per unit, how many blocks take each value of each feature.

    Columns ``unit0__kernel_size=3``, ..., ``unit0__expand_ratio=0.5``, ...; a
    per-unit choice counts for every block of its unit. Each feature's counts
    within a unit sum to the unit's depth.

    Parameters
    ----------
    space : str, SearchSpace or None, default=None
        The search space; ``None`` infers it in ``fit`` from the data.
    dtype : numpy dtype, default=np.float32
        Output type.

    Attributes
    ----------
    space_ : SearchSpace
    feature_names_out_ : ndarray of str
    n_features_out_ : int

    Examples
    --------
    >>> from esm_sklearn import FeatureCountEncoder, get_space
    >>> archs = get_space("resnet").sample(3, random_state=0)
    >>> FeatureCountEncoder().fit_transform(archs).shape
    (3, 24)
    """

    _integer_output = True

    def _setup(self, codec):
        space = codec.space
        choices = {**space.block_choices, **space.unit_choices}
        labels = [
            (j, value, f"{fname}={_format_value(value)}")
            for j, (fname, options) in enumerate(choices.items())
            for value in options
        ]
        # codes -> (field, value) indicator.
        self._weights_ = np.array(
            [[float(code[j] == value) for j, value, _ in labels] for code in codec.codes]
        ).reshape(codec.n_codes, len(labels))
        return [f"unit{u}__{label}" for u in range(codec.n_units) for _, _, label in labels]

    def _encode(self, scan):
        return (scan.counts() @ self._weights_).reshape(scan.n, -1)


class FCCEncoder(_ArchEncoder):
    """Feature combination count (FCC), the ESM paper's encoding.

    Per unit, the number of blocks taking each combination of all block
    features (per-unit choices included), in the order of
    ``space.unit_block_combinations``: ``unit2__kernel_size=5__expand_ratio=0.6667``.
    It is invariant to the order of blocks within a unit and linear in them:
    an architecture's FCC is the sum of its blocks' one-hot combination
    vectors. Spaces with restricted combinations (``fbnet``) get only the
    allowed ones.

    Parameters
    ----------
    space : str, SearchSpace or None, default=None
        The search space; ``None`` infers it in ``fit`` from the data.
    dtype : numpy dtype, default=np.float32
        Output type.

    Attributes
    ----------
    space_ : SearchSpace
    feature_names_out_ : ndarray of str
    n_features_out_ : int

    Examples
    --------
    >>> from esm_sklearn import FCCEncoder, get_space
    >>> space = get_space("resnet")
    >>> archs = space.sample(3, random_state=0)
    >>> X = FCCEncoder().fit_transform(archs)
    >>> X.shape, bool((X.sum(axis=1) == space.total_depth(archs)).all())
    ((3, 36), True)
    """

    _integer_output = True

    def _setup(self, codec):
        fields = codec.code_fields
        return [
            f"unit{u}__"
            + "__".join(f"{f}={_format_value(v)}" for f, v in zip(fields, code, strict=True))
            for u in range(codec.n_units)
            for code in codec.codes
        ]

    def _encode(self, scan):
        return scan.counts().reshape(scan.n, -1)


class StatisticalEncoder(_ArchEncoder):
    """Per unit depth and mean/std of every numeric feature over its blocks (after HAT).

    Columns ``unit0__depth``, ``unit0__kernel_size__mean``,
    ``unit0__kernel_size__std``, ...; the standard deviation is the population
    one; an empty unit gives zeros.

    Parameters
    ----------
    space : str, SearchSpace or None, default=None
        The search space; ``None`` infers it in ``fit`` from the data.
    dtype : numpy floating dtype, default=np.float32
        Output type.

    Attributes
    ----------
    space_ : SearchSpace
    feature_names_out_ : ndarray of str
    n_features_out_ : int

    Examples
    --------
    >>> from esm_sklearn import StatisticalEncoder, get_space
    >>> archs = get_space("resnet").sample(3, random_state=0)
    >>> StatisticalEncoder().fit(archs).get_feature_names_out()[:3].tolist()
    ['unit0__depth', 'unit0__kernel_size__mean', 'unit0__kernel_size__std']
    """

    def _setup(self, codec):
        choices = {**codec.space.block_choices, **codec.space.unit_choices}
        values = np.zeros((codec.n_codes, len(choices)))
        for j, (fname, options) in enumerate(choices.items()):
            numeric = dict(zip(options, codec.numeric(fname, options), strict=True))
            values[:, j] = [numeric[code[j]] for code in codec.codes]
        self._values_ = values
        names = []
        for u in range(codec.n_units):
            names.append(f"unit{u}__depth")
            for fname in choices:
                names.extend([f"unit{u}__{fname}__mean", f"unit{u}__{fname}__std"])
        return names

    def _encode(self, scan):
        counts = scan.counts().astype(np.float64)
        depth = counts.sum(axis=2)
        safe = np.where(depth > 0, depth, 1.0)[:, :, None]
        mean = counts @ self._values_ / safe
        var = np.clip(counts @ self._values_**2 / safe - mean**2, 0.0, None)
        n_fields = self._values_.shape[1]
        out = np.empty((scan.n, scan.codec.n_units, 1 + 2 * n_fields))
        out[:, :, 0] = depth
        out[:, :, 1::2] = mean
        out[:, :, 2::2] = np.sqrt(var)
        return out.reshape(scan.n, -1)


_FIRST, _REST, _DENSE = "first", "rest", "dense_layer"
_POSITIONS = {"first": _FIRST, "rest": _REST, "other": _REST}


class LookupTableEncoder(_ArchEncoder):
    """Per unit, the sum of the profiled latencies of its blocks (the LUT baseline).

    Columns ``unit0__lut_ms``, ... (one per unit; their sum is the plain
    lookup-table estimate) and the global choices. A linear regressor on top
    learns a weight per unit plus an intercept: the paper's bias-corrected
    lookup table.

    A block of a unit/position/choice space (ResNet, MobileNetV3, OFA
    MobileNetV3) is looked up by ``(unit, position, kernel_size,
    expand_ratio, ...)`` (every choice field of the space must be a table
    column), position ``"first"`` for block 0 and ``"rest"`` (or ``"other"``)
    for later blocks. In a DenseNet table (position ``"dense_layer"``) layer
    ``j`` of unit ``u`` has ``in_channels = c_u + 32 j``, ``c_0 = 64`` and each
    transition halving the channels; its latency is interpolated linearly in
    ``in_channels`` between the profiled points of ``(unit, kernel_size)``.
    Transition layers are not counted. Duplicate table entries are averaged.

    Parameters
    ----------
    table : pandas.DataFrame or path-like
        Per-block latencies in the format of ``shared/datasets/h200/*_lut.csv``
        (columns ``unit``, ``position``, the choice fields, ``in_channels``
        for DenseNet, ``latency_ms``; rows of other spaces, per the optional
        ``space`` column, are ignored). Kept as given; read in ``fit``.
    space : str, SearchSpace or None, default=None
        The search space; ``None`` infers it in ``fit`` from the data.
    missing : {"raise", "nan"}, default="raise"
        A block without a table entry (or with ``in_channels`` outside the
        profiled grid) raises ``KeyError`` naming the block, or makes its
        unit's column NaN.
    dtype : numpy floating dtype, default=np.float32
        Output type.

    Attributes
    ----------
    space_ : SearchSpace
    lookup_ : dict
        ``(unit, position, *choices) -> latency_ms`` (DenseNet:
        ``(unit, "dense_layer", kernel_size, in_channels)``), parsed from
        ``table``; the fitted encoder needs no file.
    feature_names_out_ : ndarray of str
    n_features_out_ : int

    Examples
    --------
    >>> import pandas as pd
    >>> from esm_sklearn import LookupTableEncoder
    >>> table = pd.DataFrame({"unit": 0, "position": ["first", "rest"], "kernel_size": 3,
    ...                       "expand_ratio": 0.5, "latency_ms": [1.0, 0.5]})
    >>> arch = {"space": "resnet", "depth": [3, 1, 1, 1], "kernel_size": [[3, 3, 3], [3], [3], [3]],
    ...         "expand_ratio": [[0.5, 0.5, 0.5], [0.5], [0.5], [0.5]]}
    >>> enc = LookupTableEncoder(table, missing="nan").fit([arch])
    >>> enc.transform([arch])[0].tolist()
    [2.0, nan, nan, nan]
    """

    def __init__(self, table, space=None, missing="raise", dtype=np.float32):
        self.table = table
        self.space = space
        self.missing = missing
        self.dtype = dtype

    def _read_table(self) -> pd.DataFrame:
        table = self.table
        if isinstance(table, (str, os.PathLike)):
            try:
                return pd.read_csv(table)
            except FileNotFoundError:
                raise ValueError(f"lookup table file {str(table)!r} does not exist") from None
        if isinstance(table, pd.DataFrame):
            return table
        raise ValueError(
            f"table must be a pandas DataFrame or a CSV path, got {type(table).__name__}"
        )

    def _setup(self, codec):
        if self.missing not in ("raise", "nan"):
            raise ValueError(f"missing must be 'raise' or 'nan', got {self.missing!r}")
        space = codec.space
        frame = self._read_table()
        if "space" in frame.columns:
            frame = frame[frame["space"] == space.name]
            if frame.empty:
                raise ValueError(f"lookup table has no rows of space {space.name!r}")
        fields = codec.code_fields
        self._dense_ = (
            "position" in frame.columns and (frame["position"] == _DENSE).any()
        )
        if self._dense_:
            if list(space.block_choices) or len(space.unit_choices) != 1:
                raise ValueError(
                    f"{space.name}: a dense-layer table needs a space with one per-unit "
                    f"choice and no block choice, got fields {space.fields}"
                )
            frame = frame[frame["position"] == _DENSE]
            key_columns = ["unit", *fields, "in_channels"]
        else:
            key_columns = ["unit", "position", *fields]
        missing_columns = [c for c in [*key_columns, "latency_ms"] if c not in frame.columns]
        if missing_columns:
            raise ValueError(
                f"lookup table lacks column(s) {missing_columns} needed for space "
                f"{space.name!r} (has {list(frame.columns)})"
            )
        options = {**space.block_choices, **space.unit_choices}
        entries: dict[tuple, list[float]] = {}
        for row in frame[[*key_columns, "latency_ms"]].itertuples(index=False):
            key = self._table_key(codec, row, fields, options)
            latency = row[-1]
            if key is None or not isinstance(latency, Real) or math.isnan(latency):
                continue
            entries.setdefault(key, []).append(float(latency))
        self.lookup_ = {key: float(np.mean(v)) for key, v in entries.items()}
        if self._dense_:
            self._grids_ = {}
            for (unit, _, *choice, channels), latency in sorted(self.lookup_.items()):
                xs, ys = self._grids_.setdefault((unit, tuple(choice)), ([], []))
                xs.append(channels)
                ys.append(latency)
            self._grids_ = {
                k: (np.array(xs, dtype=np.float64), np.array(ys)) for k, (xs, ys) in self._grids_.items()
            }
        else:
            # (unit, 0 = first / 1 = rest, code) -> latency; NaN where missing.
            latency = np.full((codec.n_units, 2, codec.n_codes), np.nan)
            for unit in range(codec.n_units):
                for p, position in enumerate((_FIRST, _REST)):
                    for c, code in enumerate(codec.codes):
                        latency[unit, p, c] = self.lookup_.get((unit, position, *code), np.nan)
            self._latency_ = latency
        return [f"unit{u}__lut_ms" for u in range(codec.n_units)]

    def _table_key(self, codec, row, fields, options):
        unit = row[0]
        if not isinstance(unit, Real) or not float(unit).is_integer():
            raise ValueError(f"lookup table: unit {unit!r} is not an integer")
        unit = int(unit)
        if not 0 <= unit < codec.n_units:
            return None
        if self._dense_:
            position, values, channels = _DENSE, row[1:-2], row[-2]
        else:
            position, values = _POSITIONS.get(row[1]), row[2:-1]
            if position is None:
                return None
        canon = []
        for fname, value in zip(fields, values, strict=True):
            match = [c for c in options[fname] if _same_choice(value, c)]
            if not match:
                return None  # a choice outside the space: never looked up
            canon.append(match[0])
        if self._dense_:
            return (unit, position, *canon, float(channels))
        return (unit, position, *canon)

    def _encode(self, scan):
        codec = scan.codec
        unit, slot, code = scan.unit, scan.slot, scan.code
        if self._dense_:
            # Geometry of the dense macro-architecture: the stem's channels, each
            # layer adds `growth`, each transition halves them.
            macro = codec.space.macro or get_macro("densenet")
            channels = np.empty((scan.n, codec.n_units), dtype=np.int64)
            channels[:, 0] = macro.stem_width
            for u in range(1, codec.n_units):
                channels[:, u] = (channels[:, u - 1] + macro.growth * scan.depth[:, u - 1]) // 2
            in_channels = (channels.ravel()[scan.group] + macro.growth * slot).astype(float)
            latency = np.full(in_channels.shape, np.nan)
            key = unit * codec.n_codes + code
            for k in np.unique(key):
                grid = self._grids_.get((int(k) // codec.n_codes, codec.codes[k % codec.n_codes]))
                if grid is None:
                    continue
                mask = key == k
                latency[mask] = np.interp(in_channels[mask], *grid, left=np.nan, right=np.nan)
        else:
            in_channels = None
            latency = self._latency_[unit, (slot > 0).astype(np.intp), code]
        if self.missing == "raise":
            bad = np.flatnonzero(np.isnan(latency))
            if bad.size:
                self._raise_missing(scan, int(bad[0]), in_channels)
        return np.bincount(
            scan.group, weights=latency, minlength=scan.n * codec.n_units
        ).reshape(scan.n, codec.n_units)

    def _raise_missing(self, scan, block: int, in_channels) -> None:
        codec = scan.codec
        unit, slot = int(scan.unit[block]), int(scan.slot[block])
        choices = ", ".join(
            f"{f}={_format_value(v)}"
            for f, v in zip(codec.code_fields, codec.codes[int(scan.code[block])], strict=True)
        )
        where = f"architecture {int(scan.row[block])}, unit {unit}, block {slot}"
        if in_channels is None:
            position = _FIRST if slot == 0 else _REST
            raise KeyError(
                f"{codec.name}: no lookup-table entry for {where} (position {position!r}): {choices}"
            )
        grid = self._grids_.get((unit, codec.codes[int(scan.code[block])]))
        known = f"profiled in_channels {grid[0][0]:g}..{grid[0][-1]:g}" if grid else "no entry"
        raise KeyError(
            f"{codec.name}: no lookup-table entry for {where} (dense layer): {choices}, "
            f"in_channels={in_channels[block]:g} ({known})"
        )
