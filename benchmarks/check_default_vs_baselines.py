"""Is the default pipeline (FCC + MLPLatencyRegressor) at least as accurate as
ridge regression and gradient boosting on the same FCC features?

For every dataset (the bundled H200 tables; HELP OFA-MobileNetV3 and FBNet on
GPUs at batch 1 and 64, a server CPU, phones and a Raspberry Pi 4) and
training size (300 and 1,000 where the table leaves at least 100 rows to test;
half the table otherwise), each seed draws a random training set and tests on
the rest (at most 1,000 rows). Accuracy is ``1 - MAPE`` on the test rows,
averaged over seeds. ``ridge_log`` (ridge on log latency) is an extra
reference, not part of the criterion.

Run from the repository root (a few minutes on one core)::

    python benchmarks/check_default_vs_baselines.py
    python benchmarks/check_default_vs_baselines.py --seeds 1 --datasets help_ofa_titan_xp_64
    python benchmarks/check_default_vs_baselines.py --mlp batch_size=128 --mlp max_epochs=50

``--mlp key=value`` sets a parameter of the default MLP (a Python literal), to
try other defaults. Exit status 1 if the default loses anywhere by more than
``--tie`` points (default 0.02: where every linear model sits at the noise
floor, e.g. FBNet at 1,000 samples, the models differ by hundredths).

``--ablation`` instead walks from the paper's bare recipe to the default, one
change at a time, on a few datasets (10-15 minutes on one core)::

    python benchmarks/check_default_vs_baselines.py --ablation --seeds 2
"""

from __future__ import annotations

import argparse
import ast
import sys
import time
from pathlib import Path

import numpy as np
import torch
from mlp_ablation import AblationMLPRegressor
from sklearn.compose import TransformedTargetRegressor
from sklearn.linear_model import Ridge

from esm_sklearn import make_latency_pipeline
from esm_sklearn.datasets import load_bundled, load_help
from esm_sklearn.metrics import latency_accuracy

HELP_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "external" / "help"
BUNDLED = ["h200_resnet_b1", "h200_mobilenetv3_b1", "h200_densenet_b1", "h200_resnet_b32",
           "cpu_mobilenetv3_r128_b1", "cpu_mobilenetv3_r128_b1_paired"]
HELP = [
    ("ofa_mobilenetv3", "2080ti_1"),      # GPU, batch 1
    ("ofa_mobilenetv3", "2080ti_64"),     # GPU, batch 64
    ("ofa_mobilenetv3", "v100_1"),
    ("ofa_mobilenetv3", "titan_xp_64"),
    ("fbnet", "2080ti_1"),
    ("fbnet", "titan_rtx_64"),
    ("fbnet", "gold_6240"),               # server CPU
    ("fbnet", "pixel3"),                  # phone
    ("fbnet", "samsung_a50"),             # phone, whole milliseconds
    ("fbnet", "raspi4"),
]
SIZES = (300, 1000)
MIN_TEST = 100
MAX_TEST = 1000


def load_datasets(help_dir: Path, names: list[str] | None):
    sets = {name: load_bundled(name) for name in BUNDLED}
    if help_dir.is_dir():
        for space, device in HELP:
            key = f"help_{'ofa' if space.startswith('ofa') else space}_{device}"
            if names and key not in names:
                continue
            sets[key] = load_help(help_dir, device, space=space)
    else:
        print(f"(HELP tables not found at {help_dir}: bundled tables only)")
    if names:
        unknown = set(names) - set(sets)
        if unknown:
            raise SystemExit(f"unknown dataset(s) {sorted(unknown)}; known: {sorted(sets)}")
        sets = {k: v for k, v in sets.items() if k in names}
    return sets


