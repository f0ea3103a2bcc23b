"""Drift correction on the H200 tables: reference spread and predictor accuracy.

Prints, per H200 table:
- the quality check (worst and mean coefficient of variation of the references
  across QC rounds) before and after leave-one-reference-out drift correction
  (:func:`esm_sklearn.quality.reference_spread_after_correction`);
- the 5-fold cross-validated accuracy (1 - MAPE), share within +-10% and
  Kendall tau of a ridge regression on per-unit feature-combination counts,
  trained and scored on the raw latencies, then on drift-corrected ones
  (:func:`esm_sklearn.quality.drift_correct`). Both scores are against the
  respective targets: the corrected one is the latency the device would show
  at its median speed.

Run: ``python benchmarks/drift_correction.py [path/to/shared/datasets/h200]``
(a few seconds on one CPU core).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import kendalltau
from sklearn.linear_model import Ridge
from sklearn.model_selection import KFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from esm_sklearn.quality import (
    check_references,
    drift_correct,
    reference_spread_after_correction,
)
from esm_sklearn.spaces import get_space

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "h200"
TABLES = ["resnet_b1", "mobilenetv3_b1", "densenet_b1", "resnet_b32"]


def fcc_counts(archs: list, space) -> np.ndarray:
    """Per unit, how many blocks take each combination of block choices."""
    try:
        from esm_sklearn.encoders import FCCEncoder
    except ImportError:  # pragma: no cover - encoders written separately
        pass
    else:
        return np.asarray(FCCEncoder(space=space.name).fit_transform(archs), dtype=float)
    n_comb = len(space.unit_block_combinations)
    X = np.zeros((len(archs), space.n_units * n_comb))
    for i, arch in enumerate(archs):
        for u, codes in enumerate(space.block_codes(arch)):
            for c in codes:
                X[i, u * n_comb + c] += 1
    return X


def scores(X: np.ndarray, y: np.ndarray, seeds=(0, 1, 2)) -> dict:
    accs, within, taus = [], [], []
    for seed in seeds:
        model = make_pipeline(StandardScaler(), Ridge(alpha=1.0))
        pred = cross_val_predict(model, X, y, cv=KFold(5, shuffle=True, random_state=seed))
        rel = np.abs(pred - y) / y
        accs.append(1 - rel.mean())
        within.append((rel <= 0.1).mean())
        taus.append(kendalltau(y, pred).statistic)
    return {"acc": np.mean(accs), "within10": np.mean(within), "tau": np.mean(taus)}


def main(root: Path) -> pd.DataFrame:
    rows = []
    for name in TABLES:
        table_path, ref_path = root / f"{name}.csv", root / f"{name}_references.csv"
        if not (table_path.exists() and ref_path.exists()):
            print(f"skipping {name}: not found under {root}")
            continue
        table, refs = pd.read_csv(table_path), pd.read_csv(ref_path)
        check = check_references(refs)
        loo = reference_spread_after_correction(refs)
        space = get_space(table["space"].iloc[0])
        archs = [json.loads(a) for a in table["arch"]]
        X = fcc_counts(archs, space)
        raw = scores(X, table["latency_ms"].to_numpy())
        corrected = drift_correct(table, refs)
        cor = scores(X, corrected["latency_ms"].to_numpy())
        rows.append({
            "table": name, "n": len(table), "passed": check.passed,
            "cv_mean_before": loo["cv_before"].mean(), "cv_mean_after": loo["cv_after"].mean(),
            "cv_max_before": loo["cv_before"].max(), "cv_max_after": loo["cv_after"].max(),
            "drift_min": corrected["drift_factor"].min(),
            "drift_max": corrected["drift_factor"].max(),
            "acc_raw": raw["acc"], "acc_corr": cor["acc"],
            "w10_raw": raw["within10"], "w10_corr": cor["within10"],
            "tau_raw": raw["tau"], "tau_corr": cor["tau"],
        })
    result = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.max_columns", None):
        print(result.round(4).to_string(index=False))
    return result


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT)
