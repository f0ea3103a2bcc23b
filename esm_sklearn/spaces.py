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

import functools
import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import counting, operators, sampling, vectors
from .archs import (  # noqa: F401  (re-exported)
    _format_value,
    _same_choice,
    arch_key,
    as_arch_list,
    key_set,
    load_arch,
    validate_arch,
)
from .macro import BUILTIN_SPACES, MACROS, BlockSpec, Macro, get_macro, resolve_callable

__all__ = [
    "SearchSpace",
    "arch_key",
    "as_arch_list",
    "get_space",
    "infer_space",
    "list_spaces",
    "load_arch",
    "register_space",
]

def _check_num_classes(num_classes) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    return int(num_classes)


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
    builder : callable or str, optional
        ``builder(space, arch, resolution=..., num_classes=...) ->
        torch.nn.Module``, called by :meth:`build_model` with a validated,
        canonical ``arch``. A string ``"package.module:function"`` names it
        and is imported only when a model is built (how the built-in spaces
        name ``"esm_sklearn.models:build_from_macro"`` without importing
        torch); it also keeps the space picklable.
    default_resolution : int
        Input resolution when neither the caller nor the architecture gives
        one (see :meth:`input_resolution`).
    description : str
        One line shown by ``esm-sklearn spaces``.
    macro : Macro, optional
        The fixed part of the networks (:class:`esm_sklearn.macro.Macro`):
        needed by :meth:`block_specs`, :meth:`arch_block_specs` and
        ``esm_sklearn.models.build_from_macro``.

    Examples
    --------
    >>> from esm_sklearn import get_space
    >>> space = get_space("resnet")
    >>> f"{space.size():.3g}"
    '8.38e+26'
    >>> import json
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
    builder: Callable | str | None = None
    default_resolution: int = 224
    description: str = ""
    macro: Macro | None = None

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
        self._combo_index = {c: i for i, c in enumerate(self.block_combinations)}
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
        return validate_arch(self, arch)

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

        ``arch`` is validated (and canonicalised) first.
        """
        canon = self.validate(arch)
        units = list(itertools.product(*self.unit_choices.values()))
        codes = []
        for unit, d in enumerate(canon["depth"]):
            u = units.index(tuple(canon[f][unit] for f in self.unit_choices))
            blocks = zip(*(canon[f][unit] for f in self.block_choices)) if self.block_choices else [()] * d
            codes.append([self._combo_index[tuple(b)] * self._n_unit_combos + u for b in blocks])
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

    def bin_ranges(self, n_bins: int = 5) -> list[tuple[int, int]]:
        """Inclusive total-depth range of each bin, as :meth:`bin_index` assigns them.

        Examples
        --------
        >>> get_space("resnet").bin_ranges(5)
        [(4, 8), (9, 13), (14, 18), (19, 23), (24, 28)]
        """
        edges = self.bin_edges(n_bins)
        ranges = []
        for b in range(n_bins):
            low = math.ceil(edges[b])
            high = self.max_depth if b == n_bins - 1 else math.ceil(edges[b + 1]) - 1
            ranges.append((low, high))
        return ranges

    bin_quotas = staticmethod(sampling.bin_quotas)
    interleave = staticmethod(sampling.interleave)

    def total_depth(self, archs) -> np.ndarray:
        """Total number of blocks of each architecture."""
        return np.asarray(
            [sum(load_arch(a, self.name)["depth"]) for a in as_arch_list(archs)], dtype=int
        )

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

    def sample(
        self,
        n: int,
        strategy: str = "random",
        n_bins: int = 5,
        random_state=None,
        unique: bool = False,
        exclude: Iterable | None = None,
        return_labels: bool = False,
    ):
        """Draw ``n`` architectures.

        Parameters
        ----------
        n : int
            Number of architectures.
        strategy : {"random", "balanced", "mixed"}
            ``"random"``: every depth and choice uniform, so the total depth
            piles up in the middle. ``"balanced"``: the total-depth range is cut
            into ``n_bins`` equal-width bins and each bin gets its
            :meth:`bin_quotas` share (``n // n_bins``, the remainder to the
            first bins), interleaved (:meth:`interleave`) so that any prefix is
            balanced too; inside a bin a total depth is drawn uniformly, then a
            depth vector uniformly among those with that total; block choices
            stay uniform. ``"mixed"``: ``n - n // 2`` balanced and ``n // 2``
            random architectures, interleaved (balanced first).
        n_bins : int
            Number of depth bins for ``"balanced"`` and ``"mixed"``.
        random_state : int, RandomState or None
            Seed; the same seed gives the same architectures (not the same
            as the first release's per-architecture sampler gave: drawing is
            vectorised now, see :mod:`esm_sklearn.sampling`; the distribution
            is unchanged).
        unique : bool
            Draw distinct architectures (raises if the space runs short).
        exclude : iterable of arch, optional
            Architectures never to return (implies ``unique``), e.g. those
            already measured.
        return_labels : bool
            Also return the strategy (``"random"`` or ``"balanced"``) each
            architecture was drawn with.

        Returns
        -------
        archs : list of dict
            Canonical architecture dicts.
        labels : list of str
            Only with ``return_labels=True``.

        Examples
        --------
        >>> archs, labels = get_space("resnet").sample(5, "mixed", random_state=0,
        ...                                            return_labels=True)
        >>> labels
        ['balanced', 'random', 'balanced', 'random', 'balanced']
        """
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        if strategy not in sampling.STRATEGIES:
            raise ValueError(f"strategy must be one of {list(sampling.STRATEGIES)}, got {strategy!r}")
        if strategy != "random":
            self.bin_edges(n_bins)  # checks n_bins
        seen = None
        if unique or exclude is not None:
            seen = key_set(exclude)
        return sampling.sample(self, int(n), strategy, n_bins, random_state, seen, return_labels)

    def sample_in_bin(
        self, bin: int, k: int, n_bins: int = 5, random_state=None, exclude=None
    ) -> list[dict]:
        """Draw up to ``k`` distinct architectures whose depth bin is ``bin``.

        Drawn as by ``sample(strategy="balanced")`` inside that bin only (total
        depth uniform over the bin, then a depth vector uniform among those
        with that total, block choices uniform), so nothing is drawn for other
        bins and discarded.

        Parameters
        ----------
        bin : int
            Bin index in ``0 .. n_bins - 1`` (see :meth:`bin_index`).
        k : int
            Number of architectures wanted.
        n_bins : int
            Number of equal-width total-depth bins.
        random_state : int, RandomState or None
        exclude : set of str or iterable of arch, optional
            Architectures (or their :func:`arch_key`) never to return, e.g.
            those already measured.

        Returns
        -------
        list of dict
            Canonical architecture dicts, fewer than ``k`` only when the bin is
            (nearly) exhausted.

        Examples
        --------
        >>> space = get_space("resnet")
        >>> space.bin_index(space.sample_in_bin(4, 3, random_state=0)).tolist()
        [4, 4, 4]
        """
        self.bin_edges(n_bins)  # checks n_bins
        if isinstance(bin, bool) or not isinstance(bin, (int, np.integer)) or not 0 <= bin < n_bins:
            raise ValueError(f"bin must be an int in 0..{n_bins - 1}, got {bin!r}")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
            raise ValueError(f"k must be a non-negative int, got {k!r}")
        seen = key_set(exclude)
        return sampling.sample_in_bin(self, int(bin), int(k), n_bins, random_state, seen)

    # ---------------------------------------------------------------- models
    def input_resolution(self, arch=None, resolution: int | None = None) -> int:
        """Resolution of an input to ``arch``: the single rule of the package.

        ``resolution`` when given, else the architecture's ``resolution``
        choice (e.g. ``ofa_mobilenetv3``), else :attr:`default_resolution`.

        Raises
        ------
        ValueError
            If the result is not a positive int.

        Examples
        --------
        >>> get_space("resnet").input_resolution({"depth": [1, 1, 1, 1]})
        224
        """
        if resolution is None:
            arch = {} if arch is None else load_arch(arch, self.name)
            resolution = arch.get("resolution", self.default_resolution)
        if (
            isinstance(resolution, bool)
            or not isinstance(resolution, (int, float, np.integer, np.floating))
            or not float(resolution).is_integer()
            or resolution < 1
        ):
            raise ValueError(f"{self.name}: resolution must be a positive int, got {resolution!r}")
        return int(resolution)

    def build_model(self, arch, resolution: int | None = None, num_classes: int = 1000):
        """Build ``arch`` as a ``torch.nn.Module`` (validated first).

        Parameters
        ----------
        arch : dict or str
            Architecture of this space.
        resolution : int, optional
            Input resolution (see :meth:`input_resolution`).
        num_classes : int
            Output classes of the head.
        """
        canon = self.validate(arch)
        if self.builder is None:
            raise ValueError(f"space {self.name!r} has no model builder")
        builder = resolve_callable(self.builder)
        return builder(
            self, canon, resolution=self.input_resolution(canon, resolution),
            num_classes=_check_num_classes(num_classes),
        )

    def count_params(self, archs, num_classes: int = 1000) -> np.ndarray:
        """Parameters of each architecture's model, without building it.

        Equal to ``sum(p.numel() for p in space.build_model(arch,
        num_classes=num_classes).parameters())``; computed from the
        macro-architecture with a per-block cache (see
        :mod:`esm_sklearn.counting`).

        Examples
        --------
        >>> arch = {"space": "resnet", "depth": [1, 1, 1, 1], "kernel_size": [[3]] * 4,
        ...         "expand_ratio": [[1.0]] * 4}
        >>> get_space("resnet").count_params([arch]).tolist()
        [10084168]
        """
        return counting.count(self, archs, None, _check_num_classes(num_classes))[:, 0]

    def count_flops(self, archs, resolution: int | None = None, num_classes: int = 1000) -> np.ndarray:
        """Multiply-accumulates of the conv and linear layers for one image, per architecture.

        The FLOP count of OFA's ``count_net_flops`` (MACs; batch norm,
        activations, pooling, additions and biases not counted) of the model
        :meth:`build_model` builds, at :meth:`input_resolution`; see
        :mod:`esm_sklearn.counting`.

        Examples
        --------
        >>> arch = {"space": "resnet", "depth": [1, 1, 1, 1], "kernel_size": [[3]] * 4,
        ...         "expand_ratio": [[1.0]] * 4}
        >>> space = get_space("resnet")
        >>> space.count_flops([arch]).tolist(), space.count_flops([arch], resolution=160).tolist()
        ([1708433408], [872652800])
        """
        return counting.count(self, archs, resolution, _check_num_classes(num_classes))[:, 1]

    def _macro(self) -> Macro:
        return self.macro if self.macro is not None else get_macro(self.name)

    def block_specs(self, resolution: int | None = None, densenet_channel_step: int = 32) -> list[BlockSpec]:
        """Every distinct block of the space, for lookup-table profiling.

        Parameters
        ----------
        resolution : int, optional
            Input resolution of the whole model (default:
            :attr:`default_resolution`).
        densenet_channel_step : int
            Spacing of the DenseNet input-channel grid.

        Returns
        -------
        list of BlockSpec
            In the row order of ``shared/datasets/h200/*_b1_lut.csv``; see
            :meth:`esm_sklearn.macro.Macro.all_specs`.

        Examples
        --------
        >>> specs = get_space("resnet").block_specs()
        >>> len(specs), specs[0].in_channels, specs[0].in_hw, specs[0].stride
        (72, 64, 56, 1)
        """
        macro = self._macro()
        choices = self.unit_choices["kernel_size"] if macro.block == "dense" else self.block_combinations
        return macro.all_specs(
            self.depth_bounds, choices, self.input_resolution(None, resolution), densenet_channel_step
        )

    def arch_block_specs(self, arch, resolution: int | None = None) -> list[BlockSpec]:
        """The spec of every block of ``arch`` (and DenseNet transition), in execution order.

        Summing a lookup table over these specs gives the LUT latency estimate.

        Parameters
        ----------
        arch : dict or str
            Architecture of this space (validated).
        resolution : int, optional
            Input resolution (see :meth:`input_resolution`).

        Examples
        --------
        >>> arch = {"space": "densenet", "depth": [2, 1, 1, 1, 1], "kernel_size": [3, 5, 1, 7, 9]}
        >>> specs = get_space("densenet").arch_block_specs(arch)
        >>> [(s.position, s.in_channels, s.out_channels) for s in specs][:3]
        [('dense_layer', 64, 96), ('dense_layer', 96, 128), ('transition', 128, 64)]
        """
        macro = self._macro()
        canon = self.validate(arch)
        return macro.arch_specs(canon, self.input_resolution(canon, resolution))

    # ---------------------------------------------- NAS loops (operators.py, vectors.py)
    def mutate(self, arch, random_state=None) -> dict:
        """A random architecture at distance one; see :func:`esm_sklearn.operators.mutate`."""
        return operators.mutate(self, arch, random_state)

    def crossover(self, a, b, random_state=None) -> dict:
        """Each unit from ``a`` or ``b``; see :func:`esm_sklearn.operators.crossover`."""
        return operators.crossover(self, a, b, random_state)

    def neighbours(self, arch) -> list[dict]:
        """Every architecture at distance one; see :func:`esm_sklearn.operators.neighbours`."""
        return operators.neighbours(self, arch)

    def to_vector(self, archs) -> np.ndarray:
        """Fixed-length int rows, depth first; see :func:`esm_sklearn.vectors.to_vector`."""
        return vectors.to_vector(self, archs)

    def from_vector(self, V) -> list[dict]:
        """Canonical architectures of int rows; see :func:`esm_sklearn.vectors.from_vector`."""
        return vectors.from_vector(self, V)

    @property
    def vector_columns(self) -> list[str]:
        """Column names of :meth:`to_vector`."""
        return vectors.vector_columns(self)

    @property
    def vector_bounds(self) -> np.ndarray:
        """Inclusive ``[low, high]`` of each column of :meth:`to_vector`, shape ``(d, 2)``."""
        return vectors.vector_bounds(self)

    def vector_choices(self) -> list[tuple[str, list[int]]]:
        """``(column, allowed ints)`` pairs: the space for other optimisers."""
        return vectors.vector_choices(self)

    def suggest(self, trial) -> dict:
        """An architecture from an Optuna trial; see :func:`esm_sklearn.vectors.suggest`."""
        return vectors.suggest(self, trial)


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
        arch = load_arch(arch, f"architecture {i}")
        name = arch.get("space")
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


_BUILDER = "esm_sklearn.models:build_from_macro"


def _builtin(name: str) -> SearchSpace:
    return SearchSpace(name, **BUILTIN_SPACES[name], builder=_BUILDER, macro=MACROS[name])


for _name in BUILTIN_SPACES:
    register_space(_name, functools.partial(_builtin, _name))
