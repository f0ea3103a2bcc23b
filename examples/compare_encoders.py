"""Compare the architecture encodings with a cross-validated ridge regression.

Encodes the bundled H200 ResNet and DenseNet tables with each encoder, fits a
ridge regression (alpha chosen by inner cross-validation) and reports, from
5-fold cross-validation, the accuracy (1 - MAPE), the share of predictions
within +-10% and Kendall's tau per encoder.

Run::

    python examples/compare_encoders.py            # prints a Markdown table
    python examples/compare_encoders.py --tables h200_resnet_b32
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import KFold, cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from esm_sklearn import (
    FCCEncoder,
    FeatureCountEncoder,
    FeatureEncoder,
    OneHotArchEncoder,
    StatisticalEncoder,
)
from esm_sklearn.datasets import load_bundled
from esm_sklearn.metrics import get_scorer

ENCODERS = {
    "onehot": OneHotArchEncoder,
    "fe": FeatureEncoder,
    "stat": StatisticalEncoder,
    "fc": FeatureCountEncoder,
    "fcc": FCCEncoder,
}
SCORING = {name: get_scorer(name) for name in ("latency_accuracy", "within_10", "kendall_tau")}


def compare(table: str, n_splits: int = 5, random_state: int = 0) -> pd.DataFrame:
    """Cross-validated scores of every encoder + ridge on one bundled table."""
    bunch = load_bundled(table)
    rows = []
    for name, encoder in ENCODERS.items():
        model = make_pipeline(
            encoder(), StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13))
        )
        scores = cross_validate(
            model,
            bunch.data,
            bunch.target,
            cv=KFold(n_splits, shuffle=True, random_state=random_state),
            scoring=SCORING,
        )
        n_features = len(encoder().fit(bunch.data).get_feature_names_out())
        rows.append(
            {
                "table": table,
                "encoder": name,
                "n_archs": len(bunch.target),
                "n_features": n_features,
                "accuracy": scores["test_latency_accuracy"].mean(),
                "within_10": scores["test_within_10"].mean(),
                "kendall_tau": scores["test_kendall_tau"].mean(),
            }
        )
    return pd.DataFrame(rows)


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tables", nargs="+", default=["h200_resnet_b1", "h200_densenet_b1", "h200_resnet_b32"],
        help="bundled tables (see esm_sklearn.datasets.list_bundled())",
    )
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args(argv)
    result = pd.concat([compare(t, args.folds) for t in args.tables], ignore_index=True)
    print(result.to_markdown(index=False, floatfmt=".3f"))
    return result


if __name__ == "__main__":
    main()
