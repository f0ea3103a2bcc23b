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
import os
import time
import warnings

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.model_selection import KFold, check_cv, cross_val_predict
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from ._validation import check_choice, check_fraction, check_int, check_latencies, plain
from .candidates import PoolCandidates, SpaceCandidates, round_robin_cap
from .metrics import binwise_accuracy, latency_accuracy
from .oracle import TableOracle
from .setting import make_setting, record_setting
from .spaces import SearchSpace, arch_key, as_arch_list, get_space, infer_space

__all__ = ["ActiveLatencyEstimator", "balanced_extension_counts"]

TERMINATION_CONDITIONS = ("threshold_reached", "plateau", "max_iter", "max_samples", "pool_exhausted")

# "auto" sizes: the paper's (N_Test, N_I, N_Step), or this share of a smaller pool.
_AUTO_SIZES = {"n_test": (200, 0.2), "n_initial": (300, 0.4), "n_step": (100, 0.1)}


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
    n_step = check_int(n_step, "n_step", low=1)
    n_below = int(below.sum())
    n_norm = w1 * n_below + w2 * (below.size - n_below)
    share_below = math.ceil(n_step * w1 / n_norm)
    share_above = math.ceil(n_step * w2 / n_norm)
    return np.where(below, share_below, share_above).astype(int)


# --------------------------------------------------------------- validation
def _check_weights(weights) -> tuple[float, float]:
    try:
        w1, w2 = weights
        w1, w2 = float(w1), float(w2)
    except (TypeError, ValueError):
        raise ValueError(f"weights must be a pair (w1, w2) of positive numbers, got {plain(weights)}") from None
    if not (np.isfinite(w1) and np.isfinite(w2) and w1 > 0 and w2 > 0):
        raise ValueError(f"weights must be a pair (w1, w2) of positive numbers, got {plain(weights)}")
    return w1, w2


