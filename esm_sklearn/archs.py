"""Reading architectures: dict-or-JSON input, keys, sequences, choice matching.

The one place the package turns user input into architecture mappings
(:func:`load_arch`, :func:`as_arch_list`) and architectures into keys
(:func:`arch_key`); :mod:`esm_sklearn.spaces` re-exports the public names.
Imports nothing from the package.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["arch_key", "as_arch_list", "key_set", "load_arch", "validate_arch"]

# Two values name the same choice when they differ by less than this (relative):
# 2/3 may be written 0.6667, 0.667 or 0.666666.
_FLOAT_MATCH_RTOL = 1.5e-3


def _same_choice(value: Any, choice: Any) -> bool:
    if isinstance(value, bool) or isinstance(choice, bool):
        return value == choice
    if isinstance(value, (int, float, np.integer, np.floating)) and isinstance(
        choice, (int, float, np.integer, np.floating)
    ):
        return abs(float(value) - float(choice)) <= _FLOAT_MATCH_RTOL * max(1.0, abs(float(choice)))
    return value == choice


def _format_value(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def load_arch(arch, where: str | None = None) -> Mapping:
    """An architecture given as a dict or a JSON string, as a mapping.

    The one reader of dict-or-JSON input in the package: it parses, it does
    not validate (see :meth:`SearchSpace.validate`).

    Parameters
    ----------
    arch : dict or str or bytes
    where : str, optional
        Put before the error message (e.g. the space or row).

    Raises
    ------
    ValueError
        For invalid JSON or anything but a mapping.

    Examples
    --------
    >>> load_arch('{"depth": [1]}')
    {'depth': [1]}
    """
    prefix = f"{where}: " if where else ""
    if isinstance(arch, (str, bytes, bytearray)):
        try:
            arch = json.loads(arch)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{prefix}architecture is not valid JSON: {exc}") from None
    if not isinstance(arch, Mapping):
        raise ValueError(
            f"{prefix}an architecture must be a dict or JSON string, got {type(arch).__name__}"
        )
    return arch


def arch_key(arch) -> str:
    """A stable string key for an architecture (sorted-key compact JSON)."""
    return json.dumps(load_arch(arch), sort_keys=True, separators=(",", ":"))


def key_set(archs) -> set[str]:
    """:func:`arch_key` of each architecture; strings in a set are taken as keys."""
    if archs is None:
        return set()
    if isinstance(archs, (set, frozenset)):
        return {a if isinstance(a, str) else arch_key(a) for a in archs}
    return {arch_key(a) for a in as_arch_list(archs)}


def as_arch_list(archs) -> list:
    """Turn a list, tuple, pandas Series/DataFrame column or array of archs into a list."""
    if archs is None:
        raise ValueError("expected a sequence of architectures, got None")
    if isinstance(archs, (Mapping, str, bytes)):
        raise ValueError(
            "expected a sequence of architectures (list of dicts or JSON strings), "
            f"got a single {type(archs).__name__}"
        )
    if hasattr(archs, "iloc") and getattr(archs, "ndim", 1) == 2:  # DataFrame
        if archs.shape[1] != 1:
            raise ValueError(
                f"a DataFrame of architectures must have one column, got {list(archs.columns)}"
            )
        archs = archs.iloc[:, 0]
    if isinstance(archs, np.ndarray) and archs.ndim == 2:
        if archs.shape[1] != 1:
            raise ValueError(f"an array of architectures must have shape (n,) or (n, 1), got {archs.shape}")
        archs = archs[:, 0]
    return list(archs)


def _match(space, value, choices, where: str, fname: str):
    for choice in choices:
        if _same_choice(value, choice):
            return choice
    raise ValueError(
        f"{space.name}: {where}field {fname!r} has value {value!r}, "
        f"allowed values are {list(choices)}"
    )


def _per_unit(space, arch, fname: str, what: str):
    values = arch[fname]
    if not isinstance(values, Sequence) or isinstance(values, str) or len(values) != space.n_units:
        raise ValueError(
            f"{space.name}: field {fname!r} must hold {space.n_units} {what} (one per unit), "
            f"got {values!r}"
        )
    return values


def validate_arch(space, arch) -> dict:
    """See :meth:`SearchSpace.validate` (reads only the space's facts)."""
    arch = load_arch(arch, space.name)
    given_space = arch.get("space", space.name)
    if given_space != space.name:
        raise ValueError(
            f"architecture of space {given_space!r} given to space {space.name!r}"
        )
    unknown = [k for k in arch if k not in ("space", *space.fields)]
    if unknown:
        raise ValueError(
            f"{space.name}: unknown field(s) {unknown}; this space's fields are {space.fields}"
        )
    missing = [k for k in space.fields if k not in arch]
    if missing:
        raise ValueError(f"{space.name}: missing field(s) {missing}")
    depth = arch["depth"]
    if not isinstance(depth, Sequence) or isinstance(depth, str) or len(depth) != space.n_units:
        raise ValueError(
            f"{space.name}: field 'depth' must list {space.n_units} ints (one per unit), got {depth!r}"
        )
    canon: dict[str, Any] = {"space": space.name, "depth": []}
    for unit, (d, (low, high)) in enumerate(zip(depth, space.depth_bounds)):
        if (
            isinstance(d, bool)
            or not isinstance(d, (int, float, np.integer, np.floating))
            or not float(d).is_integer()
            or not low <= d <= high
        ):
            raise ValueError(
                f"{space.name}: unit {unit}: depth {d!r} outside the allowed range {low}..{high}"
            )
        canon["depth"].append(int(d))
    for fname, choices in space.block_choices.items():
        per_unit = _per_unit(space, arch, fname, "lists")
        canon[fname] = []
        for unit, (values, d) in enumerate(zip(per_unit, canon["depth"])):
            if not isinstance(values, Sequence) or isinstance(values, str) or len(values) != d:
                raise ValueError(
                    f"{space.name}: unit {unit}: field {fname!r} must list {d} values "
                    f"(the unit's depth), got {values!r}"
                )
            canon[fname].append(
                [
                    _match(space, v, choices, f"unit {unit}, block {b}: ", fname)
                    for b, v in enumerate(values)
                ]
            )
    if space.block_choices and len(space.block_combinations) < math.prod(
        len(c) for c in space.block_choices.values()
    ):
        allowed = set(space.block_combinations)
        for unit, d in enumerate(canon["depth"]):
            for b in range(d):
                combo = tuple(canon[f][unit][b] for f in space.block_choices)
                if combo not in allowed:
                    raise ValueError(
                        f"{space.name}: unit {unit}, block {b}: combination "
                        f"{dict(zip(space.block_choices, combo))} is not allowed; allowed are "
                        f"{[dict(zip(space.block_choices, c)) for c in space.block_combinations]}"
                    )
    for fname, choices in space.unit_choices.items():
        values = _per_unit(space, arch, fname, "values")
        canon[fname] = [
            _match(space, v, choices, f"unit {unit}: ", fname) for unit, v in enumerate(values)
        ]
    for fname, choices in space.global_choices.items():
        canon[fname] = _match(space, arch[fname], choices, "", fname)
    return canon
