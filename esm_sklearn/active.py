"""The ESM train-evaluate-extend loop (Algorithm 1) as a scikit-learn meta-estimator.

:class:`ActiveLatencyEstimator` measures an initial set of architectures, trains
a latency predictor, evaluates it per total-depth bin on a held-out test set (or
by cross-validation), and measures more architectures, preferring the bins
whose accuracy is still under the threshold, until every bin reaches it or a
budget runs out. :func:`balanced_extension_counts` is the extension rule alone.
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Mapping

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.model_selection import KFold, check_cv, cross_val_predict
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from .metrics import binwise_accuracy, latency_accuracy
from .oracle import TableOracle, TorchLatencyOracle
from .spaces import SearchSpace, arch_key, as_arch_list, get_space, infer_space

__all__ = ["ActiveLatencyEstimator", "balanced_extension_counts", "sample_in_bin"]

TERMINATION_CONDITIONS = ("threshold_reached", "max_iter", "max_samples", "pool_exhausted")


def balanced_extension_counts(below, n_step: int, weights=(2, 1)) -> np.ndarray:
    """Samples to add per bin in one balanced extension (ESM Algorithm 1).

    Each bin under the accuracy threshold gets ``ceil(n_step * w1 / N_norm)``
    samples and every other bin ``ceil(n_step * w2 / N_norm)``, with
    ``N_norm = w1 * N_below + w2 * N_above``. Rounding up means the total may
    exceed ``n_step`` by fewer than ``n_bins`` samples.

    Parameters
    ----------
    below : array-like of bool, shape (n_bins,)
        Whether each bin is under the threshold.
    n_step : int
        Samples per extension (``N_Step``).
    weights : (float, float)
        ``(w1, w2)``: relative share of a below-threshold and of another bin.

    Returns
    -------
    numpy.ndarray of int, shape (n_bins,)

    Examples
    --------
    >>> balanced_extension_counts([True, True, False, False, False], 100, (2, 1)).tolist()
    [29, 29, 15, 15, 15]
    """
    below = np.asarray(below, dtype=bool).reshape(-1)
    if below.size == 0:
        raise ValueError("below must name at least one bin")
    w1, w2 = _check_weights(weights)
    n_step = _check_int(n_step, "n_step", 1)
    n_below = int(below.sum())
    n_norm = w1 * n_below + w2 * (below.size - n_below)
    share_below = math.ceil(n_step * w1 / n_norm)
    share_above = math.ceil(n_step * w2 / n_norm)
    return np.where(below, share_below, share_above).astype(int)


def sample_in_bin(
    space: SearchSpace,
    bin: int,
    n: int,
    n_bins: int = 5,
    random_state=None,
    exclude=None,
    max_rounds: int = 50,
) -> list[dict]:
    """Draw up to ``n`` distinct architectures of ``space`` whose depth bin is ``bin``.

    Architectures are drawn as by ``space.sample(strategy="balanced")`` (total
    depth uniform inside the bin, block choices uniform) and those whose key is
    in ``exclude`` (e.g. already measured) are skipped.

    Parameters
    ----------
    space : SearchSpace
    bin : int
        Bin index in ``0 .. n_bins - 1`` (see :meth:`SearchSpace.bin_index`).
    n : int
        Number of architectures wanted.
    n_bins : int
        Number of equal-width total-depth bins.
    random_state : int, RandomState or None
    exclude : set of str or iterable of arch, optional
        Architectures (or their :func:`~esm_sklearn.spaces.arch_key`) never to return.
    max_rounds : int
        Rounds of drawing before giving up; fewer than ``n`` architectures are
        returned only when the bin is (nearly) exhausted.

    Returns
    -------
    list of dict
        Canonical architecture dicts, at most ``n``.
    """
    if not isinstance(bin, (int, np.integer)) or not 0 <= bin < n_bins:
        raise ValueError(f"bin must be an int in 0..{n_bins - 1}, got {bin!r}")
    rng = check_random_state(random_state)
    excluded = _key_set(exclude)
    out: list[dict] = []
    taken: set[str] = set()
    for _ in range(max_rounds):
        missing = n - len(out)
        if missing <= 0:
            break
        # A balanced draw of missing * n_bins gives exactly `missing` per bin.
        batch = space.sample(missing * n_bins, strategy="balanced", n_bins=n_bins, random_state=rng)
        for arch, b in zip(batch, space.bin_index(batch, n_bins), strict=True):
            if b != bin:
                continue
            key = arch_key(arch)
            if key in excluded or key in taken:
                continue
            taken.add(key)
            out.append(arch)
    return out[:n]


# --------------------------------------------------------------- validation
def _check_int(value, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return int(value)


def _check_weights(weights) -> tuple[float, float]:
    try:
        w1, w2 = weights
        w1, w2 = float(w1), float(w2)
    except (TypeError, ValueError):
        raise ValueError(f"weights must be a pair (w1, w2) of positive numbers, got {weights!r}") from None
    if not (np.isfinite(w1) and np.isfinite(w2) and w1 > 0 and w2 > 0):
        raise ValueError(f"weights must be a pair (w1, w2) of positive numbers, got {weights!r}")
    return w1, w2


def _key_set(archs) -> set[str]:
    if archs is None:
        return set()
    if isinstance(archs, (set, frozenset)):
        return {a if isinstance(a, str) else arch_key(a) for a in archs}
    return {arch_key(a) for a in as_arch_list(archs)}


def _round_robin_cap(counts: np.ndarray, budget: int) -> np.ndarray:
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


def _quotas(n: int, n_bins: int) -> np.ndarray:
    """Equal shares of ``n`` over ``n_bins``; the remainder goes to the first bins."""
    base, extra = divmod(n, n_bins)
    return np.array([base + (b < extra) for b in range(n_bins)], dtype=int)


# ------------------------------------------------------------ candidate sets
class _PoolCandidates:
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


class _SpaceCandidates:
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
        out = sample_in_bin(self.space, b, k, self.n_bins, rng, exclude=self.seen)
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


def _interleave(groups: list[list]) -> list:
    """bin0[0], bin1[0], ..., bin0[1], ...: any prefix stays balanced."""
    out = []
    for i in range(max((len(g) for g in groups), default=0)):
        out.extend(g[i] for g in groups if i < len(g))
    return out


class _ReplayOracle:
    """A :class:`TableOracle` over the finite entries of ``(archs, y)``; the
    others (NaN, inf) replay as failed measurements (NaN)."""

    def __init__(self, archs: list[dict], y: np.ndarray, space: SearchSpace):
        ok = np.isfinite(y)
        self.failed = {arch_key(a) for a, good in zip(archs, ok, strict=True) if not good}
        self.table = TableOracle(
            [a for a, good in zip(archs, ok, strict=True) if good], y[ok], space=space
        )

    def measure(self, archs, space=None, sampling=None) -> np.ndarray:
        failed = np.array([arch_key(a) in self.failed for a in archs], dtype=bool)
        out = np.full(len(archs), np.nan)
        if (~failed).any():
            out[~failed] = self.table.measure(
                [a for a, f in zip(archs, failed, strict=True) if not f], space=space
            )
        return out


# -------------------------------------------------------------- estimator
class ActiveLatencyEstimator(RegressorMixin, BaseEstimator):
    """Build a latency predictor with ESM's train-evaluate-extend loop (Algorithm 1).

    ``fit`` draws a held-out test set (balanced over total-depth bins) and an
    initial training set of ``n_initial`` architectures, has the oracle measure
    them, trains a clone of ``estimator`` and evaluates it per bin. While any
    bin is under ``acc_threshold`` it extends the training set by about
    ``n_step`` architectures (the ``strategy`` decides where), measures them,
    retrains from scratch and evaluates again, until every bin reaches the
    threshold or a budget (``max_iter``, ``max_samples``, the candidate pool)
    runs out. ``termination_condition_`` says which.

    Parameters
    ----------
    estimator : estimator, default=None
        Regressor taking a list of architecture dicts (a Pipeline whose first
        step encodes them). ``None`` means
        ``make_latency_pipeline(space=space, random_state=...)`` (FCC encoding
        and the paper's MLP), seeded from ``random_state``. A given estimator
        is cloned; seed it yourself for repeatable runs.
    oracle : object, default=None
        Anything with ``measure(archs, space=None, sampling=None) -> array`` of
        latencies in ms (NaN for a failed measurement), e.g. a
        :class:`~esm_sklearn.oracle.TorchLatencyOracle` or
        :class:`~esm_sklearn.oracle.TableOracle`. ``None``: when ``fit`` gets a
        ``y``, a ``TableOracle`` over ``(X, y)`` replays that dataset;
        otherwise ``TorchLatencyOracle(device=device, store=store,
        **oracle_params)`` times real models. Quality control (reference
        architectures, re-timing) is the oracle's business; its outcome is
        copied to ``qc_``. A given oracle is used as is, not cloned (it is a
        resource, like a device); the oracles built in ``fit`` are not kept.
    space : str or SearchSpace, default=None
        The search space; ``None`` reads it from the ``"space"`` field of the
        architectures in ``X``.
    strategy : {"balanced", "random"}, default="balanced"
        ``"balanced"``: the initial set has equal numbers per bin and an
        extension gives ``ceil(n_step * w1 / N_norm)`` samples to each bin
        under the threshold and ``ceil(n_step * w2 / N_norm)`` to every other
        bin, ``N_norm = w1 * N_below + w2 * N_above``
        (:func:`balanced_extension_counts`); samples are drawn at random inside
        each bin. A bin whose candidates run out gets what is left; the rest
        of its share is not moved to other bins (``history_["unfilled_bins"]``).
        ``"random"``: the initial set and every extension of
        ``n_step`` are drawn uniformly (from the pool, or from the space, where
        total depth then piles up in the middle bins).
    n_initial : int, default=300
        Initial training samples (``N_I``; the paper's 300).
    n_step : int, default=100
        Samples per extension (``N_Step``; the paper's 100).
    weights : (float, float), default=(2, 1)
        ``(w1, w2)``, the relative share of a bin below and of a bin at or above
        the threshold. The default gives a weak bin twice the share of a good
        one: most new measurements go where the predictor fails, while the
        other bins keep receiving some so that they do not degrade as the
        model is refit (``w2 = 0`` is not allowed for that reason).
    evaluation : {"binwise", "overall"}, default="binwise"
        ``"binwise"``: stop when every bin that has evaluation data reaches
        ``acc_threshold`` (a bin without any is reported as NaN and does not
        block stopping). ``"overall"``: stop when the accuracy over all
        evaluation data reaches it; a balanced extension then treats every bin
        as below, i.e. splits ``n_step`` equally.
    n_bins : int, default=5
        Equal-width total-depth bins (:meth:`SearchSpace.bin_index`).
    acc_threshold : float, default=0.95
        Target accuracy, ``1 - MAPE`` as a fraction (0.95 is 95%).
    test : {"holdout", "cv"}, default="holdout"
        ``"holdout"``: before training, ``n_test`` architectures balanced over
        the bins are drawn (from the pool, or the space), measured once and
        kept out of training; every evaluation uses them. ``"cv"``: evaluate
        out-of-fold predictions of a ``cv``-fold cross-validation on the data
        collected so far (no extra measurements, ``cv`` more fits per
        iteration).
    n_test : int, default=200
        Size of the held-out test set (40 per bin with 5 bins: enough to read
        a bin's accuracy to about a percent).
    cv : int or cross-validation splitter, default=5
        Folds for ``test="cv"``; an int means shuffled ``KFold`` seeded from
        ``random_state``.
    max_iter : int, default=50
        Largest number of extensions (the paper's random sampling needed 37).
    max_samples : int or None, default=None
        Largest number of training architectures measured (failed ones
        included, the test set not); an extension that would pass it is cut,
        taking one sample per bin in turn so that it stays balanced.
    device : str, default="cpu"
        Device of the ``TorchLatencyOracle`` built when ``oracle`` is None and
        no ``y`` is given; ignored otherwise.
    store : str, path or None, default=None
        :class:`~esm_sklearn.store.MeasurementStore` path for that oracle: every
        measurement is written as taken, and a rerun with the same
        ``random_state`` proposes the same architectures and gets the stored
        ones back instead of re-timing them. Pass a path (not an open store) to
        keep the estimator clonable and picklable.
    oracle_params : dict or None, default=None
        Further keyword arguments of that oracle (``batch_size``, ``runs``,
        ``n_references``, ``variance_threshold``, ...).
    random_state : int, RandomState or None, default=None
        Seeds the test set, every draw of candidates and the default
        estimator; the same seed and the same measurements give the same run.
    verbose : bool, default=False
        Show a progress bar (tqdm) over the iterations.

    Attributes
    ----------
    estimator_ : estimator
        The predictor trained on the final training set.
    space_ : SearchSpace
    bin_edges_ : numpy.ndarray of shape (n_bins + 1,)
    history_ : pandas.DataFrame
        One row per training round (row 0: the initial set) with
        ``iteration``; ``n_samples`` (training samples so far, failed ones
        excluded); ``n_requested`` (asked for by the rule), ``n_added`` and
        ``n_added_bin<b>`` (drawn this round, per bin); ``n_failed`` (failed
        training measurements this round; those of the test set are counted
        in ``n_failed_`` only); ``unfilled_bins`` (tuple of bins that could
        not supply their share: the pool or the budget ran short; an unfilled
        share is not moved to other bins); ``accuracy`` (overall) and
        ``acc_bin<b>``; ``below_bins`` (tuple of bins under the threshold);
        ``measure_seconds`` (row 0 includes the test set) and ``fit_seconds``
        (training, plus cross-validation with ``test="cv"``).
    n_iter_ : int
        Number of extensions made (0 when the initial set reaches the threshold).
    termination_condition_ : str
        ``"threshold_reached"``, ``"max_iter"``, ``"max_samples"`` or
        ``"pool_exhausted"`` (no candidate left, or none drawable for the
        requested bins).
    X_train_, y_train_ : list of dict, numpy.ndarray
        The measured training set (successful measurements only).
    X_test_, y_test_ : list of dict, numpy.ndarray, or None
        The held-out test set (None with ``test="cv"``).
    X_failed_ : list of dict
        Architectures whose measurement failed (NaN, inf or <= 0), test set
        included; never retried nor drawn again.
    n_failed_ : int
        ``len(X_failed_)``.
    qc_ : object or None
        The oracle's quality-control outcome after the last measurement, when
        it has one: a ``TorchLatencyOracle``'s ``qc_check_``
        (:class:`~esm_sklearn.quality.ReferenceCheck`, ``qc_.passed``), else
        its ``qc_``; None for a table.

    Examples
    --------
    Replay a measured table (here a synthetic one, linear in the per-unit
    feature-combination counts):

    >>> from esm_sklearn import get_space
    >>> from esm_sklearn.predictors import make_latency_pipeline
    >>> space = get_space("resnet")
    >>> X = space.sample(400, strategy="balanced", random_state=0)
    >>> y = [1.0 + 0.1 * sum(a["depth"]) for a in X]
    >>> est = ActiveLatencyEstimator(
    ...     make_latency_pipeline(encoding="fcc", regressor="linear"),
    ...     n_initial=50, n_step=20, n_test=50, random_state=0)
    >>> est = est.fit(X, y)
    >>> est.termination_condition_, est.n_iter_
    ('threshold_reached', 0)
    """

    def __init__(
        self,
        estimator=None,
        oracle=None,
        space=None,
        strategy: str = "balanced",
        n_initial: int = 300,
        n_step: int = 100,
        weights=(2, 1),
        evaluation: str = "binwise",
        n_bins: int = 5,
        acc_threshold: float = 0.95,
        test: str = "holdout",
        n_test: int = 200,
        cv=5,
        max_iter: int = 50,
        max_samples: int | None = None,
        device: str = "cpu",
        store=None,
        oracle_params: dict | None = None,
        random_state=None,
        verbose: bool = False,
    ):
        self.estimator = estimator
        self.oracle = oracle
        self.space = space
        self.strategy = strategy
        self.n_initial = n_initial
        self.n_step = n_step
        self.weights = weights
        self.evaluation = evaluation
        self.n_bins = n_bins
        self.acc_threshold = acc_threshold
        self.test = test
        self.n_test = n_test
        self.cv = cv
        self.max_iter = max_iter
        self.max_samples = max_samples
        self.device = device
        self.store = store
        self.oracle_params = oracle_params
        self.random_state = random_state
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.dict = True
        tags.target_tags.required = False
        return tags

    # ---------------------------------------------------------------- checks
    def _check_params(self) -> None:
        if self.strategy not in ("balanced", "random"):
            raise ValueError(f"strategy must be 'balanced' or 'random', got {self.strategy!r}")
        if self.evaluation not in ("binwise", "overall"):
            raise ValueError(f"evaluation must be 'binwise' or 'overall', got {self.evaluation!r}")
        if self.test not in ("holdout", "cv"):
            raise ValueError(f"test must be 'holdout' or 'cv', got {self.test!r}")
        _check_int(self.n_initial, "n_initial", 1)
        _check_int(self.n_step, "n_step", 1)
        _check_int(self.n_bins, "n_bins", 1)
        _check_int(self.n_test, "n_test", 1)
        _check_int(self.max_iter, "max_iter", 0)
        if self.max_samples is not None:
            _check_int(self.max_samples, "max_samples", 1)
        _check_weights(self.weights)
        t = self.acc_threshold
        if isinstance(t, bool) or not isinstance(t, numbers.Real) or not 0 < t <= 1:
            raise ValueError(
                f"acc_threshold must be a fraction in (0, 1] (0.95 is 95%), got {t!r}"
            )
        if self.test == "cv" and isinstance(self.cv, numbers.Integral):
            _check_int(self.cv, "cv", 2)
        if self.oracle_params is not None and not isinstance(self.oracle_params, Mapping):
            raise ValueError(f"oracle_params must be a dict or None, got {self.oracle_params!r}")
        if self.oracle is not None and not callable(getattr(self.oracle, "measure", None)):
            raise ValueError(
                f"oracle must have a measure(archs, space=None, sampling=None) method, got {self.oracle!r}"
            )

    def _make_oracle(self, replay):
        if replay is not None:
            if self.oracle is not None:
                raise ValueError(
                    "fit got y and oracle= at once: y replays (X, y) through a TableOracle; "
                    "leave oracle=None, or call fit(X) to have the oracle measure X"
                )
            return _ReplayOracle(*replay)
        if self.oracle is not None:
            if self.store is not None or self.oracle_params:
                raise ValueError(
                    "store= and oracle_params= configure the oracle built from device=; "
                    "with oracle= given, configure that oracle instead"
                )
            return self.oracle
        params = dict(self.oracle_params or {})
        params.setdefault("progress", bool(self.verbose))
        return TorchLatencyOracle(device=self.device, store=self.store, **params)

    def _prepare_pool(self, X, y):
        """Space, canonical deduplicated pool, and the replay table (or None) of ``(X, y)``."""
        archs = as_arch_list(X)
        if not archs:
            raise ValueError("X is empty: give a pool of candidate architectures or X=None")
        space = infer_space(archs, self.space)
        canon = space.validate_many(archs, lambda i: f"X[{i}]")
        replay = None
        if y is not None:
            y = np.asarray(y, dtype=float)
            if y.ndim == 2 and y.shape[1] == 1:
                y = y[:, 0]
            if y.ndim != 1 or len(y) != len(canon):
                raise ValueError(
                    f"y must hold one latency per architecture of X: got shape {y.shape} "
                    f"for {len(canon)} architectures"
                )
            replay = (canon, y, space)
        # A pool arch is drawn at most once: keep the first of identical ones.
        keys = [arch_key(a) for a in canon]
        _, first = np.unique(keys, return_index=True)
        pool = [canon[i] for i in np.sort(first)]
        return space, pool, replay

    # ------------------------------------------------------------------ fit
    def fit(self, X=None, y=None):
        """Run the train-evaluate-extend loop.

        Parameters
        ----------
        X : sequence of dict or JSON str, optional
            Pool of candidate architectures (identical ones count once; in
            replay their latencies are averaged).
            ``None``: candidates are drawn from the whole ``space``.
        y : array-like of shape (n,), optional
            Latencies (ms) of ``X``: the loop then replays this dataset through a
            ``TableOracle`` (NaN entries count as failed measurements). This is
            how strategies and encodings are compared offline, e.g. in
            ``GridSearchCV``.

        Returns
        -------
        self
        """
        self._check_params()
        rng = check_random_state(self.random_state)
        if X is None:
            if y is not None:
                raise ValueError("y was given without X: y must be the latencies of the pool X")
            if self.space is None:
                raise ValueError("give space= (or a pool X of architectures) to sample candidates from")
            space = get_space(self.space)
            pool = replay = None
        else:
            space, pool, replay = self._prepare_pool(X, y)
        n_bins = int(self.n_bins)
        self.space_ = space
        self.bin_edges_ = space.bin_edges(n_bins)
        oracle = self._make_oracle(replay)
        if pool is None:
            candidates = _SpaceCandidates(space, n_bins)
        else:
            candidates = _PoolCandidates(pool, space.bin_index(pool, n_bins), n_bins)

        if self.estimator is None:
            from .predictors import make_latency_pipeline

            seed = int(rng.randint(np.iinfo(np.int32).max))
            base = make_latency_pipeline(space=space, random_state=seed)
        else:
            base = self.estimator
        cv_seed = int(rng.randint(np.iinfo(np.int32).max))

        self.X_failed_ = []
        self.qc_ = None
        self.X_test_ = self.y_test_ = None
        measure_seconds = 0.0
        if self.test == "holdout":
            test_groups = [
                candidates.draw_bin(b, int(q), rng) for b, q in enumerate(_quotas(self.n_test, n_bins))
            ]
            test_archs = _interleave(test_groups)
            start = time.perf_counter()
            X_ok, y_ok, _ = self._measure(oracle, test_archs, "balanced")
            measure_seconds += time.perf_counter() - start
            if not X_ok:
                raise ValueError(
                    f"none of the {len(test_archs)} test architectures could be measured"
                )
            self.X_test_, self.y_test_ = X_ok, y_ok

        X_train: list[dict] = []
        y_train: list[float] = []
        n_measured = 0
        rows = []
        below = np.ones(n_bins, dtype=bool)
        iteration = 0
        condition = None
        progress = _progress(self.verbose, self.max_iter + 1)
        try:
            while True:
                budget = math.inf if self.max_samples is None else self.max_samples - n_measured
                new, got, n_requested, unfilled = self._propose(
                    candidates, iteration, below, budget, rng
                )
                if not new:
                    if iteration == 0:
                        raise ValueError(
                            "no candidate architecture is left for the initial training set "
                            f"(pool of {0 if pool is None else len(pool)}, "
                            f"{0 if self.X_test_ is None else len(test_archs)} held out for testing)"
                        )
                    condition = "max_samples" if budget <= 0 else "pool_exhausted"
                    break
                start = time.perf_counter()
                X_ok, y_ok, n_fail = self._measure(oracle, new, self.strategy)
                measure_seconds += time.perf_counter() - start
                n_measured += len(new)
                X_train.extend(X_ok)
                y_train.extend(y_ok.tolist())
                if not X_train:
                    raise ValueError(
                        f"none of the {len(new)} initial training architectures could be measured"
                    )
                start = time.perf_counter()
                model, acc_bins, acc = self._train_evaluate(
                    base, X_train, np.asarray(y_train), cv_seed
                )
                fit_seconds = time.perf_counter() - start
                if self.evaluation == "binwise":
                    below = acc_bins < self.acc_threshold  # NaN (no data) is not below
                    done = not below.any()
                else:
                    done = acc >= self.acc_threshold
                    below = np.full(n_bins, not done)
                rows.append(
                    {
                        "iteration": iteration,
                        "n_samples": len(X_train),
                        "n_requested": n_requested,
                        "n_added": len(new),
                        **{f"n_added_bin{b}": int(got[b]) for b in range(n_bins)},
                        "n_failed": n_fail,
                        "unfilled_bins": unfilled,
                        "accuracy": acc,
                        **{f"acc_bin{b}": float(acc_bins[b]) for b in range(n_bins)},
                        "below_bins": tuple(int(b) for b in np.flatnonzero(below)),
                        "measure_seconds": measure_seconds,
                        "fit_seconds": fit_seconds,
                    }
                )
                measure_seconds = 0.0
                progress.update(1)
                worst = acc_bins[~np.isnan(acc_bins)].min(initial=acc)
                progress.set_postfix(n=len(X_train), acc=f"{acc:.3f}", worst_bin=f"{worst:.3f}")
                if done:
                    condition = "threshold_reached"
                elif self.max_samples is not None and n_measured >= self.max_samples:
                    condition = "max_samples"
                elif iteration >= self.max_iter:
                    condition = "max_iter"
                elif candidates.total_available() == 0:
                    condition = "pool_exhausted"
                if condition is not None:
                    break
                iteration += 1
        finally:
            progress.close()
        self.estimator_ = model
        self.history_ = pd.DataFrame(rows)
        self.n_iter_ = int(rows[-1]["iteration"])
        self.termination_condition_ = condition
        self.X_train_ = X_train
        self.y_train_ = np.asarray(y_train, dtype=float)
        self.n_failed_ = len(self.X_failed_)
        return self

    def _propose(self, candidates, iteration: int, below: np.ndarray, budget, rng):
        """Draw the next architectures to measure (Algorithm 1's extension step).

        Returns the new architectures (bins interleaved), the number drawn per
        bin, the number the rule asked for, and the bins left short.
        """
        n_bins = int(self.n_bins)
        if self.strategy == "random":
            n_wanted = int(self.n_initial if iteration == 0 else self.n_step)
            new = candidates.draw_random(int(min(n_wanted, budget)), rng)
            got = np.bincount(self.space_.bin_index(new, n_bins), minlength=n_bins) if new else (
                np.zeros(n_bins, dtype=int)
            )
            unfilled = tuple(range(n_bins)) if len(new) < n_wanted else ()
            return new, got, n_wanted, unfilled
        if iteration == 0:
            requested = _quotas(int(self.n_initial), n_bins)
        else:
            requested = balanced_extension_counts(below, self.n_step, self.weights)
        counts = np.array(
            [min(int(r), candidates.available(b)) for b, r in enumerate(requested)], dtype=int
        )
        if budget < counts.sum():
            counts = _round_robin_cap(counts, int(budget))
        groups = [candidates.draw_bin(b, int(c), rng) for b, c in enumerate(counts)]
        got = np.array([len(g) for g in groups], dtype=int)
        unfilled = tuple(int(b) for b in np.flatnonzero(got < requested))
        return _interleave(groups), got, int(requested.sum()), unfilled

    def _measure(self, oracle, archs: list[dict], sampling: str):
        """Measure ``archs``; return the successful ones, their latencies, the failure count."""
        if not archs:
            return [], np.empty(0), 0
        y = np.asarray(oracle.measure(archs, space=self.space_, sampling=sampling), dtype=float)
        y = y.reshape(-1)
        if len(y) != len(archs):
            raise ValueError(
                f"oracle {type(oracle).__name__} returned {len(y)} latencies for {len(archs)} architectures"
            )
        qc = getattr(oracle, "qc_check_", None)
        if qc is None:
            qc = getattr(oracle, "qc_", None)
        if qc is not None:
            self.qc_ = qc
        ok = np.isfinite(y) & (y > 0)
        self.X_failed_.extend(a for a, good in zip(archs, ok, strict=True) if not good)
        return [a for a, good in zip(archs, ok, strict=True) if good], y[ok], int((~ok).sum())

    def _train_evaluate(self, base, X_train: list[dict], y_train: np.ndarray, cv_seed: int):
        """Fit a fresh clone on the training set; accuracy per bin and overall."""
        if self.test == "holdout":
            model = clone(base).fit(X_train, y_train)
            X_eval, y_eval = self.X_test_, self.y_test_
            y_pred = _as_1d(model.predict(X_eval))
        else:
            if isinstance(self.cv, numbers.Integral):
                splitter = KFold(int(self.cv), shuffle=True, random_state=cv_seed)
            else:
                splitter = check_cv(self.cv)
            n_splits = splitter.get_n_splits(X_train)
            if len(X_train) < n_splits:
                raise ValueError(
                    f"test='cv' needs at least {n_splits} training samples, have {len(X_train)}"
                )
            y_pred = _as_1d(cross_val_predict(clone(base), X_train, y_train, cv=splitter))
            X_eval, y_eval = X_train, y_train
            model = clone(base).fit(X_train, y_train)
        table = binwise_accuracy(y_eval, y_pred, X_eval, space=self.space_, n_bins=self.n_bins)
        return model, table["accuracy"].to_numpy(dtype=float), latency_accuracy(y_eval, y_pred)

    # --------------------------------------------------------- prediction
    def predict(self, X) -> np.ndarray:
        """Predicted latency (ms) of each architecture in ``X``."""
        check_is_fitted(self, "estimator_")
        return _as_1d(self.estimator_.predict(X))

    def score(self, X, y, sample_weight=None) -> float:
        """:func:`~esm_sklearn.metrics.latency_accuracy` (``1 - MAPE``) of the predictions on ``(X, y)``."""
        if sample_weight is not None:
            raise ValueError("ActiveLatencyEstimator.score does not support sample_weight")
        return latency_accuracy(y, self.predict(X))


def _as_1d(pred) -> np.ndarray:
    pred = np.asarray(pred, dtype=float)
    if pred.ndim == 2 and pred.shape[1] == 1:
        pred = pred[:, 0]
    return pred


class _NoProgress:
    def update(self, n=1):
        pass

    def set_postfix(self, **kw):
        pass

    def close(self):
        pass


def _progress(verbose: bool, total: int):
    if not verbose:
        return _NoProgress()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="train-evaluate-extend", unit="iter")

