"""A new device's latency predictor from a few measurements and other devices' predictors.

:class:`TransferLatencyRegressor` takes fitted latency predictors of other
devices (the *sources*, used frozen) and fits, on a handful of measurements of
the target device, a non-negative combination of their log predictions; as
target samples grow it cross-validates that stack against the stack corrected
by a model of the architecture's own encoding and against a from-scratch model,
and keeps the best. This extends ESM's "cheap prior plus a linear correction"
(lookup table plus bias correction) from a lookup table to other devices.
"""

from __future__ import annotations

import numbers

import numpy as np
from scipy.optimize import nnls
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import KFold
from sklearn.pipeline import Pipeline
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from .encoders import FCCEncoder
from .spaces import as_arch_list, infer_space

__all__ = ["TransferLatencyRegressor", "source_space"]

MODES = ("auto", "stack", "stack+residual", "scratch")
_RESIDUAL_ALPHAS = np.logspace(-3, 4, 15)


def source_space(estimator) -> str | None:
    """Name of the search space a fitted latency predictor was fitted for, if it says.

    Looks at ``setting_["space"]``, ``space_``, and the first step of a
    Pipeline (the encoder's ``space_``); ``None`` when none is present.

    Parameters
    ----------
    estimator : estimator

    Returns
    -------
    str or None
    """
    inner = getattr(estimator, "estimator", None)  # sklearn.frozen.FrozenEstimator
    if inner is not None and type(estimator).__name__ == "FrozenEstimator":
        estimator = inner
    setting = getattr(estimator, "setting_", None)
    if isinstance(setting, dict) and setting.get("space"):
        return str(setting["space"])
    candidates = [estimator]
    if isinstance(estimator, Pipeline):
        candidates.append(estimator.steps[0][1])
    for obj in candidates:
        space = getattr(obj, "space_", None)
        if space is not None:
            return str(getattr(space, "name", space))
    return None


def _default_residual() -> Pipeline:
    # FCC counts -> ridge, penalty by (exact, cheap) leave-one-out. Linear, not on
    # log latency: block latencies add up (HELP FBNet, 100-300 samples: Spearman
    # higher by 0.002-0.011 than a ridge on the log).
    return Pipeline([("encoder", FCCEncoder()), ("regressor", RidgeCV(alphas=_RESIDUAL_ALPHAS))])


