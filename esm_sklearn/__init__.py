"""esm_sklearn: latency predictors for hardware-aware NAS as scikit-learn estimators."""

from .spaces import SearchSpace, get_space, list_spaces, register_space

__version__ = "0.1.0"

__all__ = ["SearchSpace", "get_space", "list_spaces", "register_space", "__version__"]
