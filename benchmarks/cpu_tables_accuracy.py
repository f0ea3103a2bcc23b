"""5-fold accuracy of the bundled CPU tables (issue 10 item 6).

For each table: FCC + MLP (the default pipeline), FCC + ridge, and the paper's
lookup table with a linear bias correction (LUT + bias, from the table's
``_lut.csv``), each scored by 5-fold cross-validation (``1 - MAPE`` on the
held-out fold, mean over folds), repeated with ``--seeds`` shufflings of the
folds; the report gives the mean and the range over the shufflings.

Run from the repository root (a few minutes on one core)::

    python benchmarks/cpu_tables_accuracy.py
    python benchmarks/cpu_tables_accuracy.py --tables cpu_resnet_r32_b1_paired --seeds 1
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import KFold, cross_val_score

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "studies"))

from report import log, machine, to_markdown  # noqa: E402

from esm_sklearn import make_latency_pipeline  # noqa: E402
from esm_sklearn.datasets import load_bundled  # noqa: E402
from esm_sklearn.metrics import latency_accuracy_scorer  # noqa: E402

TABLES = ["cpu_mobilenetv3_r128_b1_paired", "cpu_resnet_r32_b1_paired", "cpu_mobilenetv3_r128_b1"]
MODELS = {
    "FCC + MLP (default)": dict(encoding="fcc", regressor="mlp"),
    "FCC + ridge": dict(encoding="fcc", regressor="ridge"),
    "LUT + bias": dict(encoding="lut", regressor="linear"),
}


def evaluate(name: str, seeds: int, folds: int) -> list[dict]:
    table = load_bundled(name)
    rows = []
    for label, spec in MODELS.items():
        if spec["encoding"] == "lut" and table.lut is None:
            continue
        scores = []
        for seed in range(seeds):
            pipe = make_latency_pipeline(**spec, random_state=seed,
                                         lut_table=table.lut if spec["encoding"] == "lut" else None)
            cv = KFold(folds, shuffle=True, random_state=seed)
            scores.append(cross_val_score(pipe, table.data, table.target, cv=cv,
                                          scoring=latency_accuracy_scorer).mean())
        scores = 100 * np.asarray(scores)
        rows.append({"table": name, "rows": len(table.data), "model": label,
                     "1 - MAPE %": scores.mean(), "min %": scores.min(), "max %": scores.max()})
        log(f"  {name} {label}: {scores.mean():.2f}% [{scores.min():.2f}, {scores.max():.2f}]")
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tables", nargs="+", default=TABLES)
    parser.add_argument("--seeds", type=int, default=3, help="shufflings of the folds")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--out", default=str(REPO / "docs" / "results" / "cpu_tables_accuracy.csv"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    log(f"{machine()}; {args.folds}-fold CV x {args.seeds} shufflings")
    frame = pd.DataFrame([row for name in args.tables
                          for row in evaluate(name, args.seeds, args.folds)])
    frame.to_csv(args.out, index=False)
    log("\n" + to_markdown(frame, digits=2))
    log(f"total {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
