"""Latency predictors: :class:`MLPLatencyRegressor` and :func:`make_latency_pipeline`.

The ESM paper's predictor is an MLP (three fully connected layers of width 64,
ReLU, MSE loss, Adam with lr 0.01 and weight decay 1e-4) on FCC features.
Trained as written, on raw counts and raw milliseconds, it loses to a plain
ridge regression on the same features: latency is close to linear in the
block counts, measured latencies are noisy, and the accuracy that matters is
relative (``1 - MAPE``). :class:`MLPLatencyRegressor` keeps the paper's network
and optimiser and adds what makes it win by default:

- inputs standardised inside the module (``x_mean_``, ``x_scale_``);
- the loss taken on the relative error, ``MSE(y_pred / y, 1)``, with targets
  scaled by their mean;
- a linear path, solved in closed form (ridge, weighted for relative error)
  before training; the MLP multiplies it by ``exp(mlp(x))`` and starts at
  zero, so training begins at the best linear model and the MLP learns only
  the interactions a sum of block latencies cannot express (e.g. input
  resolution times blocks);
- a cosine learning-rate decay and early stopping on a validation split that
  keeps the best epoch, the linear start included, and accepts an epoch only
  if it beats the kept one by more than a standard error: on data without
  learnable interactions the MLP stays switched off instead of fitting noise.

The ablation that chose this design (other target scalings, an additive or no
linear path, no learning-rate schedule) lives in
``benchmarks/check_default_vs_baselines.py --ablation``, not in the product.
"""

from __future__ import annotations

import contextlib
import copy
import numbers

import numpy as np
import torch
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import LinearRegression, Ridge, RidgeCV
from sklearn.pipeline import Pipeline
from sklearn.utils import check_random_state
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted, validate_data
from skorch.callbacks import Callback, LRScheduler
from skorch.dataset import Dataset
from skorch.regressor import NeuralNetRegressor
from skorch.utils import to_tensor
from torch import nn

from ._validation import check_int, check_real, plain
from .encoders import (
    FCCEncoder,
    FeatureCountEncoder,
    FeatureEncoder,
    LookupTableEncoder,
    OneHotArchEncoder,
    StatisticalEncoder,
)

__all__ = [
    "LatencyMLP",
    "ArrayBatchIterator",
    "MLPLatencyRegressor",
    "make_latency_pipeline",
    "ENCODINGS",
    "REGRESSORS",
]

_AUTO_ALPHAS = np.logspace(-3, 3, 13)


@contextlib.contextmanager
def _torch_threads(n: int | None):
    """Run with ``n`` torch intra-op threads (None: unchanged), restoring the setting after."""
    old = torch.get_num_threads()
    if n is None or n == old:
        yield
        return
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


class LatencyMLP(nn.Module):
    """The paper's MLP on standardised inputs, multiplying a linear path.

    ``z = (X - in_mean) / in_scale``; ``mlp`` is ``n_layers`` hidden layers of
    ``hidden_units`` ReLU units and a linear output; the output is
    ``linear(z) * exp(mlp(z))``. The last layer of ``mlp`` starts at zero, so
    the untrained module is the linear model and training learns only how
    latency departs from a sum of block costs.

    Parameters
    ----------
    n_features : int
        Input width (set by :class:`MLPLatencyRegressor` from the data).
    hidden_units : int, default=64
    n_layers : int, default=3
        Hidden layers; 0 leaves a single linear layer.
    dropout : float, default=0.0
        Dropout after every hidden activation.
    """

    def __init__(self, n_features: int, hidden_units: int = 64, n_layers: int = 3,
                 dropout: float = 0.0):
        super().__init__()
        check_int(n_features, "LatencyMLP: n_features", low=1)
        check_int(hidden_units, "LatencyMLP: hidden_units", low=1)
        check_int(n_layers, "LatencyMLP: n_layers", low=0)
        check_real(dropout, "LatencyMLP: dropout", low=0, high=1, high_open=True)
        self.register_buffer("in_mean", torch.zeros(n_features))
        self.register_buffer("in_scale", torch.ones(n_features))
        layers: list[nn.Module] = []
        width = n_features
        for _ in range(n_layers):
            layers += [nn.Linear(width, hidden_units), nn.ReLU()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = hidden_units
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)
        self.linear = nn.Linear(n_features, 1)
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, X):
        z = (X - self.in_mean) / self.in_scale
        return self.linear(z) * torch.exp(self.mlp(z))


