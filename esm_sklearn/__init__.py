"""esm_sklearn: latency predictors for hardware-aware NAS as scikit-learn estimators.

The public names below are imported on first use (PEP 562 ``__getattr__``), so
``import esm_sklearn`` and ``esm-sklearn --help`` do not load torch or skorch;
they are loaded when a torch-backed object (``MLPLatencyRegressor``,
``make_latency_pipeline``, a model build or a timing) is first used.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "ActiveLatencyEstimator": "active",
    "ConformalLatencyRegressor": "conformal",
    "FCCEncoder": "encoders",
    "FeatureCountEncoder": "encoders",
    "FeatureEncoder": "encoders",
    "LookupTableEncoder": "encoders",
    "MLPLatencyRegressor": "predictors",
    "MeasurementStore": "store",
    "OneHotArchEncoder": "encoders",
    "SearchSpace": "spaces",
    "StatisticalEncoder": "encoders",
    "TableOracle": "oracle",
    "TorchLatencyOracle": "oracle",
    "TransferLatencyRegressor": "transfer",
    "check_references": "quality",
    "get_space": "spaces",
    "list_spaces": "spaces",
    "make_latency_pipeline": "predictors",
    "register_space": "spaces",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'esm_sklearn' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})

