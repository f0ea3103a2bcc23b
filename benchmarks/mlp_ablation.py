"""The ablation variants of :class:`~esm_sklearn.MLPLatencyRegressor`.

The product ships one design (relative loss, closed-form linear path times
``exp(mlp)``, cosine schedule, standard-error early stopping). To show why, the
ablation in ``check_default_vs_baselines.py --ablation`` walks from the paper's
bare recipe to it, one change at a time; the switches it needs live here:

- ``standardize``: standardise the inputs inside the module or feed raw counts;
- ``skip``: ``"multiplicative"`` (the default), ``"additive"`` or ``None`` (no
  linear path, the paper's network);
- ``target``: ``"relative"`` (the default), ``"log"``, ``"standardize"`` or
  ``None`` (raw milliseconds with MSE, the paper's);
- ``linear_init_alpha=None``: leave the linear path to the optimiser;
- ``lr_schedule=None``: a constant learning rate.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import RidgeCV
from torch import nn

from esm_sklearn.predictors import LatencyMLP, MLPLatencyRegressor


class AblationMLP(LatencyMLP):
    """:class:`LatencyMLP` with the linear path and the standardisation optional."""

    def __init__(self, n_features, hidden_units=64, n_layers=3, dropout=0.0,
                 skip="multiplicative", standardize=True):
        super().__init__(n_features, hidden_units, n_layers, dropout)
        self.skip, self.standardize = skip, standardize
        if skip is None:
            self.linear = None
            last = self.mlp[-1]
            nn.init.kaiming_uniform_(last.weight, a=5**0.5)  # torch's default init
            nn.init.uniform_(last.bias, -1 / last.in_features**0.5, 1 / last.in_features**0.5)

    def forward(self, X):
        z = (X - self.in_mean) / self.in_scale if self.standardize else X
        out = self.mlp(z)
        if self.skip == "multiplicative":
            return self.linear(z) * torch.exp(out)
        if self.skip == "additive":
            return self.linear(z) + out
        return out


class AblationMLPRegressor(MLPLatencyRegressor):
    """:class:`MLPLatencyRegressor` with the target and schedule of each ablation step."""

    def __init__(self, module=AblationMLP, *, target="relative", lr_schedule="cosine",
                 module__skip="multiplicative", module__standardize=True, **kwargs):
        super().__init__(module, module__skip=module__skip,
                         module__standardize=module__standardize, **kwargs)
        self.target = target
        self.lr_schedule = lr_schedule

    @property
    def _default_callbacks(self):
        callbacks = super()._default_callbacks
        if self.lr_schedule is None:
            callbacks = [(name, cb) for name, cb in callbacks if name != "lr_scheduler"]
        return callbacks

    def loss_inputs(self, y_pred, y_true):
        if self.target == "relative":
            return super().loss_inputs(y_pred, y_true)
        return y_pred, y_true

    def _fit_target(self, y):
        self._check_target(y)
        g = np.log(y) if self.target == "log" else y
        if self.target in ("log", "standardize"):
            self.y_offset_, self.y_scale_ = float(g.mean()), float(g.std()) or 1.0
        elif self.target == "relative":
            self.y_offset_, self.y_scale_ = 0.0, float(g.mean())
        else:
            self.y_offset_, self.y_scale_ = 0.0, 1.0
        return (g - self.y_offset_) / self.y_scale_

    def _init_linear(self, Z, t):
        module = self.module_
        if module.linear is None or self.linear_init_alpha is None:
            return  # no linear path, or one left to the optimiser
        if self.target == "relative":
            return super()._init_linear(Z, t)
        ridge = RidgeCV(alphas=np.logspace(-3, 3, 13)).fit(Z, t)  # unweighted: not a relative loss
        self.linear_alpha_ = float(ridge.alpha_)
        with torch.no_grad():
            module.linear.weight.copy_(torch.as_tensor(ridge.coef_[None, :], dtype=torch.float32))
            module.linear.bias.fill_(float(ridge.intercept_))
        module.linear.requires_grad_(False)

    def _check_params(self):
        alpha = self.linear_init_alpha
        self.linear_init_alpha = "auto" if alpha is None else alpha
        try:
            super()._check_params()
        finally:
            self.linear_init_alpha = alpha

    def predict(self, X):
        out = super().predict(X) / self.y_scale_  # back to the network's output scale
        g = out * self.y_scale_ + self.y_offset_
        return np.exp(g) if self.target == "log" else g