def train_sizes(n: int) -> list[int]:
    return [s for s in SIZES if n - s >= MIN_TEST] or [n // 2]


# From the paper's recipe as written to the default, one change at a time.
_BARE = dict(module__standardize=False, module__skip=None, target=None, linear_init_alpha=None,
             early_stopping=False, lr_schedule=None)
ABLATION = {
    "A_paper": dict(_BARE, max_epochs=10, batch_size=128),  # skorch's epoch/batch defaults
    "B_100ep": dict(_BARE, max_epochs=100, batch_size=64),
    "C_scaled": dict(_BARE, module__standardize=True, target="standardize"),
    "D_log": dict(_BARE, module__standardize=True, target="log"),
    "E_log_skip": dict(_BARE, module__standardize=True, target="log", module__skip="additive"),
    "F_rel_lin": dict(early_stopping=False),
    "G_default": {},
}
ABLATION_SETS = ["h200_resnet_b1", "help_ofa_2080ti_64", "help_ofa_titan_xp_64",
                 "help_fbnet_pixel3", "help_fbnet_samsung_a50"]


def ablation_models(seed: int, mlp_params: dict):
    out = {name: make_latency_pipeline(
               "fcc", AblationMLPRegressor(random_state=seed, **{**params, **mlp_params}))
           for name, params in ABLATION.items()}
    out["ridge"] = make_latency_pipeline("fcc", "ridge")
    out["gbm"] = make_latency_pipeline("fcc", "gbm", random_state=seed)
    return out


def models(seed: int, mlp_params: dict):
    ridge_log = TransformedTargetRegressor(Ridge(alpha=1.0), func=np.log, inverse_func=np.exp)
    return {
        "default": make_latency_pipeline(random_state=seed, **mlp_params),
        "ridge": make_latency_pipeline("fcc", "ridge"),
        "gbm": make_latency_pipeline("fcc", "gbm", random_state=seed),
        "ridge_log": make_latency_pipeline("fcc", ridge_log),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--datasets", nargs="*", help="subset of dataset keys")
    parser.add_argument("--help-dir", type=Path, default=HELP_DIR)
    parser.add_argument("--mlp", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--tie", type=float, default=0.02, help="points counted as a tie")
    parser.add_argument("--ablation", action="store_true")
    args = parser.parse_args(argv)
    make = ablation_models if args.ablation else models
    if args.ablation and not args.datasets:
        args.datasets = ABLATION_SETS
    mlp_params = {}
    for item in args.mlp:
        key, _, value = item.partition("=")
        try:
            mlp_params[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            mlp_params[key] = value
    torch.set_num_threads(1)
    start = time.perf_counter()
    sets = load_datasets(args.help_dir, args.datasets)
    names = list(make(0, mlp_params))
    first = names[-3] if args.ablation else "default"  # the model whose fit is timed
    print(f"{'dataset':26s} {'n_train':>7s} " + " ".join(f"{m:>10s}" for m in names)
          + f" {'margin':>7s} {'fit_s':>6s}")
    losses, margins, fit_times = [], [], []
    for key, bunch in sets.items():
        archs, y = bunch.data, np.asarray(bunch.target, dtype=np.float64)
        for n_train in train_sizes(len(y)):
            scores = {m: [] for m in names}
            fit_s = []
            for seed in range(args.seeds):
                order = np.random.default_rng(seed).permutation(len(y))
                train, test = order[:n_train], order[n_train : n_train + MAX_TEST]
                for name, model in make(seed, mlp_params).items():
                    t0 = time.perf_counter()
                    model.fit([archs[i] for i in train], y[train])
                    if name == first:
                        fit_s.append(time.perf_counter() - t0)
                    pred = model.predict([archs[i] for i in test])
                    scores[name].append(latency_accuracy(y[test], pred))
            mean = {m: 100 * float(np.mean(v)) for m, v in scores.items()}
            margin = mean[first] - max(mean["ridge"], mean["gbm"])
            margins.append(margin)
            fit_times.append(np.mean(fit_s))
            if margin < -args.tie:
                losses.append((key, n_train, margin))
            print(f"{key:26s} {n_train:7d} " + " ".join(f"{mean[m]:10.2f}" for m in names)
                  + f" {margin:+7.2f} {np.mean(fit_s):6.2f}", flush=True)
    print(f"\nmean margin {np.mean(margins):+.2f} points (min {np.min(margins):+.2f}); "
          f"mean default fit {np.mean(fit_times):.2f} s; total {time.perf_counter() - start:.0f} s")
    if losses:
        print("default loses on: " + ", ".join(f"{k} n={n} ({m:+.2f})" for k, n, m in losses))
        return 1
    print(f"default >= max(ridge, gbm) everywhere (ties within {args.tie} points allowed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