class ArrayBatchIterator:
    """Mini-batches of a skorch ``Dataset`` of arrays by slicing, not per item.

    A drop-in for ``torch.utils.data.DataLoader`` as skorch's
    ``iterator_train`` / ``iterator_valid``: per-item indexing and collation
    cost more than the step of a small MLP. Shuffling draws from torch's
    global generator, which :class:`MLPLatencyRegressor` seeds in ``fit``.
    Datasets other than a skorch ``Dataset`` of arrays fall back to a
    ``DataLoader``.
    """

    def __init__(self, dataset, batch_size: int = 128, shuffle: bool = False, **loader_kwargs):
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.loader_kwargs = loader_kwargs
        X = getattr(dataset, "X", None)
        y = getattr(dataset, "y", None)
        arrays = isinstance(dataset, Dataset) and all(
            isinstance(a, (np.ndarray, torch.Tensor)) for a in (X, y)
        )
        self._tensors = (torch.as_tensor(X), torch.as_tensor(y)) if arrays else None

    def __len__(self) -> int:
        return -(-len(self.dataset) // self.batch_size)

    def __iter__(self):
        if self._tensors is None:
            yield from torch.utils.data.DataLoader(
                self.dataset, batch_size=self.batch_size, shuffle=self.shuffle, **self.loader_kwargs
            )
            return
        X, y = self._tensors
        n = len(X)
        if self.shuffle:
            order = torch.randperm(n)
            for start in range(0, n, self.batch_size):
                index = order[start : start + self.batch_size]
                yield X[index], y[index]
        else:
            for start in range(0, n, self.batch_size):
                yield X[start : start + self.batch_size], y[start : start + self.batch_size]


class _KeepBestEpoch(Callback):
    """Early stopping that keeps the best weights, the starting ones included.

    Before the first epoch it computes the per-sample validation losses of the
    untrained module (with a linear path: the closed-form linear model). After
    each epoch it replaces the kept weights only if the mean validation loss
    is lower by more than ``n_se`` standard errors of the paired per-sample
    difference (the one-standard-error rule: a small validation set must not
    trade a good model for noise); it stops after ``patience`` epochs without
    such an improvement and restores the kept weights at the end.
    """

    def __init__(self, patience: int = 20, n_se: float = 1.0):
        self.patience = patience
        self.n_se = n_se

    def initialize(self):
        self.best_losses_ = None
        self.best_epoch_ = None
        self.best_state_ = None
        self.wait_ = 0
        return self

    def on_train_begin(self, net, **kwargs):
        self.initialize()

    @staticmethod
    def _sample_losses(net, dataset) -> np.ndarray:
        criterion = copy.copy(net.criterion_)
        if hasattr(criterion, "reduction"):
            criterion.reduction = "none"
        losses = []
        for batch in net.get_iterator(dataset, training=False):
            Xi, yi = batch
            with torch.no_grad():
                y_pred = net.evaluation_step(batch, training=False)
                y_pred, y_true = net.loss_inputs(y_pred, to_tensor(yi, device=net.device))
                loss = criterion(y_pred, y_true)
            if loss.ndim == 0:  # a criterion without per-sample reduction
                loss = (y_pred - y_true) ** 2
            losses.append(loss.reshape(len(y_true), -1).mean(dim=1).cpu().numpy())
        return np.concatenate(losses).astype(np.float64)

    def _keep(self, net, losses, epoch):
        self.best_losses_ = losses
        self.best_epoch_ = epoch
        self.best_state_ = copy.deepcopy(net.module_.state_dict())
        self.wait_ = 0

    def on_epoch_begin(self, net, dataset_valid=None, **kwargs):
        if self.best_losses_ is None and dataset_valid is not None:
            self._keep(net, self._sample_losses(net, dataset_valid), len(net.history) - 1)

    def on_epoch_end(self, net, dataset_valid=None, **kwargs):
        if dataset_valid is None:
            return
        losses = self._sample_losses(net, dataset_valid)
        gain = self.best_losses_ - losses
        se = gain.std(ddof=1) / np.sqrt(len(gain)) if len(gain) > 1 else 0.0
        if gain.mean() > self.n_se * se:
            self._keep(net, losses, len(net.history))
            return
        self.wait_ += 1
        if self.wait_ >= self.patience:
            if net.verbose:
                print(f"Stopping: no significant validation improvement for {self.patience} "
                      f"epochs; keeping epoch {self.best_epoch_}.")
            raise KeyboardInterrupt

    def on_train_end(self, net, **kwargs):
        if self.best_state_ is not None:
            net.module_.load_state_dict(self.best_state_)
        self.best_state_ = None  # the weights live in the module; keep the pickle small
        self.best_losses_ = None


class MLPLatencyRegressor(NeuralNetRegressor):
    """The ESM paper's MLP latency predictor as a skorch ``NeuralNetRegressor``.

    Defaults: the paper's network (``module__n_layers=3`` hidden layers of
    ``module__hidden_units=64`` ReLU units), MSE, Adam with ``lr=0.01`` and
    ``optimizer__weight_decay=1e-4``; plus input standardisation, a loss on the
    relative error, a closed-form linear path the MLP corrects multiplicatively
    (``linear_init_alpha``), cosine learning-rate decay and early stopping that
    keeps the best epoch. See the module docstring for why. Every skorch parameter (``module__*``,
    ``optimizer__*``, ``callbacks``, ``device``...) works as usual.

    Parameters
    ----------
    module : torch module class, default=LatencyMLP
        Built with ``n_features`` (the input width) and the ``module__*``
        parameters.
    criterion : torch loss class, default=torch.nn.MSELoss
        Compares ``y_pred / y`` with 1 (the relative error).
    optimizer : torch optimizer class, default=torch.optim.Adam
    lr : float, default=0.01
    max_epochs : int, default=100
    batch_size : int, default=64
        Training batch size; prediction uses ``predict_batch_size``.
    optimizer__weight_decay : float, default=1e-4
    module__hidden_units, module__n_layers, module__dropout
        Passed to :class:`LatencyMLP` (defaults 64, 3, 0.0).
    linear_init_alpha : "auto" or float, default="auto"
        Ridge penalty of the closed-form fit of the linear path on the
        standardised inputs, weighted by ``1 / y**2`` so that it minimises the
        relative error; ``"auto"`` picks it from ``logspace(-3, 3, 13)`` by
        leave-one-out error (``RidgeCV``). The optimiser leaves the linear
        path as solved and trains the MLP on top of it.
    early_stopping : bool, default=True
        Hold out ``validation_fraction`` of the data (the closed-form linear
        path still sees all of it) and keep the best epoch, epoch 0 (the
        starting model) included; stop after ``n_iter_no_change`` epochs
        without improvement.
    validation_fraction : float, default=0.2
    n_iter_no_change : int, default=20
    improvement_se : float, default=1.0
        An epoch counts as better than the kept one only if its mean
        validation loss is lower by more than this many standard errors of
        the paired per-sample difference (the one-standard-error rule), so a
        small validation set does not trade a good model for noise; 0 accepts
        any improvement.
    predict_batch_size : int, default=65536
    predict_threads : int or None, default=1
        Torch intra-op threads while predicting (the process setting is restored
        after). One thread is fastest for this small MLP at every batch size
        (``benchmarks/bench_nas_ops.py``: 2-20x faster than two threads on a
        busy machine) and makes ``predict`` safe in a worker started by fork
        after the parent used torch with more threads (GNU OpenMP, which torch
        uses on Linux, hangs there otherwise). None: torch's current setting.
    random_state : int, RandomState or None, default=None
        Seeds weights, shuffling, dropout and the validation split (torch's
        global generator is restored after ``fit``); equal seeds give
        identical predictions.
    train_split : callable or None, default=None
        skorch's internal split, used only when ``early_stopping=False``.
    iterator_train, iterator_valid : default=ArrayBatchIterator
    verbose : int, default=0
    device : str, default="cpu"
    **kwargs
        Further skorch parameters (``callbacks``, ``warm_start``, ``module__*``...).

    Attributes
    ----------
    n_features_in_ : int
    x_mean_, x_scale_ : ndarray of shape (n_features_in_,)
        Input standardisation (also buffers of ``module_``).
    y_scale_ : float
        The network fits ``y / y_scale_`` (the mean training latency).
    linear_alpha_ : float
        Ridge penalty used for the linear path.
    best_epoch_ : int or None
        Epoch kept by early stopping (0 = the starting model).
    module_, optimizer_, history_ : as in skorch.

    Examples
    --------
    >>> import numpy as np
    >>> from esm_sklearn import MLPLatencyRegressor
    >>> rng = np.random.default_rng(0)
    >>> X = rng.integers(0, 4, size=(200, 6))
    >>> y = 1.0 + X @ np.array([0.5, 0.3, 0.2, 0.1, 0.4, 0.6])
    >>> reg = MLPLatencyRegressor(max_epochs=10, random_state=0).fit(X, y)
    >>> bool(np.abs(reg.predict(X) / y - 1).mean() < 0.05)
    True
    """

    def __init__(
        self,
        module=LatencyMLP,
        *,
        criterion=nn.MSELoss,
        optimizer=torch.optim.Adam,
        lr=0.01,
        max_epochs=100,
        batch_size=64,
        optimizer__weight_decay=1e-4,
        module__hidden_units=64,
        module__n_layers=3,
        module__dropout=0.0,
        linear_init_alpha="auto",
        early_stopping=True,
        validation_fraction=0.2,
        n_iter_no_change=20,
        improvement_se=1.0,
        predict_batch_size=65536,
        predict_threads=1,
        random_state=None,
        train_split=None,
        iterator_train=ArrayBatchIterator,
        iterator_valid=ArrayBatchIterator,
        iterator_train__shuffle=True,
        verbose=0,
        device="cpu",
        **kwargs,
    ):
        super().__init__(
            module,
            criterion=criterion,
            optimizer=optimizer,
            lr=lr,
            max_epochs=max_epochs,
            batch_size=batch_size,
            train_split=train_split,
            iterator_train=iterator_train,
            iterator_valid=iterator_valid,
            verbose=verbose,
            device=device,
            optimizer__weight_decay=optimizer__weight_decay,
            module__hidden_units=module__hidden_units,
            module__n_layers=module__n_layers,
            module__dropout=module__dropout,
            iterator_train__shuffle=iterator_train__shuffle,
            **kwargs,
        )
        self.linear_init_alpha = linear_init_alpha
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.improvement_se = improvement_se
        self.predict_batch_size = predict_batch_size
        self.predict_threads = predict_threads
        self.random_state = random_state

    # ------------------------------------------------------------ skorch hooks
    def get_params(self, deep=True):
        # skorch lists its private bookkeeping set among the parameters; it is
        # not one (set_params/clone rebuild it), so keep it out of repr and clone.
        params = super().get_params(deep=deep)
        params.pop("_params_to_validate", None)
        return params

    @property
    def _default_callbacks(self):
        # Read by get_params(deep=True) too, so it must not raise on odd values.
        callbacks = list(super()._default_callbacks)
        epochs = self.max_epochs
        t_max = int(epochs) if isinstance(epochs, numbers.Integral) and epochs > 0 else 1
        callbacks.append((
            "lr_scheduler",
            LRScheduler(policy=torch.optim.lr_scheduler.CosineAnnealingLR, T_max=t_max),
        ))
        if isinstance(self.early_stopping, (bool, np.bool_)) and self.early_stopping:
            callbacks.append((
                "early_stopping", _KeepBestEpoch(patience=self.n_iter_no_change, n_se=self.improvement_se)
            ))
        return callbacks

    def initialize_module(self):
        kwargs = self.get_params_for("module")
        if "n_features" not in kwargs:
            if not hasattr(self, "n_features_in_"):
                raise ValueError(
                    "MLPLatencyRegressor: the module's input width is known only after fit; "
                    "call fit (or pass module__n_features)"
                )
            kwargs["n_features"] = self.n_features_in_
        self.module_ = self.initialized_instance(self.module, kwargs)
        return self

    def get_split_datasets(self, X, y=None, **fit_params):
        if not self.early_stopping:
            return super().get_split_datasets(X, y, **fit_params)
        n = len(X)
        n_valid = int(round(self.validation_fraction * n))
        n_valid = min(max(n_valid, 1), n - 1)
        order = torch.randperm(n).numpy()
        valid, train = np.sort(order[:n_valid]), np.sort(order[n_valid:])
        return self.get_dataset(X[train], y[train]), self.get_dataset(X[valid], y[valid])

    def get_loss(self, y_pred, y_true, X=None, training=False):
        return self.criterion_(*self.loss_inputs(y_pred, to_tensor(y_true, device=self.device)))

    @staticmethod
    def loss_inputs(y_pred, y_true):
        """What the criterion compares: ``y_pred / y_true`` with 1 (the relative error)."""
        return y_pred / y_true, torch.ones_like(y_true)

    # A regressor has no class probabilities; skorch's predict_proba would return
    # the module's raw output (scaled target space), so it is hidden.
    @available_if(lambda self: False)
    def predict_proba(self, X):  # pragma: no cover - never reachable
        raise AttributeError("predict_proba")

    def __sklearn_is_fitted__(self) -> bool:
        return bool(getattr(self, "initialized_", False)) and hasattr(self, "y_scale_")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.input_tags.sparse = False
        tags.target_tags.single_output = True
        tags.target_tags.multi_output = False
        tags.target_tags.positive_only = True
        tags.non_deterministic = self.random_state is None
        return tags

    @property
    def best_epoch_(self) -> int | None:
        for name, callback in getattr(self, "callbacks_", []):
            if name == "early_stopping":
                return callback.best_epoch_
        return None

    # --------------------------------------------------------------- checking
    def _check_params(self) -> None:
        if not (isinstance(self.linear_init_alpha, str) and self.linear_init_alpha == "auto"):
            try:
                check_real(self.linear_init_alpha, "linear_init_alpha", low=0)
            except ValueError:
                raise ValueError("linear_init_alpha must be 'auto' or a float >= 0, got "
                                 f"{plain(self.linear_init_alpha)}") from None
        if self.early_stopping:
            check_real(self.validation_fraction, "validation_fraction", low=0, high=1,
                       low_open=True, high_open=True)
            check_int(self.n_iter_no_change, "n_iter_no_change", low=1)
            check_real(self.improvement_se, "improvement_se", low=0)
        check_int(self.max_epochs, "max_epochs", low=0)
        check_int(self.predict_batch_size, "predict_batch_size", low=1)
        check_int(self.predict_threads, "predict_threads", low=1, allow_none=True)
        if self.batch_size != -1:
            try:
                check_int(self.batch_size, "batch_size", low=1)
            except ValueError:
                raise ValueError("batch_size must be an int >= 1 or -1 (whole data), got "
                                 f"{plain(self.batch_size)}") from None

    def _fit_target(self, y: np.ndarray) -> np.ndarray:
        """Set ``y_scale_`` (the mean latency) from ``y``; return the training target."""
        self._check_target(y)
        self.y_scale_ = float(np.mean(y))
        return y / self.y_scale_

    @staticmethod
    def _check_target(y: np.ndarray) -> None:
        bad = ~(y > 0) | ~np.isfinite(y)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"latencies must be finite and > 0; y holds {int(bad.sum())} other value(s), "
                f"first {float(y[i])!r} at index {i}"
            )

    def _init_linear(self, Z: np.ndarray, t: np.ndarray) -> None:
        """Closed-form ridge fit of the linear path, weighted 1/t**2 (relative error)."""
        weights = 1.0 / t**2
        weights = weights / weights.mean()
        if isinstance(self.linear_init_alpha, str):  # "auto": weighted leave-one-out
            ridge = RidgeCV(alphas=_AUTO_ALPHAS)
        else:
            ridge = Ridge(alpha=float(self.linear_init_alpha))
        ridge.fit(Z, t, sample_weight=weights)
        self.linear_alpha_ = float(ridge.alpha_ if hasattr(ridge, "alpha_") else ridge.alpha)
        linear = self.module_.linear
        with torch.no_grad():
            linear.weight.copy_(torch.as_tensor(ridge.coef_[None, :], dtype=linear.weight.dtype))
            linear.bias.fill_(float(ridge.intercept_))
        linear.requires_grad_(False)

    def _rng_context(self):
        if self.random_state is None:
            return contextlib.nullcontext(), None
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        device = torch.device(self.device)
        devices = [device.index or 0] if device.type == "cuda" else []
        return torch.random.fork_rng(devices=devices), seed

    # ------------------------------------------------------------------ fit
    def fit(self, X, y, **fit_params):
        """Standardise, fit the linear path, then train the MLP.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Numeric features (any float or int dtype; cast to float32).
        y : array-like of shape (n_samples,)
            Latencies (ms).
        **fit_params
            Passed to skorch's ``partial_fit``.

        Returns
        -------
        self
        """
        # warm_start keeps the fitted scaling and weights and trains on.
        return self._fit(X, y, self.warm_start is True and self.__sklearn_is_fitted__(), fit_params)

    def partial_fit(self, X, y=None, classes=None, **fit_params):
        """Train ``max_epochs`` more epochs; the first call initialises like ``fit``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        classes : ignored
        **fit_params
            Passed to skorch's ``partial_fit``.

        Returns
        -------
        self
        """
        return self._fit(X, y, self.__sklearn_is_fitted__(), fit_params)

    def _fit(self, X, y, keep: bool, fit_params: dict):
        self._check_params()
        X, y = validate_data(self, X, y, dtype=np.float64, y_numeric=True, reset=not keep)
        if self.early_stopping and X.shape[0] < 2:
            raise ValueError(
                f"n_samples={X.shape[0]}: early_stopping needs at least 2 samples "
                "(one to train, one to validate)"
            )
        if keep:
            self._check_target(y)
            t = y / self.y_scale_
        else:
            self.x_mean_ = X.mean(axis=0)
            scale = X.std(axis=0)
            self.x_scale_ = np.where(scale > 0, scale, 1.0)
            t = self._fit_target(y)
        context, seed = self._rng_context()
        with context:
            if seed is not None:
                torch.manual_seed(seed)
            if not keep:
                self.initialize()
                module = self.module_
                module.in_mean.copy_(torch.as_tensor(self.x_mean_, dtype=module.in_mean.dtype))
                module.in_scale.copy_(torch.as_tensor(self.x_scale_, dtype=module.in_scale.dtype))
                self._init_linear((X - self.x_mean_) / self.x_scale_, t)
            super().partial_fit(X.astype(np.float32), t.astype(np.float32)[:, None], **fit_params)
        return self

    # -------------------------------------------------------------- predict
    def predict(self, X) -> np.ndarray:
        """Predicted latencies (ms) as a 1-D float64 array.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float32, order="C")
        module = self.module_
        if module.training:  # eval() walks every submodule: skip it when already set
            module.eval()
        out = np.empty(X.shape[0], dtype=np.float64)
        step = int(self.predict_batch_size)
        with torch.inference_mode(), _torch_threads(self.predict_threads):
            for start in range(0, X.shape[0], step):
                chunk = X[start : start + step]
                if not chunk.flags.writeable:  # torch warns on read-only memory
                    chunk = chunk.copy()
                batch = torch.from_numpy(chunk).to(self.device)
                out[start : start + step] = module(batch)[:, 0].cpu().numpy()
        return out * self.y_scale_


# ---------------------------------------------------------------- pipelines
ENCODINGS = {
    "fcc": FCCEncoder,
    "fc": FeatureCountEncoder,
    "fe": FeatureEncoder,
    "onehot": OneHotArchEncoder,
    "stat": StatisticalEncoder,
    "lut": LookupTableEncoder,
}
REGRESSORS = ("mlp", "ridge", "gbm", "linear")


def _make_regressor(name: str, random_state, kw: dict):
    if name == "mlp":
        return MLPLatencyRegressor(random_state=random_state, **kw)
    if name == "ridge":
        return Ridge(**{"alpha": 1.0, **kw})
    if name == "gbm":
        return HistGradientBoostingRegressor(random_state=random_state, **kw)
    return LinearRegression(**kw)


def make_latency_pipeline(
    encoding="fcc",
    regressor="mlp",
    space=None,
    lut_table=None,
    random_state=None,
    **kw,
) -> Pipeline:
    """A Pipeline ``encoder -> regressor`` from architectures to latency (ms).

    Parameters
    ----------
    encoding : {"fcc", "fc", "fe", "onehot", "stat", "lut"} or transformer, default="fcc"
        ``FCCEncoder``, ``FeatureCountEncoder``, ``FeatureEncoder``,
        ``OneHotArchEncoder``, ``StatisticalEncoder`` or
        ``LookupTableEncoder(lut_table)``; an estimator is used as given.
    regressor : {"mlp", "ridge", "gbm", "linear"} or estimator, default="mlp"
        :class:`MLPLatencyRegressor`, ``Ridge(alpha=1.0)``,
        ``HistGradientBoostingRegressor`` or ``LinearRegression`` (with
        ``encoding="lut"``: the paper's lookup table with a linear bias
        correction); an estimator is used as given.
    space : str, SearchSpace or None, default=None
        Passed to the encoder (``None``: inferred from the data in ``fit``).
    lut_table : DataFrame or path, optional
        Per-block latencies for ``encoding="lut"``.
    random_state : int, RandomState or None, default=None
        Seeds the MLP or the gradient boosting.
    **kw
        Parameters of the named regressor, e.g. ``max_epochs=50``.

    Returns
    -------
    Pipeline
        Steps ``"encoder"`` and ``"regressor"``, so ``GridSearchCV`` can swap
        them (``param_grid={"encoder": [...], "regressor": [...]}``).

    Examples
    --------
    >>> from esm_sklearn import make_latency_pipeline
    >>> pipe = make_latency_pipeline("fcc", "ridge")
    >>> [name for name, _ in pipe.steps]
    ['encoder', 'regressor']
    """
    if isinstance(encoding, str):
        if encoding not in ENCODINGS:
            raise ValueError(f"unknown encoding {encoding!r}; choose from {sorted(ENCODINGS)}")
        if encoding == "lut":
            if lut_table is None:
                raise ValueError("encoding='lut' needs lut_table (per-block latencies)")
            encoder = LookupTableEncoder(lut_table, space=space)
        else:
            if lut_table is not None:
                raise ValueError(f"lut_table is used only with encoding='lut', not {encoding!r}")
            encoder = ENCODINGS[encoding](space=space)
    elif hasattr(encoding, "fit") and hasattr(encoding, "transform"):
        encoder = encoding
    else:
        raise ValueError(f"encoding must be one of {sorted(ENCODINGS)} or a transformer, got {encoding!r}")

    if isinstance(regressor, str):
        if regressor not in REGRESSORS:
            raise ValueError(f"unknown regressor {regressor!r}; choose from {list(REGRESSORS)}")
        model = _make_regressor(regressor, random_state, kw)
    elif hasattr(regressor, "fit") and hasattr(regressor, "predict"):
        if kw:
            raise ValueError(f"regressor parameters {sorted(kw)} given with a regressor instance")
        model = regressor
    else:
        raise ValueError(f"regressor must be one of {list(REGRESSORS)} or an estimator, got {regressor!r}")
    return Pipeline([("encoder", encoder), ("regressor", model)])
