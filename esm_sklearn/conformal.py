"""Latency bounds with a coverage guarantee, by conformal prediction (MAPIE).

:class:`ConformalLatencyRegressor` wraps any latency predictor (the default
pipeline, a :class:`~esm_sklearn.transfer.TransferLatencyRegressor`, ...) in
MAPIE's cross-conformal (CV+) or split-conformal regressor, so that a NAS loop
can ask "which candidates meet 10 ms with 90% confidence?" instead of trusting
a point prediction.
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.model_selection import KFold, train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from ._validation import LATENCY_RANGE_MS
from .spaces import as_arch_list

__all__ = ["ConformalLatencyRegressor"]

METHODS = ("cross", "split")
SCORES = ("log", "gamma", "absolute")


class _LogLatencyRegressor(RegressorMixin, BaseEstimator):
    """``estimator`` seen on the log scale: fitted on ``exp(t)``, predicts ``log``.

    MAPIE's absolute score on this scale is ``|log y - log y_hat|``: symmetric
    (one quantile, so 90% bounds need 9 samples, not the 19 of the asymmetric
    gamma score) and multiplicative once mapped back.
    """

    def __init__(self, estimator):
        self.estimator = estimator

    def fit(self, X, y):
        self.estimator_ = clone(self.estimator).fit(X, np.exp(np.asarray(y, dtype=float)))
        self.fitted_ = True  # one of the attributes MAPIE looks for to tell a fitted model
        return self

    def predict(self, X):
        # A model may predict a latency <= 0 far from its data (e.g. a linear one).
        # NaN would make MAPIE drop the point (and warn); the smallest plausible
        # latency instead gives it a large conformity score: wider, honest bounds.
        pred = np.asarray(self.estimator_.predict(X), dtype=float)
        return np.log(np.maximum(np.nan_to_num(pred, nan=LATENCY_RANGE_MS[0]), LATENCY_RANGE_MS[0]))


def _as_object_array(archs: list) -> np.ndarray:
    # MAPIE counts features with sklearn's helpers, which reject a list of
    # dicts but accept a 1-D object array; our encoders accept both.
    out = np.empty(len(archs), dtype=object)
    out[:] = archs
    return out


class ConformalLatencyRegressor(RegressorMixin, BaseEstimator):
    """Latency predictor with conformal bounds: ``predict_interval(X)`` -> (n, 2) in ms.

    The bounds come from MAPIE: ``method="cross"`` (default) is CV+
    (``mapie.regression.CrossConformalRegressor(method="plus")``): ``cv`` models
    fitted on the folds give out-of-fold scores and every sample is used both
    to train and to calibrate, which matters with the 10-100 samples a new
    device has; ``method="split"`` fits on a ``1 - calibration_size`` part and
    conformalizes on the rest (``SplitConformalRegressor``), one fit only. Both
    guarantee that a new architecture drawn like the training ones lies within
    its bounds with probability at least ``confidence_level`` (CV+ at least
    ``2 * confidence_level - 1`` in theory, close to ``confidence_level`` in
    practice).

    ``conformity_score="log"`` (default) scores ``|log y - log y_hat|``, so the
    bounds are ``y_hat * exp(-+q)``: multiplicative, as latency errors are (a
    10% error on a 2 ms and on a 50 ms model alike), and symmetric, so 90%
    bounds need only 9 samples. ``"gamma"`` (MAPIE's ``|y - y_hat| / y_hat``)
    is also multiplicative but takes its two quantiles separately (19 samples
    for 90%); ``"absolute"`` gives bounds of one width in ms for fast and slow
    models. ``docs/results/transfer.md`` compares them on the HELP tables.

    Parameters
    ----------
    estimator : estimator or None, default=None
        Latency predictor taking architectures; cloned. ``None``:
        :func:`esm_sklearn.make_latency_pipeline` with ``random_state``.
    confidence_level : float, default=0.9
        Target coverage of the bounds, in (0, 1).
    method : {"cross", "split"}, default="cross"
    conformity_score : {"log", "gamma", "absolute"} or MAPIE score, default="log"
    cv : int, default=5
        Folds for ``method="cross"`` (at most the number of samples).
    calibration_size : float, default=0.3
        Share of the samples held out to conformalize with ``method="split"``.
    random_state : int, RandomState or None, default=None
        Seeds the folds or the split (and the default pipeline).

    Attributes
    ----------
    mapie_ : mapie.regression.CrossConformalRegressor or SplitConformalRegressor
        The fitted MAPIE regressor.
    n_samples_fit_ : int

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.linear_model import Ridge
    >>> from esm_sklearn import get_space
    >>> from esm_sklearn.conformal import ConformalLatencyRegressor
    >>> from esm_sklearn.encoders import FCCEncoder
    >>> space = get_space("resnet")
    >>> archs = space.sample(300, random_state=0)
    >>> rng = np.random.default_rng(0)
    >>> y = (1 + 0.1 * np.array([sum(a["depth"]) for a in archs])) * rng.lognormal(0, 0.05, 300)
    >>> model = ConformalLatencyRegressor(make_pipeline(FCCEncoder(), Ridge()), random_state=0)
    >>> bounds = model.fit(archs[:200], y[:200]).predict_interval(archs[200:])
    >>> bounds.shape
    (100, 2)
    >>> bool(np.all(bounds[:, 0] <= bounds[:, 1]))
    True
    >>> coverage = np.mean((bounds[:, 0] <= y[200:]) & (y[200:] <= bounds[:, 1]))
    >>> bool(0.8 <= coverage <= 1.0)
    True
    """

    def __init__(
        self,
        estimator=None,
        confidence_level=0.9,
        *,
        method="cross",
        conformity_score="log",
        cv=5,
        calibration_size=0.3,
        random_state=None,
    ):
        self.estimator = estimator
        self.confidence_level = confidence_level
        self.method = method
        self.conformity_score = conformity_score
        self.cv = cv
        self.calibration_size = calibration_size
        self.random_state = random_state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        tags.target_tags.positive_only = True
        return tags

    def _check_params(self) -> None:
        level = self.confidence_level
        if not (isinstance(level, numbers.Real) and not isinstance(level, bool) and 0 < level < 1):
            raise ValueError(f"confidence_level must be a float in (0, 1), got {level!r}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        score = self.conformity_score
        if isinstance(score, str) and score not in SCORES:
            raise ValueError(f"conformity_score must be one of {SCORES} or a MAPIE score, got {score!r}")
        if not isinstance(self.cv, numbers.Integral) or isinstance(self.cv, bool) or self.cv < 2:
            raise ValueError(f"cv must be an int >= 2, got {self.cv!r}")
        size = self.calibration_size
        if not (isinstance(size, numbers.Real) and not isinstance(size, bool) and 0 < size < 1):
            raise ValueError(f"calibration_size must be a float in (0, 1), got {size!r}")

    def _estimator(self):
        if self.estimator is None:
            from .predictors import make_latency_pipeline  # torch only when needed

            estimator = make_latency_pipeline(random_state=self.random_state)
        else:
            estimator = clone(self.estimator)
        return _LogLatencyRegressor(estimator) if self._log else estimator

    @property
    def _log(self) -> bool:
        return isinstance(self.conformity_score, str) and self.conformity_score == "log"

    def _score(self):
        return "absolute" if self._log else self.conformity_score

    def fit(self, X, y):
        """Fit the predictor and conformalize its bounds.

        Parameters
        ----------
        X : sequence of dict or str
            Measured architectures (at least 2; for ``confidence_level=0.9``
            finite bounds need about 10).
        y : array-like of shape (n_samples,)
            Their latencies (ms, > 0 with ``conformity_score="gamma"``).

        Returns
        -------
        self
        """
        from mapie.regression import CrossConformalRegressor, SplitConformalRegressor

        self._check_params()
        archs = as_arch_list(X)
        y = np.asarray(y, dtype=float).reshape(-1)
        n = len(archs)
        if n != len(y):
            raise ValueError(f"X has {n} architectures but y has {len(y)} latencies")
        if n < 2:
            raise ValueError(f"conformal bounds need at least 2 samples, got {n}")
        relative = isinstance(self.conformity_score, str) and self.conformity_score in ("log", "gamma")
        bad = ~np.isfinite(y) | ((y <= 0) if relative else False)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            rule = "positive finite" if relative else "finite"
            raise ValueError(f"y must hold {rule} latencies (ms); y[{i}] = {float(y[i])}")
        seed = check_random_state(self.random_state).randint(2**31 - 1)
        Xo = _as_object_array(archs)
        target = np.log(y) if self._log else y
        if self.method == "cross":
            folds = KFold(min(int(self.cv), n), shuffle=True, random_state=seed)
            self.mapie_ = CrossConformalRegressor(
                self._estimator(), confidence_level=float(self.confidence_level),
                conformity_score=self._score(), method="plus", cv=folds,
            ).fit_conformalize(Xo, target)
        else:
            X_fit, X_cal, y_fit, y_cal = train_test_split(
                Xo, target, test_size=float(self.calibration_size), random_state=seed
            )
            alpha = 1 - float(self.confidence_level)
            # MAPIE's bound on calibration size (one quantile, or two for gamma)
            needed = int(np.ceil((1 if self._score() != "gamma" else 2) / alpha - 1 - 1e-9))
            if len(y_cal) < needed:
                raise ValueError(
                    f"method='split' conformalizes on {len(y_cal)} of the {n} samples "
                    f"(calibration_size={self.calibration_size}); confidence_level="
                    f"{self.confidence_level} needs at least {needed}: give more samples "
                    "or use method='cross'"
                )
            self.mapie_ = SplitConformalRegressor(
                self._estimator(), confidence_level=float(self.confidence_level),
                conformity_score=self._score(), prefit=False,
            ).fit(X_fit, y_fit).conformalize(X_cal, y_cal)
        self.n_samples_fit_ = n
        return self

    def predict(self, X) -> np.ndarray:
        """Point predictions (ms): the mean of the fold models for ``method="cross"``.

        Parameters
        ----------
        X : sequence of dict or str

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        check_is_fitted(self, "mapie_")
        pred = np.asarray(self.mapie_.predict(_as_object_array(as_arch_list(X))), dtype=float)
        return np.exp(pred) if self._log else pred

    def predict_interval(self, X) -> np.ndarray:
        """Lower and upper latency bounds (ms) at ``confidence_level``.

        Where the calibration set is too small for the level (fewer than about
        ``1 / (1 - confidence_level)`` samples) the upper bound is ``inf``; a
        lower bound below 0 is clipped to 0.

        Parameters
        ----------
        X : sequence of dict or str

        Returns
        -------
        ndarray of shape (n_samples, 2)
            Columns: lower bound, upper bound.
        """
        check_is_fitted(self, "mapie_")
        Xo = _as_object_array(as_arch_list(X))
        with warnings.catch_warnings():
            # MAPIE warns when a bound is infinite; the docstring says so.
            warnings.simplefilter("ignore", UserWarning)
            _, bounds = self.mapie_.predict_interval(Xo, allow_infinite_bounds=True)
        bounds = np.asarray(bounds, dtype=float)[:, :, 0]
        if self._log:
            return np.exp(bounds)
        bounds[:, 0] = np.maximum(bounds[:, 0], 0.0)
        return bounds
