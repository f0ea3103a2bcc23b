"""esm_sklearn: latency predictors for hardware-aware NAS as scikit-learn estimators."""

from .active import ActiveLatencyEstimator
from .encoders import (
    FCCEncoder,
    FeatureCountEncoder,
    FeatureEncoder,
    LookupTableEncoder,
    OneHotArchEncoder,
    StatisticalEncoder,
)
from .oracle import TableOracle, TorchLatencyOracle
from .predictors import MLPLatencyRegressor, make_latency_pipeline
from .quality import check_references
from .spaces import SearchSpace, get_space, list_spaces, register_space
from .store import MeasurementStore

__version__ = "0.1.0"

__all__ = [
    "ActiveLatencyEstimator",
    "FCCEncoder",
    "FeatureCountEncoder",
    "FeatureEncoder",
    "LookupTableEncoder",
    "MLPLatencyRegressor",
    "MeasurementStore",
    "OneHotArchEncoder",
    "SearchSpace",
    "StatisticalEncoder",
    "TableOracle",
    "TorchLatencyOracle",
    "__version__",
    "check_references",
    "get_space",
    "list_spaces",
    "make_latency_pipeline",
    "register_space",
]