class TransferLatencyRegressor(RegressorMixin, BaseEstimator):
    """Latency predictor for a new device built on fitted predictors of other devices.

    The model is ``log y = b + sum_j w_j log s_j(x)`` with ``w_j >= 0``, where
    ``s_j`` are the sources' predictions, fitted by non-negative least squares
    on the centred log predictions with a ridge pull towards equal weights
    ``1/k`` whose penalty ``shrinkage / n**3`` fades as samples ``n`` grow.
    One measurement thus gives the geometric mean of the sources scaled to the
    device; ten give a sparse, non-negative
    combination (the non-negativity selects the sources: most weights are 0).
    With ``min_samples_residual`` or more samples, ``mode="auto"`` chooses by
    ``cv``-fold cross-validation (mean squared log error) among the stack alone,
    the stack times a ``residual`` model of the ratio ``y / stack`` (a model of
    the architecture's own encoding), and the ``residual`` model fitted from
    scratch on ``y``; the choice is refit on all samples.

    Why this design (measured on the HELP FBNet table, 9 sources of the HELP
    protocol fitted with the default pipeline on 4,000 architectures, 20 draws
    of target samples, Spearman on 1,000 held-out architectures;
    ``studies/transfer_study.py`` and ``docs/results/transfer.md``):

    - log space vs linear: non-negative stacking of log predictions beats the
      linear non-negative stack on eyeriss (0.973 vs 0.941 at 10 samples) and
      fpga (0.931 vs 0.925), ties within 0.01 elsewhere; ridge stacking
      (unconstrained weights, LOO penalty) is worse at 10 samples (raspi4 0.879
      vs 0.937): the sign constraint is the useful regulariser.
    - shrinkage towards equal weights: with 2-3 samples it adds 0.02-0.05
      Spearman (raspi4 at 3 samples 0.871 -> 0.923); a penalty that stays at
      10 samples hurts targets served by one source (2080ti_1: fixed 0.01 gives
      0.916, ``0.3 / n**3`` 0.962, none 0.964), hence the fading penalty; a
      leave-one-out choice of the penalty was worse than either.
    - residual model (FCC ridge on ``y / stack``) and from-scratch
      candidates, chosen by 5-fold CV from 20 samples on: the CV mostly keeps
      the stack at 20 samples, where a model of the encoding has too little
      data; at 100 samples the transfer model beats both the stack and
      scratch (fpga 0.954 vs 0.925 and 0.939), at 300 it equals scratch
      (raspi4 0.972, eyeriss 0.983, fpga 0.966) while the stack stays at
      0.93-0.95: never worse than from scratch beyond noise.

    Parameters
    ----------
    sources : list of fitted estimators
        Latency predictors (ms) of other devices, taking the same input
        (architecture dicts) as this model. They are used frozen: ``fit``
        never refits them and :func:`sklearn.base.clone` of this estimator
        keeps them as they are (they may also be wrapped in
        ``sklearn.frozen.FrozenEstimator``).
    residual : "ridge", estimator or None, default="ridge"
        Model of the architecture's encoding: fitted on ``y / stack`` (the
        correction) and, for the from-scratch candidate, on ``y``. ``"ridge"``
        is FCC counts with a ridge regression (penalty by leave-one-out);
        ``esm_sklearn.make_latency_pipeline()`` (the MLP) also works. ``None``:
        stack only.
    mode : {"auto", "stack", "stack+residual", "scratch"}, default="auto"
        ``"auto"``: the cross-validated choice described above; the others
        force one model (``"stack+residual"`` and ``"scratch"`` need
        ``residual`` and at least 2 samples).
    shrinkage : float, default=0.3
        Ridge pull of the log weights towards ``1/k`` (on centred log
        predictions); the penalty is ``shrinkage / n_samples**3``.
    min_samples_residual : int, default=20
        Fewest samples for which ``mode="auto"`` considers the residual and
        from-scratch models.
    cv : int, default=5
        Folds of the cross-validated choice.
    space : str, SearchSpace or None, default=None
        The target's search space; ``None`` reads it from the architectures.
        Every source that names its space must name this one.
    random_state : int, RandomState or None, default=None
        Seeds the folds of the cross-validated choice.

    Attributes
    ----------
    coef_ : ndarray of shape (n_sources,)
        Non-negative weights of the log source predictions.
    intercept_ : float
    mode_ : str
        The model in use: ``"stack"``, ``"stack+residual"`` or ``"scratch"``.
    cv_scores_ : dict
        Cross-validated mean squared log error per candidate (empty when
        nothing was cross-validated).
    residual_ : estimator or None
        The fitted residual (or from-scratch) model.
    space_ : str
        Name of the target's search space.
    sources_ : list
        The sources (the same objects, not copies).
    n_sources_ : int
    n_samples_fit_ : int

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.linear_model import Ridge
    >>> from esm_sklearn import get_space
    >>> from esm_sklearn.encoders import FCCEncoder
    >>> from esm_sklearn.transfer import TransferLatencyRegressor
    >>> space = get_space("mobilenetv3")
    >>> archs = space.sample(300, random_state=0)
    >>> depth = np.array([sum(a["depth"]) for a in archs], dtype=float)
    >>> kernel = np.array([sum(map(sum, a["kernel_size"])) for a in archs], dtype=float)
    >>> source_a = make_pipeline(FCCEncoder(), Ridge()).fit(archs, 1 + depth)
    >>> source_b = make_pipeline(FCCEncoder(), Ridge()).fit(archs, 1 + kernel)
    >>> y = 2.0 * (1 + depth)  # the new device: twice as slow as device a
    >>> model = TransferLatencyRegressor([source_a, source_b]).fit(archs[:10], y[:10])
    >>> model.mode_
    'stack'
    >>> bool(np.mean(np.abs(model.predict(archs[10:]) / y[10:] - 1)) < 0.05)
    True
    """

    def __init__(
        self,
        sources,
        *,
        residual="ridge",
        mode="auto",
        shrinkage=0.3,
        min_samples_residual=20,
        cv=5,
        space=None,
        random_state=None,
    ):
        self.sources = sources
        self.residual = residual
        self.mode = mode
        self.shrinkage = shrinkage
        self.min_samples_residual = min_samples_residual
        self.cv = cv
        self.space = space
        self.random_state = random_state

    def __sklearn_clone__(self):
        # clone() would reset the fitted sources; they are frozen inputs, not
        # parameters to re-learn, so the clone shares them.
        params = self.get_params(deep=False)
        sources = params.pop("sources")
        new = type(self)(sources, **{k: clone(v, safe=False) for k, v in params.items()})
        return new

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        tags.target_tags.positive_only = True
        return tags

    # ------------------------------------------------------------- checking
    def _check_params(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if not (isinstance(self.shrinkage, numbers.Real) and not isinstance(self.shrinkage, bool)
                and self.shrinkage >= 0):
            raise ValueError(f"shrinkage must be a float >= 0, got {self.shrinkage!r}")
        for name, low in (("min_samples_residual", 2), ("cv", 2)):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        if not (self.residual is None or (isinstance(self.residual, str) and self.residual == "ridge")
                or (hasattr(self.residual, "fit") and hasattr(self.residual, "predict"))):
            raise ValueError(f"residual must be 'ridge', an estimator or None, got {self.residual!r}")
        if self.residual is None and self.mode in ("stack+residual", "scratch"):
            raise ValueError(f"mode={self.mode!r} needs a residual model; residual is None")

    def _check_sources(self, space_name: str) -> list:
        sources = self.sources
        if hasattr(sources, "predict") or isinstance(sources, (str, bytes)):
            raise ValueError("sources must be a list of fitted estimators, got a single "
                             f"{type(sources).__name__}; wrap it in a list")
        try:
            sources = list(sources)
        except TypeError:
            raise ValueError(f"sources must be a list of fitted estimators, got {sources!r}") from None
        if not sources:
            raise ValueError("sources is empty; give at least one fitted latency predictor")
        for j, source in enumerate(sources):
            if not hasattr(source, "predict"):
                raise ValueError(f"sources[{j}] has no predict method: {type(source).__name__}")
            try:
                check_is_fitted(source)
            except NotFittedError:
                raise ValueError(
                    f"sources[{j}] ({type(source).__name__}) is not fitted; sources are "
                    "used frozen, fit each on its own device's measurements first"
                ) from None
            name = source_space(source)
            if name is not None and name != space_name:
                raise ValueError(
                    f"sources[{j}] was fitted for space {name!r}, but the target "
                    f"architectures are of space {space_name!r}"
                )
        return sources

    def _log_sources(self, archs) -> np.ndarray:
        cols = []
        for j, source in enumerate(self.sources_):
            pred = np.asarray(source.predict(archs), dtype=float).reshape(-1)
            bad = ~(np.isfinite(pred) & (pred > 0))
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise ValueError(
                    f"sources[{j}] predicted {float(pred[i])} ms for architecture {i}; "
                    "the stack needs positive finite latencies"
                )
            cols.append(np.log(pred))
        return np.column_stack(cols)

    # ----------------------------------------------------------------- fit
    def _fit_stack(self, L: np.ndarray, log_y: np.ndarray) -> tuple[np.ndarray, float]:
        k = L.shape[1]
        mean = L.mean(axis=0)
        lam = np.sqrt(float(self.shrinkage) / len(log_y) ** 3)
        design = np.vstack([L - mean, lam * np.eye(k)])
        target = np.concatenate([log_y - log_y.mean(), np.full(k, lam / k)])
        coef, _ = nnls(design, target)
        return coef, float(log_y.mean() - mean @ coef)

    def _residual_model(self):
        return _default_residual() if isinstance(self.residual, str) else clone(self.residual)

    def _fit_candidate(self, mode: str, archs, L, y):
        coef, intercept = self._fit_stack(L, np.log(y))
        if mode == "stack":
            return coef, intercept, None
        model = self._residual_model()
        if mode == "scratch":
            return coef, intercept, model.fit(archs, y)
        stack = np.exp(L @ coef + intercept)
        return coef, intercept, model.fit(archs, y / stack)

    @staticmethod
    def _predict_candidate(mode, fitted, archs, L) -> np.ndarray:
        coef, intercept, model = fitted
        if mode == "scratch":
            return np.asarray(model.predict(archs), dtype=float)
        out = np.exp(L @ coef + intercept)
        if mode == "stack+residual":
            out = out * np.asarray(model.predict(archs), dtype=float)
        return out

    def _cv_scores(self, candidates, archs, L, y) -> dict:
        folds = KFold(min(self.cv, len(y)), shuffle=True,
                      random_state=check_random_state(self.random_state).randint(2**31 - 1))
        errors = {mode: [] for mode in candidates}
        for train, test in folds.split(L):
            sub = [archs[i] for i in train]
            held = [archs[i] for i in test]
            for mode in candidates:
                fitted = self._fit_candidate(mode, sub, L[train], y[train])
                pred = self._predict_candidate(mode, fitted, held, L[test])
                with np.errstate(divide="ignore", invalid="ignore"):
                    err = np.log(np.where(pred > 0, pred, np.nan)) - np.log(y[test])
                errors[mode].append(np.where(np.isfinite(err), err, 1e3) ** 2)
        return {mode: float(np.mean(np.concatenate(e))) for mode, e in errors.items()}

    def fit(self, X, y):
        """Fit the stack (and, by cross-validation, a residual model) on target samples.

        Parameters
        ----------
        X : sequence of dict or str
            At least one architecture measured on the target device.
        y : array-like of shape (n_samples,)
            Their latencies (ms, > 0).

        Returns
        -------
        self
        """
        self._check_params()
        archs = as_arch_list(X)
        y = np.asarray(y, dtype=float).reshape(-1)
        if len(archs) == 0:
            raise ValueError("X is empty; give at least one measured architecture")
        if len(archs) != len(y):
            raise ValueError(f"X has {len(archs)} architectures but y has {len(y)} latencies")
        bad = ~(np.isfinite(y) & (y > 0))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"y must hold positive finite latencies (ms); y[{i}] = {float(y[i])}")
        space_name = infer_space(archs, self.space).name
        self.sources_ = self._check_sources(space_name)
        L = self._log_sources(archs)
        n = len(y)
        if self.mode == "auto":
            candidates = ["stack"]
            if self.residual is not None and n >= self.min_samples_residual:
                candidates += ["stack+residual", "scratch"]
        else:
            if self.mode != "stack" and n < 2:
                raise ValueError(f"mode={self.mode!r} needs at least 2 samples, got {n}")
            candidates = [self.mode]
        self.cv_scores_ = self._cv_scores(candidates, archs, L, y) if len(candidates) > 1 else {}
        self.mode_ = min(self.cv_scores_, key=self.cv_scores_.get) if self.cv_scores_ else candidates[0]
        self.coef_, self.intercept_, self.residual_ = self._fit_candidate(self.mode_, archs, L, y)
        self.space_ = space_name
        self.n_sources_ = len(self.sources_)
        self.n_samples_fit_ = n
        return self

    def predict(self, X) -> np.ndarray:
        """Predicted latencies (ms) on the target device.

        Parameters
        ----------
        X : sequence of dict or str

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        check_is_fitted(self, "coef_")
        archs = as_arch_list(X)
        if len(archs) == 0:
            return np.empty(0)
        L = self._log_sources(archs) if self.mode_ != "scratch" else None
        return self._predict_candidate(self.mode_, (self.coef_, self.intercept_, self.residual_),
                                       archs, L)
