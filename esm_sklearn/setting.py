"""What a latency predictor was fitted for, and how far a candidate is from its data.

A latency predictor is only valid for the setting its data was measured in:
the search space, the device, the batch size, the input resolution. A fitted
predictor keeps that in a ``setting_`` dict (built by :func:`make_setting`, or
:func:`setting_from_table` for a latency table); :func:`check_setting` warns
with a :class:`SettingMismatchWarning` when a NAS loop asks it about another
setting. Inside its setting, a candidate can still lie far from every training
architecture (e.g. every unit at its largest depth with the largest kernel):
:class:`OODScorer` gives each candidate its distance to the nearest training
architecture in FCC encoding, in units of the typical nearest-neighbour
distance between training architectures, and a flag.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.metrics import pairwise_distances, pairwise_distances_argmin_min
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from .encoders import FCCEncoder
from .spaces import as_arch_list, get_space

__all__ = [
    "OODScorer",
    "SettingMismatchWarning",
    "check_setting",
    "make_setting",
    "record_setting",
    "setting_from_table",
]

SETTING_KEYS = ("space", "device", "batch_size", "resolution", "source")


class SettingMismatchWarning(UserWarning):
    """A predictor is asked about a setting (device, batch size, ...) it was not fitted for."""


def _int_or_none(value, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int or None, got {value!r}")
    return int(value)


def make_setting(
    space,
    archs=None,
    *,
    device=None,
    batch_size: int | None = None,
    resolution: int | None = None,
    source: str | None = None,
    n_bins: int = 5,
) -> dict:
    """The ``setting_`` dict of a predictor fitted on ``archs``.

    Parameters
    ----------
    space : str or SearchSpace
        The search space.
    archs : sequence of arch, optional
        The training architectures: their number and rows per depth bin are
        recorded.
    device : str or dict, optional
        A device description: a string (e.g. ``"NVIDIA H200"``) or the dict of
        ``esm_sklearn.oracle.describe_device`` (its ``name`` and ``type`` are
        kept, and its ``batch_size``/``resolution`` when not given here).
    batch_size, resolution : int, optional
        Batch size and input resolution of the timed inferences.
    source : str, optional
        Where the data came from (a file, a store, ``"oracle"``).
    n_bins : int, default=5
        Number of depth bins for ``rows_per_bin``.

    Returns
    -------
    dict
        JSON-compatible: ``space``, ``device``, ``device_type``,
        ``batch_size``, ``resolution``, ``source``, ``n_rows``, ``n_bins``,
        ``rows_per_bin``; unknown entries are None.

    Examples
    --------
    >>> from esm_sklearn import get_space
    >>> space = get_space("resnet")
    >>> s = make_setting(space, space.sample(10, random_state=0), device="NVIDIA H200",
    ...                  batch_size=32, resolution=224, n_bins=2)
    >>> s["device"], s["batch_size"], s["n_rows"], sum(s["rows_per_bin"])
    ('NVIDIA H200', 32, 10, 10)
    """
    space = get_space(space)
    device_type = None
    if isinstance(device, Mapping):
        desc = device
        device = desc.get("name")
        device_type = desc.get("type")
        batch_size = desc.get("batch_size") if batch_size is None else batch_size
        resolution = desc.get("resolution") if resolution is None else resolution
    elif device is not None and not isinstance(device, str):
        raise ValueError(f"device must be a str, a describe_device dict or None, got {device!r}")
    if source is not None and not isinstance(source, str):
        source = str(source)
    setting = {
        "space": space.name,
        "device": device,
        "device_type": device_type,
        "batch_size": _int_or_none(batch_size, "batch_size"),
        "resolution": _int_or_none(resolution, "resolution"),
        "source": source,
        "n_rows": None,
        "n_bins": None,
        "rows_per_bin": None,
    }
    if archs is not None:
        archs = as_arch_list(archs)
        bins = space.bin_index(archs, n_bins) if archs else np.empty(0, dtype=int)
        setting.update(
            n_rows=len(archs),
            n_bins=int(n_bins),
            rows_per_bin=np.bincount(bins, minlength=n_bins).astype(int).tolist(),
        )
    return setting


def _single(frame, column: str):
    if frame is None or column not in frame:
        return None
    values = frame[column].dropna().unique()
    return values[0].item() if len(values) == 1 and hasattr(values[0], "item") else None


def setting_from_table(table, device=None, n_bins: int = 5) -> dict:
    """:func:`make_setting` for a table of :func:`esm_sklearn.datasets.load_latency_table`.

    ``batch_size`` and ``resolution`` are read from the table's columns of
    those names when they hold one value; ``source`` is the file name;
    ``device`` is given here, else read from a ``device`` column, else from
    the bundled name's first part (``"h200_resnet_b32"`` -> ``"h200"``).

    Examples
    --------
    >>> from esm_sklearn.datasets import load_bundled
    >>> s = setting_from_table(load_bundled("h200_resnet_b32"))
    >>> s["space"], s["device"], s["batch_size"], s["resolution"], s["source"]
    ('resnet', 'h200', 32, 224, 'h200_resnet_b32.csv')
    """
    frame = getattr(table, "frame", None)
    filename = getattr(table, "filename", None)
    source = None if filename is None else str(filename).replace("\\", "/").rsplit("/", 1)[-1]
    if device is None:  # a HELP table names its device column
        device = table.get("device") if isinstance(table, Mapping) else getattr(table, "device", None)
    if device is None:
        device = _single(frame, "device")
    if device is None and source is not None and "_" in source:
        device = source.split("_", 1)[0]
    return make_setting(
        table.space,
        table.data,
        device=device,
        batch_size=_single(frame, "batch_size"),
        resolution=_single(frame, "resolution"),
        source=source,
        n_bins=n_bins,
    )


def record_setting(model, setting: Mapping, archs=None, n_bins: int | None = None):
    """Store ``setting`` as ``model.setting_`` and, given the training ``archs``, an
    :class:`OODScorer` fitted on them as ``model.ood_``; return ``model``.

    For a fitted predictor (a Pipeline included) whose setting its maker knows,
    e.g. after ``make_latency_pipeline(...).fit(table.data, table.target)``.

    Examples
    --------
    >>> from esm_sklearn import make_latency_pipeline
    >>> from esm_sklearn.datasets import load_bundled
    >>> table = load_bundled("h200_resnet_b32")
    >>> model = make_latency_pipeline("fcc", "ridge").fit(table.data, table.target)
    >>> model = record_setting(model, setting_from_table(table), table.data)
    >>> model.setting_["batch_size"], model.ood_.n_rows_
    (32, 130)
    """
    model.setting_ = dict(setting)
    if archs is not None:
        bins = n_bins if n_bins is not None else (setting.get("n_bins") or 5)
        model.ood_ = OODScorer(space=setting.get("space"), n_bins=bins).fit(archs)
    return model


def _device_matches(setting: Mapping, asked) -> bool:
    asked = str(asked).strip().lower()
    name = str(setting.get("device") or "").lower()
    kind = str(setting.get("device_type") or "").lower()
    return asked == kind or (bool(name) and (asked in name or name in asked))


def check_setting(model, **expected) -> list[str]:
    """Warn if ``model`` was fitted for another setting than ``expected``.

    Parameters
    ----------
    model : estimator or dict
        A fitted predictor with a ``setting_`` dict (a Pipeline's last step
        is searched too), or the dict itself.
    **expected
        Any of ``space`` (name or SearchSpace), ``device`` (matches the
        recorded device type, e.g. ``"cpu"``, or a case-insensitive part of
        its name, e.g. ``"h200"``), ``batch_size``, ``resolution``, ``source``.
        An entry the predictor did not record is not checked.

    Returns
    -------
    list of str
        The mismatches (empty when the setting agrees); a
        :class:`SettingMismatchWarning` lists them.

    Examples
    --------
    >>> import warnings
    >>> setting = {"space": "resnet", "device": "NVIDIA H200", "batch_size": 32}
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     check_setting(setting, device="cpu", batch_size=1, space="resnet")
    ["device: fitted for 'NVIDIA H200', asked about 'cpu'", 'batch_size: fitted for 32, asked about 1']
    >>> caught[0].category.__name__
    'SettingMismatchWarning'
    """
    unknown = sorted(set(expected) - set(SETTING_KEYS))
    if unknown:
        raise ValueError(f"check_setting: unknown setting(s) {unknown}; known are {list(SETTING_KEYS)}")
    setting = model if isinstance(model, Mapping) else _find_setting(model)
    if setting is None:
        warnings.warn(
            f"{type(model).__name__} records no setting_; cannot check that it was fitted for "
            f"{expected}",
            SettingMismatchWarning,
            stacklevel=2,
        )
        return ["no setting recorded"]
    problems = []
    for key, asked in expected.items():
        have = setting.get(key)
        if asked is None or have is None:
            continue
        if key == "space":
            asked = getattr(asked, "name", asked)
            same = asked == have
        elif key == "device":
            same = _device_matches(setting, asked)
        else:
            same = asked == have
        if not same:
            problems.append(f"{key}: fitted for {have!r}, asked about {asked!r}")
    if problems:
        warnings.warn(
            "the predictor was fitted for another setting: " + "; ".join(problems),
            SettingMismatchWarning,
            stacklevel=2,
        )
    return problems


def _find_setting(model):
    setting = getattr(model, "setting_", None)
    if setting is None and hasattr(model, "steps"):
        setting = getattr(model.steps[-1][1], "setting_", None)
    return setting


class OODScorer(BaseEstimator):
    """Out-of-distribution score of architectures against a training set.

    ``ood_score(a)`` is the Euclidean distance in FCC encoding from ``a`` to
    the nearest reference architecture, divided by ``scale_``, the median
    distance from a reference to its nearest other reference; so about 1 is
    typical inside the training distribution. The references are the distinct
    training encodings, at most ``max_reference`` of them drawn at random, stored
    as small ints (a few tens of KB in a pickle). On the ResNet space an
    architecture with every unit at depth 7, kernel 7 and ratio 1 scores about
    3 against 100-8,000 balanced training architectures, whose held-out
    architectures score at most about 1.6. FCC ignores global choices (e.g.
    resolution), so they do not count.

    Parameters
    ----------
    space : str, SearchSpace or None, default=None
        The space (``None``: inferred from the architectures).
    max_reference : int, default=1000
        Most training encodings kept.
    threshold : float, default=2.0
        ``is_ood`` flags scores above it.
    n_bins : int, default=5
        Depth bins of ``rows_per_bin_`` and :meth:`bin_rows`.
    random_state : int, RandomState or None, default=0
        Draws the references when there are more than ``max_reference``.

    Attributes
    ----------
    encoder_ : FCCEncoder
    reference_ : ndarray of shape (n_reference, n_features), uint8 or uint16
    scale_ : float
    n_rows_ : int
        Training architectures seen.
    rows_per_bin_ : ndarray of shape (n_bins,)

    Examples
    --------
    >>> from esm_sklearn import get_space
    >>> space = get_space("resnet")
    >>> ood = OODScorer().fit(space.sample(300, strategy="balanced", random_state=0))
    >>> corner = {"space": "resnet", "depth": [7] * 4, "kernel_size": [[7] * 7] * 4,
    ...           "expand_ratio": [[1.0] * 7] * 4}
    >>> ood.is_ood([corner] + space.sample(2, random_state=1)).tolist()
    [True, False, False]
    """

    def __init__(self, space=None, max_reference: int = 1000, threshold: float = 2.0, n_bins: int = 5,
                 random_state=0):
        self.space = space
        self.max_reference = max_reference
        self.threshold = threshold
        self.n_bins = n_bins
        self.random_state = random_state

    def fit(self, X, y=None):
        """Keep the training architectures' encodings (``y`` is ignored)."""
        if isinstance(self.max_reference, bool) or not isinstance(self.max_reference, (int, np.integer)) \
                or self.max_reference < 2:
            raise ValueError(f"max_reference must be an int >= 2, got {self.max_reference!r}")
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float, np.number)) \
                or not self.threshold > 0:
            raise ValueError(f"threshold must be a positive number, got {self.threshold!r}")
        archs = as_arch_list(X)
        self.encoder_ = FCCEncoder(space=self.space).fit(archs)
        space = self.encoder_.space_
        Z = np.unique(np.asarray(self.encoder_.transform(archs)), axis=0)
        if len(Z) < 2:
            raise ValueError(f"OODScorer needs at least 2 distinct architectures, got {len(Z)}")
        if len(Z) > self.max_reference:
            rng = check_random_state(self.random_state)
            Z = Z[np.sort(rng.choice(len(Z), self.max_reference, replace=False))]
        dtype = np.uint8 if Z.max() <= np.iinfo(np.uint8).max else np.uint16
        self.reference_ = Z.astype(dtype)
        D = pairwise_distances(Z, metric="euclidean")
        np.fill_diagonal(D, np.inf)
        self.scale_ = float(np.median(D.min(axis=1)))
        self.n_rows_ = len(archs)
        self.rows_per_bin_ = np.bincount(space.bin_index(archs, self.n_bins), minlength=self.n_bins)
        return self

    def ood_score(self, X) -> np.ndarray:
        """Distance to the nearest training architecture, in typical nearest-neighbour distances."""
        check_is_fitted(self)
        Z = np.asarray(self.encoder_.transform(as_arch_list(X)), dtype=np.float32)
        if len(Z) == 0:
            return np.empty(0)
        _, dist = pairwise_distances_argmin_min(Z, self.reference_.astype(np.float32), metric="euclidean")
        return dist.astype(np.float64) / self.scale_

    def is_ood(self, X) -> np.ndarray:
        """``ood_score(X) > threshold``."""
        return self.ood_score(X) > self.threshold

    def bin_rows(self, X) -> np.ndarray:
        """Number of training architectures in each architecture's depth bin."""
        check_is_fitted(self)
        bins = self.encoder_.space_.bin_index(as_arch_list(X), self.n_bins)
        return self.rows_per_bin_[bins]