# -------------------------------------------------------------- estimator
class ActiveLatencyEstimator(RegressorMixin, BaseEstimator):
    """Build a latency predictor with ESM's train-evaluate-extend loop (Algorithm 1).

    ``fit`` draws a held-out test set (balanced over total-depth bins) and an
    initial training set of ``n_initial`` architectures, has the oracle measure
    them, trains a clone of ``estimator`` and evaluates it per bin. While any
    bin is under ``acc_threshold`` it extends the training set by about
    ``n_step`` architectures (the ``strategy`` decides where), measures them,
    retrains from scratch and evaluates again, until every bin reaches the
    threshold, the accuracy stops improving (a plateau), or a budget
    (``max_iter``, ``max_samples``, the candidate pool) runs out.
    ``termination_condition_`` says which.

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
        :class:`~esm_sklearn.oracle.TorchLatencyOracle` (its settings are
        nested parameters: ``set_params(oracle__runs=50)``, or
        ``oracle__runs`` in a ``GridSearchCV`` grid). ``None``: when ``fit``
        gets a ``y``, a :class:`~esm_sklearn.oracle.TableOracle` over ``(X, y)``
        replays that dataset; otherwise a default ``TorchLatencyOracle()``
        times real models on the CPU. Quality control (reference
        architectures, re-timing) is the oracle's business; its outcome is
        copied to ``qc_``.
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
    n_initial : int or "auto", default="auto"
        Initial training samples (``N_I``). ``"auto"``: the paper's 300, or 40%
        of a smaller pool ``X``.
    n_step : int or "auto", default="auto"
        Samples per extension (``N_Step``). ``"auto"``: the paper's 100, or 10%
        of a smaller pool.
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
    n_test : int or "auto", default="auto"
        Size of the held-out test set. ``"auto"``: 200 (40 per bin with 5
        bins: enough to read a bin's accuracy to about a percent), or 20% of a
        smaller pool.
    cv : int or cross-validation splitter, default=5
        Folds for ``test="cv"``; an int means shuffled ``KFold`` seeded from
        ``random_state``.
    max_iter : int, default=50
        Largest number of extensions (the paper's random sampling needed 37).
    max_samples : int or None, default=None
        Largest number of training architectures measured (failed ones
        included, the test set not); an extension that would pass it is cut,
        taking one sample per bin in turn so that it stays balanced.
    plateau_patience : int or None, default=5
        Stop with ``"plateau"`` when the score that decides stopping (the worst
        bin's accuracy, or the overall one) has not risen by more than its
        standard error over the last ``plateau_patience`` extensions: more
        measurements no longer help, and a live run should not spend hours on
        them. ``plateau_score_`` then gives the level reached. ``None`` never
        stops for a plateau.
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
    n_initial_, n_step_, n_test_ : int
        The sizes used (``"auto"`` resolved against the pool).
    history_ : pandas.DataFrame
        One row per training round (row 0: the initial set) with
        ``iteration``; ``n_samples`` (training samples so far, failed ones
        excluded); ``n_requested`` (asked for by the rule), ``n_added`` and
        ``n_added_bin<b>`` (drawn this round, per bin); ``n_failed`` (failed
        training measurements this round; those of the test set are counted
        in ``n_failed_`` only); ``unfilled_bins`` (tuple of bins that could
        not supply their share: the pool or the budget ran short; an unfilled
        share is not moved to other bins); ``accuracy`` (overall) and
        ``acc_bin<b>``; ``score`` and ``score_se`` (the stopping score and its
        standard error); ``below_bins`` (tuple of bins under the threshold);
        ``measure_seconds`` (row 0 includes the test set) and ``fit_seconds``
        (training, plus cross-validation with ``test="cv"``).
    n_iter_ : int
        Number of extensions made (0 when the initial set reaches the threshold).
    termination_condition_ : str
        ``"threshold_reached"``, ``"plateau"``, ``"max_iter"``,
        ``"max_samples"`` or ``"pool_exhausted"`` (no candidate left, or none
        drawable for the requested bins).
    plateau_score_ : float or None
        With ``"plateau"``, the best score reached (the accuracy the loop
        could not improve on); else None.
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
    setting_ : dict
        What the predictor is valid for (:func:`esm_sklearn.setting.make_setting`):
        space, device description (None when replaying a table: use
        :func:`~esm_sklearn.setting.record_setting` with the table's setting),
        batch size, resolution, source and training rows per depth bin.
        :func:`~esm_sklearn.setting.check_setting` warns when asked about
        another setting.
    ood_ : OODScorer
        Distance of a candidate to the nearest training architecture
        (``est.ood_.ood_score(archs)``, ``est.ood_.is_ood(archs)``).

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
        n_initial="auto",
        n_step="auto",
        weights=(2, 1),
        evaluation: str = "binwise",
        n_bins: int = 5,
        acc_threshold: float = 0.95,
        test: str = "holdout",
        n_test="auto",
        cv=5,
        max_iter: int = 50,
        max_samples: int | None = None,
        plateau_patience: int | None = 5,
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
        self.plateau_patience = plateau_patience
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
        check_choice(self.strategy, "strategy", ("balanced", "random"))
        check_choice(self.evaluation, "evaluation", ("binwise", "overall"))
        check_choice(self.test, "test", ("holdout", "cv"))
        for name, low in (("n_initial", 1), ("n_step", 1), ("n_test", 1)):
            value = getattr(self, name)
            if not (isinstance(value, str) and value == "auto"):
                try:
                    check_int(value, name, low=low)
                except ValueError:
                    raise ValueError(f"{name} must be 'auto' or an int >= {low}, "
                                     f"got {plain(value)}") from None
        check_int(self.n_bins, "n_bins", low=1)
        check_int(self.max_iter, "max_iter", low=0)
        check_int(self.max_samples, "max_samples", low=1, allow_none=True)
        check_int(self.plateau_patience, "plateau_patience", low=1, allow_none=True)
        _check_weights(self.weights)
        check_fraction(self.acc_threshold, "acc_threshold")
        if self.test == "cv" and isinstance(self.cv, numbers.Integral):
            check_int(self.cv, "cv", low=2)
        if self.oracle is not None and not callable(getattr(self.oracle, "measure", None)):
            raise ValueError(
                "oracle must have a measure(archs, space=None, sampling=None) method, "
                f"got {type(self.oracle).__name__}"
            )

    def _resolve_sizes(self, n_pool: int | None) -> None:
        """``n_test_``, ``n_initial_``, ``n_step_``: ``"auto"`` becomes the paper's
        size, or a share of a smaller pool; sizes that leave little to train on warn."""
        for name, (paper, share) in _AUTO_SIZES.items():
            value = getattr(self, name)
            if isinstance(value, str):
                if n_pool is not None and round(share * n_pool) < paper:
                    value = max(1, int(round(share * n_pool)))
                else:
                    value = paper
            setattr(self, name + "_", int(value))
        if n_pool is None:
            return
        n_test = self.n_test_ if self.test == "holdout" else 0
        if n_test + self.n_initial_ > n_pool:
            warnings.warn(
                f"the pool holds {n_pool} distinct architectures but n_test={n_test} and "
                f"n_initial={self.n_initial_} ask for {n_test + self.n_initial_}: the training "
                "set will be smaller than asked; leave the sizes at 'auto' to scale them to "
                "the pool",
                UserWarning, stacklevel=3,
            )

    def _make_oracle(self, replay):
        if replay is not None:
            if self.oracle is not None:
                raise ValueError(
                    "fit got y and oracle= at once: y replays (X, y) through a TableOracle; "
                    "leave oracle=None, or call fit(X) to have the oracle measure X"
                )
            archs, y, space = replay
            return TableOracle(archs, np.where(np.isfinite(y), y, np.nan), space=space)
        if self.oracle is not None:
            return self.oracle
        from .oracle import TorchLatencyOracle

        return TorchLatencyOracle(progress=bool(self.verbose))

    def _prepare_pool(self, X, y):
        """Space, canonical deduplicated pool, and the replay table (or None) of ``(X, y)``."""
        if X is None:
            if y is not None:
                raise ValueError("y was given without X: y must be the latencies of the pool X")
            if self.space is None:
                raise ValueError("give space= (or a pool X of architectures) to sample candidates from")
            return get_space(self.space), None, None
        archs = as_arch_list(X)
        if not archs:
            raise ValueError("X is empty: give a pool of candidate architectures or X=None")
        space = infer_space(archs, self.space)
        canon = space.validate_many(archs, lambda i: f"X[{i}]")
        replay = None
        if y is not None:
            y = check_latencies(y, len(canon))
            replay = (canon, y, space)
        # A pool arch is drawn at most once: keep the first of identical ones.
        keys = [arch_key(a) for a in canon]
        _, first = np.unique(keys, return_index=True)
        pool = [canon[i] for i in np.sort(first)]
        return space, pool, replay

    def _base_estimator(self, space, rng):
        if self.estimator is not None:
            return self.estimator
        from .predictors import make_latency_pipeline

        seed = int(rng.randint(np.iinfo(np.int32).max))
        return make_latency_pipeline(space=space, random_state=seed)

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
        space, pool, replay = self._prepare_pool(X, y)
        n_bins = int(self.n_bins)
        self.space_ = space
        self.bin_edges_ = space.bin_edges(n_bins)
        oracle = self._make_oracle(replay)
        self._resolve_sizes(None if pool is None else len(pool))
        if pool is None:
            candidates = SpaceCandidates(space, n_bins)
        else:
            candidates = PoolCandidates(pool, space.bin_index(pool, n_bins), n_bins)
        base = self._base_estimator(space, rng)
        cv_seed = int(rng.randint(np.iinfo(np.int32).max))

        self.X_failed_ = []
        self.qc_ = None
        self.X_test_ = self.y_test_ = None
        test_seconds = self._measure_test_set(oracle, candidates, rng) if self.test == "holdout" else 0.0
        rows, model = self._run_rounds(oracle, candidates, base, cv_seed, rng, test_seconds,
                                       n_pool=None if pool is None else len(pool))
        self.estimator_ = model
        self.history_ = pd.DataFrame(rows)
        self.n_iter_ = int(rows[-1]["iteration"])
        self.n_failed_ = len(self.X_failed_)
        self._record_setting(oracle, replay is not None)
        return self

    def _record_setting(self, oracle, replay: bool) -> None:
        """``setting_`` (space, device, batch size, resolution, rows per bin) and ``ood_``."""
        describe = getattr(oracle, "device_description", None)
        device = describe(self.space_) if callable(describe) else None
        source = "replay of a latency table" if replay else f"measured by {type(oracle).__name__}"
        store = getattr(oracle, "store", None)
        if isinstance(store, (str, os.PathLike)):
            source += f" (store {os.fspath(store)})"
        record_setting(self, make_setting(self.space_, self.X_train_, device=device,
                                          source=source, n_bins=int(self.n_bins)),
                       self.X_train_)

    def _measure_test_set(self, oracle, candidates, rng) -> float:
        """Draw and measure the held-out test set; return the seconds it took."""
        n_bins = int(self.n_bins)
        groups = [candidates.draw_bin(b, int(q), rng)
                  for b, q in enumerate(SearchSpace.bin_quotas(self.n_test_, n_bins))]
        test_archs = SearchSpace.interleave(groups)
        start = time.perf_counter()
        X_ok, y_ok, _ = self._measure(oracle, test_archs, "balanced")
        if not X_ok:
            raise ValueError(f"none of the {len(test_archs)} test architectures could be measured")
        self.X_test_, self.y_test_ = X_ok, y_ok
        return time.perf_counter() - start

    def _run_rounds(self, oracle, candidates, base, cv_seed, rng, measure_seconds, n_pool):
        """Propose, measure, train, evaluate, until a termination condition holds."""
        n_bins = int(self.n_bins)
        X_train: list[dict] = []
        y_train: list[float] = []
        n_measured = 0
        rows: list[dict] = []
        below = np.ones(n_bins, dtype=bool)
        self.termination_condition_ = None
        self.plateau_score_ = None
        from tqdm.auto import tqdm

        progress = tqdm(total=self.max_iter + 1, desc="train-evaluate-extend", unit="iter",
                        disable=not self.verbose)
        try:
            for iteration in range(self.max_iter + 1):
                budget = math.inf if self.max_samples is None else self.max_samples - n_measured
                new, got, n_requested, unfilled = self._propose(candidates, iteration, below,
                                                                budget, rng)
                if not new:
                    if iteration == 0:
                        raise ValueError(
                            "no candidate architecture is left for the initial training set "
                            f"(pool of {n_pool or 0}, {len(self.X_test_ or [])} held out for testing)"
                        )
                    self.termination_condition_ = "max_samples" if budget <= 0 else "pool_exhausted"
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
                model, evaluation = self._train_evaluate(base, X_train, np.asarray(y_train), cv_seed)
                below, done = self._below_threshold(evaluation)
                rows.append({
                    "iteration": iteration,
                    "n_samples": len(X_train),
                    "n_requested": n_requested,
                    "n_added": len(new),
                    **{f"n_added_bin{b}": int(got[b]) for b in range(n_bins)},
                    "n_failed": n_fail,
                    "unfilled_bins": unfilled,
                    "accuracy": evaluation["accuracy"],
                    **{f"acc_bin{b}": float(evaluation["acc_bins"][b]) for b in range(n_bins)},
                    "score": evaluation["score"],
                    "score_se": evaluation["score_se"],
                    "below_bins": tuple(int(b) for b in np.flatnonzero(below)),
                    "measure_seconds": measure_seconds,
                    "fit_seconds": time.perf_counter() - start,
                })
                measure_seconds = 0.0
                progress.update(1)
                progress.set_postfix(n=len(X_train), acc=f"{evaluation['accuracy']:.3f}",
                                     score=f"{evaluation['score']:.3f}")
                self.termination_condition_ = self._stop_reason(
                    done, rows, n_measured, candidates, iteration)
                if self.termination_condition_ is not None:
                    break
        finally:
            progress.close()
        self.X_train_ = X_train
        self.y_train_ = np.asarray(y_train, dtype=float)
        return rows, model

    def _below_threshold(self, evaluation) -> tuple[np.ndarray, bool]:
        n_bins = int(self.n_bins)
        if self.evaluation == "binwise":
            below = evaluation["acc_bins"] < self.acc_threshold  # NaN (no data) is not below
            return below, not below.any()
        done = evaluation["accuracy"] >= self.acc_threshold
        return np.full(n_bins, not done), done

    def _stop_reason(self, done: bool, rows: list[dict], n_measured: int, candidates,
                     iteration: int) -> str | None:
        if done:
            return "threshold_reached"
        if self._plateaued(rows):
            return "plateau"
        if self.max_samples is not None and n_measured >= self.max_samples:
            return "max_samples"
        if iteration >= self.max_iter:
            return "max_iter"
        if candidates.total_available() == 0:
            return "pool_exhausted"
        return None

    def _plateaued(self, rows: list[dict]) -> bool:
        """True when the last ``plateau_patience`` rounds beat the best earlier
        score by no more than that score's standard error (sets ``plateau_score_``)."""
        patience = self.plateau_patience
        if patience is None or len(rows) <= patience:
            return False
        scores = np.array([r["score"] for r in rows], dtype=float)
        ses = np.array([r["score_se"] for r in rows], dtype=float)
        earlier = scores[:-patience]
        if np.isnan(earlier).all():
            return False
        best = int(np.nanargmax(earlier))
        recent = np.nanmax(scores[-patience:], initial=-np.inf)
        if recent > scores[best] + np.nan_to_num(ses[best]):
            return False
        self.plateau_score_ = float(np.nanmax(scores))
        return True

    def _propose(self, candidates, iteration: int, below: np.ndarray, budget, rng):
        """Draw the next architectures to measure (Algorithm 1's extension step).

        Returns the new architectures (bins interleaved), the number drawn per
        bin, the number the rule asked for, and the bins left short.
        """
        n_bins = int(self.n_bins)
        if self.strategy == "random":
            n_wanted = self.n_initial_ if iteration == 0 else self.n_step_
            new = candidates.draw_random(int(min(n_wanted, budget)), rng)
            got = np.bincount(self.space_.bin_index(new, n_bins), minlength=n_bins) if new else (
                np.zeros(n_bins, dtype=int)
            )
            unfilled = tuple(range(n_bins)) if len(new) < n_wanted else ()
            return new, got, n_wanted, unfilled
        if iteration == 0:
            requested = SearchSpace.bin_quotas(self.n_initial_, n_bins)
        else:
            requested = balanced_extension_counts(below, self.n_step_, self.weights)
        counts = np.array(
            [min(int(r), candidates.available(b)) for b, r in enumerate(requested)], dtype=int
        )
        if budget < counts.sum():
            counts = round_robin_cap(counts, int(budget))
        groups = [candidates.draw_bin(b, int(c), rng) for b, c in enumerate(counts)]
        got = np.array([len(g) for g in groups], dtype=int)
        unfilled = tuple(int(b) for b in np.flatnonzero(got < requested))
        return SearchSpace.interleave(groups), got, int(requested.sum()), unfilled

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
        """Fit a fresh clone on the training set; accuracy per bin and overall, and
        the stopping score (worst bin or overall) with its standard error."""
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
        n_bins = int(self.n_bins)
        table = binwise_accuracy(y_eval, y_pred, X_eval, space=self.space_, n_bins=n_bins)
        acc_bins = table["accuracy"].to_numpy(dtype=float)
        accuracy = latency_accuracy(y_eval, y_pred)
        # Per-architecture accuracy 1 - |relative error|: its mean is the accuracy,
        # its standard error says how far the accuracy can move by chance.
        per_arch = 1.0 - np.abs(y_pred - y_eval) / y_eval
        if self.evaluation == "binwise" and not np.isnan(acc_bins).all():
            worst = int(np.nanargmin(acc_bins))
            per_arch = per_arch[self.space_.bin_index(X_eval, n_bins) == worst]
            score = float(acc_bins[worst])
        else:
            score = accuracy
        score_se = float(per_arch.std(ddof=1) / np.sqrt(len(per_arch))) if len(per_arch) > 1 else np.nan
        return model, {"acc_bins": acc_bins, "accuracy": accuracy, "score": score,
                       "score_se": score_se}

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
