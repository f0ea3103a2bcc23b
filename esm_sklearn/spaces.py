"""Search spaces: what an architecture may be, validation, sampling and depth bins.

An architecture is a JSON-compatible dict (see ``DESIGN.md``)::

    {"space": "resnet", "depth": [2, 1, 3, 1],
     "kernel_size": [[3, 5], [7], [3, 3, 5], [7]],
     "expand_ratio": [[0.5, 1.0], [0.6667], [1.0, 0.5, 0.5], [0.6667]]}

``depth`` holds one int per unit, a per-block choice a list per unit with one
value per block, a per-unit choice one value per unit, and a global choice
(e.g. ``resolution``) a single value.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.utils import check_random_state

__all__ = [
    "SearchSpace",
    "arch_key",
    "as_arch_list",
    "get_space",
    "infer_space",
    "list_spaces",
    "register_space",
]

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


def _depth_bounds(depth, n_units: int) -> tuple[tuple[int, int], ...]:
    if isinstance(depth, Sequence) and len(depth) == 2 and all(
        isinstance(d, (int, np.integer)) for d in depth
    ):
        bounds = [tuple(int(d) for d in depth)] * n_units
    else:
        bounds = [tuple(int(d) for d in pair) for pair in depth]
    if len(bounds) != n_units:
        raise ValueError(f"depth gives {len(bounds)} ranges for {n_units} units")
    for unit, (low, high) in enumerate(bounds):
        if not 0 <= low <= high:
            raise ValueError(f"unit {unit}: depth range ({low}, {high}) needs 0 <= min <= max")
    return tuple(bounds)


@dataclass(eq=False)
class SearchSpace:
    """A space of architectures made of units of repeated blocks.

    Parameters
    ----------
    name : str
        Name written into every architecture's ``"space"`` field.
    n_units : int
        Number of units (stages).
    depth : (int, int) or sequence of (int, int)
        Inclusive range of blocks per unit, shared or one range per unit. A
        minimum of 0 allows empty units.
    block_choices : dict of str to sequence
        Choices taken independently by every block (e.g. ``kernel_size``).
    unit_choices : dict of str to sequence, optional
        Choices taken once per unit and shared by all its blocks.
    global_choices : dict of str to sequence, optional
        Choices taken once per architecture (e.g. input ``resolution``).
    block_combinations : sequence of tuple, optional
        The allowed combinations of block choices, in the order of
        ``block_choices``; by default every combination is allowed.
    builder : callable, optional
        ``builder(space, arch, resolution, num_classes) -> torch.nn.Module``.
    default_resolution : int
        Input resolution used by :meth:`build_model` when none is given.
    description : str
        One line shown by ``esm-sklearn spaces``.

    Examples
    --------
    >>> from esm_sklearn import get_space
    >>> space = get_space("resnet")
    >>> f"{space.size():.3g}"
    '8.38e+26'
    >>> arch = space.sample(1, random_state=0)[0]
    >>> space.validate(json.dumps(arch)) == arch
    True
    """

    name: str
    n_units: int
    depth: Any
    block_choices: Mapping[str, Sequence] = field(default_factory=dict)
    unit_choices: Mapping[str, Sequence] = field(default_factory=dict)
    global_choices: Mapping[str, Sequence] = field(default_factory=dict)
    block_combinations: Sequence[tuple] | None = None
    builder: Callable | None = None
    default_resolution: int = 224
    description: str = ""

    def __post_init__(self):
        if self.n_units < 1:
            raise ValueError(f"space {self.name!r}: n_units must be >= 1, got {self.n_units}")
        self.depth_bounds = _depth_bounds(self.depth, self.n_units)
        self.block_choices = {k: tuple(v) for k, v in self.block_choices.items()}
        self.unit_choices = {k: tuple(v) for k, v in (self.unit_choices or {}).items()}
        self.global_choices = {k: tuple(v) for k, v in (self.global_choices or {}).items()}
        names = ["depth", "space", *self.block_choices, *self.unit_choices, *self.global_choices]
        if len(set(names)) != len(names):
            raise ValueError(f"space {self.name!r}: field names must be distinct, got {names}")
        for kind in (self.block_choices, self.unit_choices, self.global_choices):
            for fname, values in kind.items():
                if not values:
                    raise ValueError(f"space {self.name!r}: field {fname!r} has no choices")
        full = list(itertools.product(*self.block_choices.values()))
        if self.block_combinations is None:
            combos = full
        else:
            combos = [tuple(c) for c in self.block_combinations]
            for combo in combos:
                if len(combo) != len(self.block_choices) or not any(
                    all(_same_choice(a, b) for a, b in zip(combo, ref)) for ref in full
                ):
                    raise ValueError(
                        f"space {self.name!r}: block combination {combo} is not made of "
                        f"{dict(self.block_choices)}"
                    )
        self.block_combinations = tuple(combos)
        # Exact-value lookups make encoding fast; near values fall back to validate().
        self._combo_index = {c: i for i, c in enumerate(self.block_combinations)}
        self._unit_index = {k: {v: i for i, v in enumerate(c)} for k, c in self.unit_choices.items()}
        self._global_index = {
            k: {v: i for i, v in enumerate(c)} for k, c in self.global_choices.items()
        }
        self._n_unit_combos = math.prod(len(c) for c in self.unit_choices.values())

    # ------------------------------------------------------------------ facts
    @property
    def fields(self) -> list[str]:
        """Every field of an architecture dict, in canonical order."""
        return ["depth", *self.block_choices, *self.unit_choices, *self.global_choices]

    @property
    def min_depth(self) -> int:
        """Smallest total depth (sum over units)."""
        return sum(low for low, _ in self.depth_bounds)

    @property
    def max_depth(self) -> int:
        """Largest total depth (sum over units)."""
        return sum(high for _, high in self.depth_bounds)

    @property
    def unit_block_combinations(self) -> tuple[tuple, ...]:
        """Combinations of (block choices..., unit choices...) a block can take."""
        return tuple(
            b + u
            for b in self.block_combinations
            for u in itertools.product(*self.unit_choices.values())
        )

    def size(self) -> int:
        """Exact number of distinct architectures in the space."""
        per_block = len(self.block_combinations)
        total = 1
        for low, high in self.depth_bounds:
            unit = sum(per_block**d for d in range(low, high + 1))
            for values in self.unit_choices.values():
                unit *= len(values)
            total *= unit
        for values in self.global_choices.values():
            total *= len(values)
        return total

    def __repr__(self) -> str:
        return (
            f"SearchSpace(name={self.name!r}, n_units={self.n_units}, "
            f"depth={list(self.depth_bounds)}, block_choices={dict(self.block_choices)}, "
            f"unit_choices={dict(self.unit_choices)}, global_choices={dict(self.global_choices)})"
        )

    def __eq__(self, other) -> bool:
        if not isinstance(other, SearchSpace):
            return NotImplemented
        return (
            self.name == other.name
            and self.depth_bounds == other.depth_bounds
            and self.block_choices == other.block_choices
            and self.unit_choices == other.unit_choices
            and self.global_choices == other.global_choices
            and self.block_combinations == other.block_combinations
        )

    def __hash__(self) -> int:
        return hash((self.name, self.depth_bounds))

    # ------------------------------------------------------------- validation
    def _match(self, value, choices, where: str, fname: str):
        for choice in choices:
            if _same_choice(value, choice):
                return choice
        raise ValueError(
            f"{self.name}: {where}field {fname!r} has value {value!r}, "
            f"allowed values are {list(choices)}"
        )

    def validate(self, arch) -> dict:
        """Return the canonical dict of ``arch`` or raise ``ValueError``.

        Parameters
        ----------
        arch : dict or str
            An architecture dict or its JSON string.

        Returns
        -------
        dict
            ``{"space": name, "depth": [...], <block>, <unit>, <global>}`` with
            every value replaced by the matching choice (e.g. ``0.667`` becomes
            ``0.6667``).

        Raises
        ------
        ValueError
            Naming the unit, block, field and allowed values of the first
            problem found.
        """
        if isinstance(arch, (str, bytes)):
            try:
                arch = json.loads(arch)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{self.name}: architecture is not valid JSON: {exc}") from None
        if not isinstance(arch, Mapping):
            raise ValueError(
                f"{self.name}: an architecture must be a dict or JSON string, got {type(arch).__name__}"
            )
        given_space = arch.get("space", self.name)
        if given_space != self.name:
            raise ValueError(
                f"architecture of space {given_space!r} given to space {self.name!r}"
            )
        unknown = [k for k in arch if k not in ("space", *self.fields)]
        if unknown:
            raise ValueError(
                f"{self.name}: unknown field(s) {unknown}; this space's fields are {self.fields}"
            )
        missing = [k for k in self.fields if k not in arch]
        if missing:
            raise ValueError(f"{self.name}: missing field(s) {missing}")
        depth = arch["depth"]
        if not isinstance(depth, Sequence) or isinstance(depth, str) or len(depth) != self.n_units:
            raise ValueError(
                f"{self.name}: field 'depth' must list {self.n_units} ints (one per unit), got {depth!r}"
            )
        canon: dict[str, Any] = {"space": self.name, "depth": []}
        for unit, (d, (low, high)) in enumerate(zip(depth, self.depth_bounds)):
            if (
                isinstance(d, bool)
                or not isinstance(d, (int, float, np.integer, np.floating))
                or not float(d).is_integer()
                or not low <= d <= high
            ):
                raise ValueError(
                    f"{self.name}: unit {unit}: depth {d!r} outside the allowed range {low}..{high}"
                )
            canon["depth"].append(int(d))
        for fname, choices in self.block_choices.items():
            per_unit = arch[fname]
            if not isinstance(per_unit, Sequence) or isinstance(per_unit, str) or len(per_unit) != self.n_units:
                raise ValueError(
                    f"{self.name}: field {fname!r} must hold {self.n_units} lists (one per unit), "
                    f"got {per_unit!r}"
                )
            canon[fname] = []
            for unit, (values, d) in enumerate(zip(per_unit, canon["depth"])):
                if not isinstance(values, Sequence) or isinstance(values, str) or len(values) != d:
                    raise ValueError(
                        f"{self.name}: unit {unit}: field {fname!r} must list {d} values "
                        f"(the unit's depth), got {values!r}"
                    )
                canon[fname].append(
                    [
                        self._match(v, choices, f"unit {unit}, block {b}: ", fname)
                        for b, v in enumerate(values)
                    ]
                )
        if self.block_choices and len(self.block_combinations) < math.prod(
            len(c) for c in self.block_choices.values()
        ):
            allowed = set(self.block_combinations)
            for unit, d in enumerate(canon["depth"]):
                for b in range(d):
                    combo = tuple(canon[f][unit][b] for f in self.block_choices)
                    if combo not in allowed:
                        raise ValueError(
                            f"{self.name}: unit {unit}, block {b}: combination "
                            f"{dict(zip(self.block_choices, combo))} is not allowed; allowed are "
                            f"{[dict(zip(self.block_choices, c)) for c in self.block_combinations]}"
                        )
        for fname, choices in self.unit_choices.items():
            values = arch[fname]
            if not isinstance(values, Sequence) or isinstance(values, str) or len(values) != self.n_units:
                raise ValueError(
                    f"{self.name}: field {fname!r} must hold {self.n_units} values (one per unit), "
                    f"got {values!r}"
                )
            canon[fname] = [
                self._match(v, choices, f"unit {unit}: ", fname) for unit, v in enumerate(values)
            ]
        for fname, choices in self.global_choices.items():
            canon[fname] = self._match(arch[fname], choices, "", fname)
        return canon

    def validate_many(self, archs, where: Callable[[int], str] | None = None) -> list[dict]:
        """:meth:`validate` every architecture; an error names which one.

        Parameters
        ----------
        archs : sequence of dict or str
            Architectures.
        where : callable, optional
            ``where(i)`` is put before the error message of architecture ``i``
            (default: ``"architecture {i}"``).
        """
        canon = []
        for i, arch in enumerate(archs):
            try:
                canon.append(self.validate(arch))
            except ValueError as exc:
                label = where(i) if where is not None else f"architecture {i}"
                raise ValueError(f"{label}: {exc}") from None
        return canon

    def block_codes(self, arch) -> list[list[int]]:
        """Index into :attr:`unit_block_combinations` of every block, per unit.

        A fast path for encoders: an architecture that uses the exact choice
        values is read directly; anything else goes through :meth:`validate`,
        which either canonicalises it (e.g. ``0.667`` -> ``0.6667``) or raises
        its ``ValueError``.
        """
        if isinstance(arch, (str, bytes)):
            try:
                arch = json.loads(arch)
            except json.JSONDecodeError:
                return self._exact_block_codes(self.validate(arch))
        try:
            return self._exact_block_codes(arch)
        except (KeyError, TypeError, IndexError, ValueError, AttributeError):
            return self._exact_block_codes(self.validate(arch))

    def _exact_block_codes(self, arch) -> list[list[int]]:
        if arch.get("space", self.name) != self.name or len(arch) - ("space" in arch) != len(
            self.fields
        ):
            raise KeyError("space or fields")
        depth = arch["depth"]
        if len(depth) != self.n_units:
            raise ValueError("depth length")
        for d, (low, high) in zip(depth, self.depth_bounds):
            if type(d) is not int or not low <= d <= high:
                raise ValueError("depth value")
        unit_codes = [0] * self.n_units
        for fname, index in self._unit_index.items():
            values = arch[fname]
            if len(values) != self.n_units:
                raise ValueError("unit field length")
            size = len(index)
            unit_codes = [c * size + index[v] for c, v in zip(unit_codes, values)]
        for fname, index in self._global_index.items():
            index[arch[fname]]
        block_fields = [arch[f] for f in self.block_choices]
        if not block_fields:
            return [[c] * d for c, d in zip(unit_codes, depth)]
        n_unit_combos = self._n_unit_combos
        combo_index = self._combo_index
        codes = []
        for unit, d in enumerate(depth):
            columns = [f[unit] for f in block_fields]
            if any(len(c) != d for c in columns):
                raise ValueError("block list length")
            base = unit_codes[unit]
            codes.append([combo_index[c] * n_unit_combos + base for c in zip(*columns)])
        return codes

    # ---------------------------------------------------------------- sampling
    def bin_edges(self, n_bins: int = 5) -> np.ndarray:
        """Edges of ``n_bins`` equal-width bins over the total-depth range.

        Bin ``i`` holds total depths ``edges[i] <= t < edges[i + 1]``; the last
        bin also holds ``edges[-1]``.
        """
        if not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
            raise ValueError(f"n_bins must be a positive int, got {n_bins!r}")
        n_values = self.max_depth - self.min_depth + 1
        if n_bins > n_values:
            raise ValueError(
                f"{self.name}: n_bins={n_bins} exceeds the {n_values} possible total depths "
                f"({self.min_depth}..{self.max_depth})"
            )
        return np.linspace(self.min_depth, self.max_depth, n_bins + 1)

    def total_depth(self, archs) -> np.ndarray:
        """Total number of blocks of each architecture."""
        out = []
        for arch in as_arch_list(archs):
            if isinstance(arch, (str, bytes)):
                arch = json.loads(arch)
            out.append(sum(arch["depth"]))
        return np.asarray(out, dtype=int)

    def bin_index(self, archs, n_bins: int = 5) -> np.ndarray:
        """Depth bin (0..n_bins-1) of each architecture; see :meth:`bin_edges`."""
        edges = self.bin_edges(n_bins)
        totals = self.total_depth(archs)
        bad = (totals < self.min_depth) | (totals > self.max_depth)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"{self.name}: architecture {i} has total depth {totals[i]} outside "
                f"{self.min_depth}..{self.max_depth}"
            )
        return np.clip(np.searchsorted(edges, totals, side="right") - 1, 0, n_bins - 1)

    def _depth_counts(self) -> list[np.ndarray]:
        """counts[u][t]: number of depth vectors of units u.. summing to t."""
        counts = [np.zeros(self.max_depth + 1, dtype=float) for _ in range(self.n_units + 1)]
        counts[self.n_units][0] = 1.0
        for unit in range(self.n_units - 1, -1, -1):
            low, high = self.depth_bounds[unit]
            for d in range(low, high + 1):
                counts[unit][d:] += counts[unit + 1][: self.max_depth + 1 - d]
        return counts

    def _depths_with_total(self, total: int, rng, counts) -> list[int]:
        """A depth vector drawn uniformly among those summing to ``total``."""
        depths = []
        remaining = total
        for unit, (low, high) in enumerate(self.depth_bounds):
            options = np.arange(low, min(high, remaining) + 1)
            weights = counts[unit + 1][remaining - options]
            d = int(rng.choice(options, p=weights / weights.sum()))
            depths.append(d)
            remaining -= d
        return depths

    def _fill_choices(self, depths: list[int], rng) -> dict:
        arch: dict[str, Any] = {"space": self.name, "depth": list(depths)}
        combos = self.block_combinations
        picks = [rng.randint(len(combos), size=d) for d in depths]
        for j, fname in enumerate(self.block_choices):
            arch[fname] = [[combos[i][j] for i in unit] for unit in picks]
        for fname, choices in self.unit_choices.items():
            arch[fname] = [choices[i] for i in rng.randint(len(choices), size=self.n_units)]
        for fname, choices in self.global_choices.items():
            arch[fname] = choices[rng.randint(len(choices))]
        return arch

    def sample(
        self,
        n: int,
        strategy: str = "random",
        n_bins: int = 5,
        random_state=None,
        unique: bool = False,
        exclude: Iterable | None = None,
    ) -> list[dict]:
        """Draw ``n`` architectures.

        Parameters
        ----------
        n : int
            Number of architectures.
        strategy : {"random", "balanced"}
            ``"random"``: every depth and choice uniform, so the total depth
            piles up in the middle. ``"balanced"``: the total-depth range is cut
            into ``n_bins`` equal-width bins and each bin gets ``n // n_bins``
            architectures (the remainder goes to the first bins); inside a bin a
            total depth is drawn uniformly, then a depth vector uniformly among
            those with that total; block choices stay uniform.
        n_bins : int
            Number of depth bins for ``"balanced"``.
        random_state : int, RandomState or None
            Seed; the same seed gives the same architectures.
        unique : bool
            Draw distinct architectures (raises if the space runs short).
        exclude : iterable of arch, optional
            Architectures never to return (implies ``unique``), e.g. those
            already measured.

        Returns
        -------
        list of dict
            Canonical architecture dicts.
        """
        if not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        if strategy not in ("random", "balanced"):
            raise ValueError(f"strategy must be 'random' or 'balanced', got {strategy!r}")
        rng = check_random_state(random_state)
        seen = {arch_key(a) for a in as_arch_list(exclude)} if exclude is not None else None
        if seen is not None:
            unique = True
        seen = seen if seen is not None else set()
        if strategy == "random":
            quotas = [(None, n)]
        else:
            edges = self.bin_edges(n_bins)
            base, extra = divmod(n, n_bins)
            quotas = []
            for b in range(n_bins):
                low = math.ceil(edges[b])
                high = self.max_depth if b == n_bins - 1 else math.ceil(edges[b + 1]) - 1
                quotas.append((np.arange(low, high + 1), base + (b < extra)))
        counts = self._depth_counts()
        out: list[dict] = []
        for totals, quota in quotas:
            if totals is not None:
                totals = totals[counts[0][totals] > 0]
            drawn, tries = 0, 0
            while drawn < quota:
                tries += 1
                if unique and tries > 50 * quota + 1000:
                    raise ValueError(
                        f"{self.name}: could not draw {quota} distinct new architectures "
                        f"(strategy={strategy!r}); the space or bin is nearly exhausted"
                    )
                if totals is None:
                    depths = [int(rng.randint(low, high + 1)) for low, high in self.depth_bounds]
                else:
                    depths = self._depths_with_total(int(rng.choice(totals)), rng, counts)
                arch = self._fill_choices(depths, rng)
                if unique:
                    key = arch_key(arch)
                    if key in seen:
                        continue
                    seen.add(key)
                out.append(arch)
                drawn += 1
        if strategy == "balanced":
            # Interleave bins so any prefix of the list is balanced too.
            order = np.argsort(
                np.concatenate([np.arange(q) for _, q in quotas]), kind="stable"
            )
            out = [out[i] for i in order]
        return out

    # ---------------------------------------------------------------- models
    def build_model(self, arch, resolution: int | None = None, num_classes: int = 1000):
        """Build ``arch`` as a ``torch.nn.Module`` (validated first).

        Parameters
        ----------
        arch : dict or str
            Architecture of this space.
        resolution : int, optional
            Input resolution (default: the arch's ``resolution`` choice, else
            ``default_resolution``).
        num_classes : int
            Output classes of the head.
        """
        canon = self.validate(arch)
        if self.builder is None:
            raise ValueError(f"space {self.name!r} has no model builder")
        if resolution is None:
            resolution = canon.get("resolution", self.default_resolution)
        return self.builder(self, canon, resolution=resolution, num_classes=num_classes)

    def input_resolution(self, arch, resolution: int | None = None) -> int:
        """Resolution an input to ``arch`` should have."""
        if resolution is not None:
            return int(resolution)
        if isinstance(arch, (str, bytes)):
            arch = json.loads(arch)
        return int(arch.get("resolution", self.default_resolution))


def arch_key(arch) -> str:
    """A stable string key for an architecture (sorted-key compact JSON)."""
    if isinstance(arch, (str, bytes)):
        arch = json.loads(arch)
    return json.dumps(arch, sort_keys=True, separators=(",", ":"))


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


# ----------------------------------------------------------------- registry
_REGISTRY: dict[str, Callable[[], SearchSpace]] = {}


def register_space(name: str, factory: Callable[[], SearchSpace]) -> None:
    """Register a user-defined space so ``get_space(name)`` (and the data-driven
    inference of encoders) can find it."""
    _REGISTRY[name] = factory


def list_spaces() -> list[str]:
    """Names of the registered spaces."""
    return sorted(_REGISTRY)


def get_space(name) -> SearchSpace:
    """Return a built-in or registered space by name (a ``SearchSpace`` passes through).

    Raises
    ------
    ValueError
        For an unknown name, listing the known ones.
    """
    if isinstance(name, SearchSpace):
        return name
    if name not in _REGISTRY:
        raise ValueError(f"unknown search space {name!r}; known spaces: {list_spaces()}")
    return _REGISTRY[name]()


def infer_space(archs, space=None) -> SearchSpace:
    """The space named by ``space``, else the one named by the architectures.

    Parameters
    ----------
    archs : sequence of dict or str
        Architectures (dicts or JSON strings).
    space : str, SearchSpace or None
        When given, every architecture's ``"space"`` field (where present)
        must name it.

    Raises
    ------
    ValueError
        For bad JSON, a missing ``"space"`` field (when ``space`` is None),
        architectures of several spaces, or an architecture of another space
        than ``space``; the message names the architecture's index.
    """
    given = get_space(space) if space is not None else None
    names = set()
    for i, arch in enumerate(archs):
        if isinstance(arch, (str, bytes)):
            try:
                arch = json.loads(arch)
            except json.JSONDecodeError as exc:
                raise ValueError(f"architecture {i} is not valid JSON: {exc}") from None
        name = arch.get("space") if isinstance(arch, Mapping) else None
        if name is None:
            if given is None:
                raise ValueError(
                    f"architecture {i} has no 'space' field; pass space=<name> to name the "
                    "search space"
                )
            continue
        if given is not None and name != given.name:
            raise ValueError(f"architecture {i} is of space {name!r}, not {given.name!r}")
        names.add(name)
        if len(names) > 1:
            raise ValueError(
                f"architectures of several spaces {sorted(map(str, names))}; pass "
                "space=<name> or use one space at a time"
            )
    if given is not None:
        return given
    if not names:
        raise ValueError("cannot infer the search space from no architectures; pass space=<name>")
    return get_space(names.pop())


class _BuiltinBuilder:
    """Picklable pointer to ``esm_sklearn.models.build_<name>`` (imports torch lazily)."""

    def __init__(self, name: str):
        self.name = name

    def __call__(self, space, arch, resolution, num_classes):
        from . import models

        builder = getattr(models, f"build_{self.name}")
        return builder(arch, resolution=resolution, num_classes=num_classes)

    def __eq__(self, other):
        return isinstance(other, _BuiltinBuilder) and other.name == self.name

    def __hash__(self):
        return hash(self.name)


def _resnet() -> SearchSpace:
    return SearchSpace(
        "resnet", 4, (1, 7),
        block_choices={"kernel_size": (3, 5, 7), "expand_ratio": (0.5, 0.6667, 1.0)},
        builder=_BuiltinBuilder("resnet"),
        description="ESM Table I: bottleneck ResNet, 4 units of 1-7 blocks, widths 256..2048",
    )


def _mobilenetv3() -> SearchSpace:
    return SearchSpace(
        "mobilenetv3", 4, (1, 7),
        block_choices={"kernel_size": (3, 5, 7), "expand_ratio": (0.5, 0.6667, 1.0)},
        builder=_BuiltinBuilder("mobilenetv3"),
        description="ESM Table I: MobileNetV3 blocks, 4 units of 1-7 blocks, widths 16..128",
    )


def _densenet() -> SearchSpace:
    return SearchSpace(
        "densenet", 5, (1, 20),
        unit_choices={"kernel_size": (1, 3, 5, 7, 9)},
        builder=_BuiltinBuilder("densenet"),
        description="ESM Table I: DenseNet, 5 units of 1-20 layers, one kernel size per unit",
    )


def _ofa_mobilenetv3() -> SearchSpace:
    return SearchSpace(
        "ofa_mobilenetv3", 5, (2, 4),
        block_choices={"kernel_size": (3, 5, 7), "expand_ratio": (3, 4, 6)},
        global_choices={"resolution": tuple(range(128, 225, 4))},
        builder=_BuiltinBuilder("ofa_mobilenetv3"),
        description="Once-for-All MobileNetV3 (HELP tables): 5 units of 2-4 blocks, resolution 128..224",
    )


def _fbnet() -> SearchSpace:
    return SearchSpace(
        "fbnet", 7, [(0, 1), (0, 4), (0, 4), (0, 4), (0, 4), (0, 4), (0, 1)],
        block_choices={"kernel_size": (3, 5), "expand_ratio": (1, 3, 6), "groups": (1, 2)},
        block_combinations=[
            (3, 1, 1), (3, 1, 2), (3, 3, 1), (3, 6, 1),
            (5, 1, 1), (5, 1, 2), (5, 3, 1), (5, 6, 1),
        ],
        description="FBNet (HELP tables): 7 stages of at most 1,4,4,4,4,4,1 layers; skip = no block",
    )



for _factory in (_resnet, _mobilenetv3, _densenet, _ofa_mobilenetv3, _fbnet):
    register_space(_factory.__name__.lstrip("_"), _factory)
