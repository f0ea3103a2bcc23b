"""Latency-constrained architecture search with a fitted latency predictor.

The use the predictor is built for: a NAS loop scores far more candidates than
could ever be timed. Here an evolutionary search over the ResNet space looks for
the architectures with the most parameters (or FLOPs) whose *predicted* latency
on this CPU stays under a budget, scoring 100k+ candidates in batches; then the
oracle times the finalists to show how far the predictions are off.

1. Predictor: ``--predictor FILE`` loads one saved by ``esm-sklearn fit`` (or
   joblib), which must be for the ResNet space, this device and the same input
   resolution. Otherwise one is fit here with ``ActiveLatencyEstimator`` and a
   ``TorchLatencyOracle`` on this CPU (``--resolution``, ``--fit-runs`` timed
   runs, 1 thread), about ``--fit-samples`` training architectures, its
   measurements kept in ``--store`` (rerun to resume).
2. Search: ``--n-random`` random architectures (depth-balanced), then
   ``--generations`` of mutation (change a block's kernel or expansion, add or
   remove a block) of the best ``--population`` architectures that meet the
   budget. Parameters and FLOPs (multiply-adds) are counted analytically from
   the architecture (per-block formulas, the stem and head counted once with
   torch); the finalists are re-counted with torch.
3. Check: the ``--top-k`` best architectures (and the best of the random phase)
   are timed by a fresh ``TorchLatencyOracle`` (``--check-runs`` runs, no store)
   and predicted vs measured latency is printed. ``--n-controls`` architectures
   of the predictor's test set are timed again around them: on a shared machine
   the speed drifts, and their ratio now / then tells a level shift of the
   machine (``error_at_level_%``) from an error of the predictor.

Run from the repository root::

    python studies/nas_search.py --quick                 # smoke run, < 1 min
    python studies/nas_search.py                         # about 5 min (1.5 min resumed)
    python studies/nas_search.py --predictor predictor.joblib --budget-ms 30
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import torch
from report import log  # noqa: E402
from threadpoolctl import threadpool_limits

from esm_sklearn import ActiveLatencyEstimator, TorchLatencyOracle, get_space
from esm_sklearn.metrics import kendall_tau, latency_accuracy
from esm_sklearn.predictors import make_latency_pipeline
from esm_sklearn.spaces import arch_key

SPACE = get_space("resnet")
QUICK = {"resolution": 32, "fit_samples": 20, "n_test": 10, "fit_runs": 3, "check_runs": 5,
         "n_references": 0, "n_controls": 2, "n_random": 10_000, "generations": 4,
         "population": 100, "children": 20, "top_k": 2}




# ------------------------------------------------------------ cost model
def costs(archs, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """Parameters and multiply-adds from the block specs (no model is built)."""
    return (SPACE.count_params(archs).astype(float),
            SPACE.count_flops(archs, resolution=resolution).astype(float))


def _count_macs(model, resolution: int) -> int:
    """Multiply-adds of the conv and linear layers in one forward pass, counted by torch."""
    macs = 0

    def hook(module, inputs, output):
        nonlocal macs
        if isinstance(module, torch.nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            macs += output.numel() * module.in_channels // module.groups * k
        elif isinstance(module, torch.nn.Linear):
            macs += module.in_features * module.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with torch.inference_mode():
            model.eval()(torch.zeros(1, 3, resolution, resolution))
    finally:
        for h in handles:
            h.remove()
    return macs


def torch_counts(arch, resolution: int) -> tuple[int, int]:
    """Parameters and multiply-adds of the built model, counted by torch (slow: builds it)."""
    model = SPACE.build_model(arch, resolution=resolution)
    return sum(p.numel() for p in model.parameters()), _count_macs(model, resolution)


# ---------------------------------------------------------------- search
class Evaluated:
    """Every candidate scored so far: predicted latency, params, FLOPs (deduplicated)."""

    def __init__(self, predictor, resolution: int, batch_size: int):
        self.predictor, self.resolution, self.batch_size = predictor, resolution, batch_size
        self.archs: list[dict] = []
        self.keys: set[str] = set()
        self.cols = {"latency": [], "params": [], "macs": []}
        self.predict_seconds = 0.0

    def add(self, archs) -> int:
        new = []
        for a in archs:
            key = arch_key(a)
            if key not in self.keys:
                self.keys.add(key)
                new.append(a)
        for i in range(0, len(new), self.batch_size):
            batch = new[i : i + self.batch_size]
            start = time.perf_counter()
            lat = np.asarray(self.predictor.predict(batch), dtype=float).reshape(-1)
            self.predict_seconds += time.perf_counter() - start
            params, macs = costs(batch, self.resolution)
            self.cols["latency"].append(lat)
            self.cols["params"].append(params)
            self.cols["macs"].append(macs)
            self.archs.extend(batch)
        return len(new)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({k: np.concatenate(v) for k, v in self.cols.items()})


def best(frame: pd.DataFrame, budget: float, objective: str, k: int) -> pd.Index:
    feasible = frame[frame["latency"] <= budget]
    return feasible.sort_values(objective, ascending=False).index[:k]


def search(ev: Evaluated, budget, args, rng) -> dict:
    start = time.perf_counter()
    log(f"  generation 0: {len(ev.archs)} random candidates")
    random_best = best(ev.frame(), budget, args.objective, 1)
    for g in range(1, args.generations + 1):
        frame = ev.frame()
        parents = best(frame, budget, args.objective, args.population)
        if len(parents) == 0:
            raise ValueError(f"no candidate is predicted under the budget of {budget:.2f} ms; "
                             "raise --budget-ms")
        children = [SPACE.mutate(ev.archs[i], random_state=rng)
                    for i in parents for _ in range(args.children)]
        n_new = ev.add(children)
        top = ev.frame().loc[best(ev.frame(), budget, args.objective, 1)].iloc[0]
        log(f"  generation {g}: {n_new} new candidates ({len(ev.archs)} in all), best "
            f"{args.objective} {top[args.objective] / 1e6:.2f} M at predicted "
            f"{top['latency']:.2f} ms")
    return {"random_best": int(random_best[0]) if len(random_best) else None,
            "seconds": time.perf_counter() - start}


# ------------------------------------------------------------- predictor
def get_predictor(args):
    if args.predictor is not None:
        model = joblib.load(args.predictor)
        space = getattr(model, "space_", None)
        if space is not None and space.name != SPACE.name:
            raise ValueError(f"{args.predictor} predicts the {space.name!r} space, not resnet")
        log(f"predictor: loaded {args.predictor} (it must be for this device and resolution "
            f"{args.resolution})")
        return model
    n_step = max(1, args.fit_samples // 6)
    est = ActiveLatencyEstimator(
        make_latency_pipeline(space=SPACE, random_state=0), space=SPACE.name,
        strategy="balanced", n_initial=int(args.fit_samples * 0.6), n_step=n_step,
        n_test=args.n_test, acc_threshold=args.acc_threshold, max_samples=args.fit_samples,
        max_iter=50,
        oracle=TorchLatencyOracle(
            device="cpu", store=str(args.store), resolution=args.resolution, runs=args.fit_runs,
            warmup=3, threads=1, n_references=args.n_references, check_every=100,
            # On a shared machine the references drift by more than 3%: record the QC
            # outcome, do not re-time batches (that would triple the time).
            max_retries=0),
        random_state=0, verbose=args.progress,
    )
    log(f"predictor: fitting on this CPU at resolution {args.resolution}, {args.fit_runs} runs "
        f"per model, up to {args.fit_samples} training + {args.n_test} test architectures; "
        f"store {args.store} (rerun to resume)")
    start = time.perf_counter()
    est.fit()
    hist = est.history_
    worst = hist[[c for c in hist.columns if c.startswith("acc_bin")]].iloc[-1].min()
    log(f"  {est.termination_condition_} after {est.n_iter_} extension(s), "
        f"{len(est.X_train_)} training archs, {time.perf_counter() - start:.0f} s; held-out "
        f"accuracy {hist['accuracy'].iloc[-1]:.1%} (worst bin {worst:.1%}), Kendall tau "
        f"{kendall_tau(est.y_test_, est.predict(est.X_test_)):.3f}")
    if est.qc_ is not None and hasattr(est.qc_, "worst"):
        log(f"  quality control: {est.qc_}")
    if args.save_predictor:
        joblib.dump(est, args.save_predictor)
        log(f"  saved -> {args.save_predictor}")
    return est


def control_archs(predictor, n: int) -> tuple[list[dict], np.ndarray]:
    """Up to ``n`` architectures of the predictor's held-out test set (spread over its
    latency range) and their latencies as measured then; empty for another predictor."""
    X, y = getattr(predictor, "X_test_", None), getattr(predictor, "y_test_", None)
    if not n or X is None or y is None or len(X) == 0:
        return [], np.empty(0)
    order = np.argsort(y)
    pick = order[np.linspace(0, len(order) - 1, min(n, len(order))).round().astype(int)]
    return [X[i] for i in pick], np.asarray(y, dtype=float)[pick]


# ------------------------------------------------------------------- main
def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--predictor", type=Path, default=None, help="a saved ResNet predictor")
    p.add_argument("--save-predictor", type=Path, default=None)
    p.add_argument("--store", type=Path, default=Path("runs/nas_cpu_resnet.sqlite"))
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--fit-samples", type=int, default=200, help="most training archs measured")
    p.add_argument("--n-test", type=int, default=40)
    p.add_argument("--fit-runs", type=int, default=20, help="timed runs per arch when fitting")
    p.add_argument("--acc-threshold", type=float, default=0.95)
    p.add_argument("--n-references", type=int, default=2,
                   help="reference architectures re-timed for quality control while fitting")
    p.add_argument("--check-runs", type=int, default=30, help="timed runs per finalist")
    p.add_argument("--n-controls", type=int, default=4,
                   help="test architectures of the predictor timed again with the finalists")
    p.add_argument("--budget-ms", type=float, default=None,
                   help="latency budget (default: 25th percentile of the random candidates' "
                   "predicted latency)")
    p.add_argument("--objective", choices=["params", "macs"], default="params")
    p.add_argument("--n-random", type=int, default=50_000)
    p.add_argument("--generations", type=int, default=10)
    p.add_argument("--population", type=int, default=500)
    p.add_argument("--children", type=int, default=12, help="mutants per parent and generation")
    p.add_argument("--batch-size", type=int, default=20_000, help="candidates per predict call")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--progress", action="store_true")
    p.add_argument("--quick", action="store_true", help="smoke run (< 1 min)")
    args = p.parse_args(argv)
    if args.quick:
        for k, v in QUICK.items():
            setattr(args, k, v)
        if args.store == Path("runs/nas_cpu_resnet.sqlite"):
            args.store = Path("runs/nas_cpu_resnet_quick.sqlite")
    return args


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(1)
    rng = np.random.RandomState(args.seed)
    t0 = time.perf_counter()
    with threadpool_limits(1):
        predictor = get_predictor(args)
        ev = Evaluated(predictor, args.resolution, args.batch_size)
        log(f"\nsearch: {args.n_random} random candidates, then {args.generations} generations "
            f"of {args.population} parents x {args.children} mutants; objective {args.objective}")
        ev.add(SPACE.sample(args.n_random, strategy="balanced", random_state=rng))
        budget = args.budget_ms
        if budget is None:
            budget = float(np.percentile(ev.frame()["latency"], 25))
        log(f"  latency budget {budget:.2f} ms (predicted)")
        info = search(ev, budget, args, rng)
        frame = ev.frame()
        log(f"  {len(ev.archs)} candidates scored in {info['seconds']:.0f} s "
            f"(predictor: {ev.predict_seconds:.1f} s, "
            f"{len(ev.archs) / max(ev.predict_seconds, 1e-9):,.0f} archs/s)")

        top = list(best(frame, budget, args.objective, args.top_k))
        rows = [(f"top {r + 1}", i) for r, i in enumerate(top)]
        if info["random_best"] is not None and info["random_best"] not in top:
            rows.append(("random best", info["random_best"]))
        archs = [ev.archs[i] for _, i in rows]
        oracle = TorchLatencyOracle(resolution=args.resolution, runs=args.check_runs, warmup=5,
                                    threads=1, n_references=0)
        controls, control_y = control_archs(predictor, args.n_controls)
        log(f"\ncheck: timing {len(archs)} finalists on this CPU "
            f"({args.check_runs} runs, resolution {args.resolution}, 1 thread)"
            + (f", and {len(controls)} of the predictor's test architectures before and after "
               "them to see whether the machine is as fast as when the predictor's data was "
               "measured" if controls else ""))
        # Controls before and after the finalists: the level they show spans the check.
        half = len(controls) // 2
        timed = oracle.measure(controls[:half] + archs + controls[half:])
        measured = timed[half : half + len(archs)]
        level = float("nan")
        if controls:
            ratios = np.concatenate([timed[:half], timed[half + len(archs):]]) / control_y
            level = float(np.nanmedian(ratios))
            log(f"  controls: measured now / measured for the predictor = "
                f"{', '.join(f'{r:.2f}' for r in ratios)} (median {level:.2f})")

    counted = np.array([torch_counts(a, args.resolution) for a in archs], dtype=float)
    analytic = np.array([[frame.loc[i, "params"], frame.loc[i, "macs"]] for _, i in rows])
    if not np.array_equal(counted, analytic):
        raise AssertionError(f"analytic counts {analytic.tolist()} differ from torch's "
                             f"{counted.tolist()}")
    table = pd.DataFrame({
        "which": [w for w, _ in rows],
        "depth": ["-".join(map(str, a["depth"])) for a in archs],
        "params_M": counted[:, 0] / 1e6,
        "GMACs": counted[:, 1] / 1e9,
        "predicted_ms": [frame.loc[i, "latency"] for _, i in rows],
        "measured_ms": measured,
    })
    table["error_%"] = 100 * (table["predicted_ms"] - table["measured_ms"]) / table["measured_ms"]
    if np.isfinite(level):
        # The prediction scaled to the machine's current speed (seen on the controls).
        table["error_at_level_%"] = 100 * (table["predicted_ms"] * level - table["measured_ms"]) / (
            table["measured_ms"])
    table["under_budget"] = table["measured_ms"] <= budget
    with pd.option_context("display.width", 120, "display.precision", 2):
        log(table.to_string(index=False))
    ok = np.isfinite(measured)
    log(f"\nbudget {budget:.2f} ms: {int(table['under_budget'].sum())}/{len(table)} finalists "
        f"measured under it; accuracy (1 - MAPE) of the predictions on the finalists "
        f"{latency_accuracy(measured[ok], table['predicted_ms'][ok]):.1%}, Kendall tau "
        f"{kendall_tau(measured[ok], table['predicted_ms'][ok]):.2f}"
        + (f"; scaled to the machine's current speed ({level:.2f}): "
           f"{latency_accuracy(measured[ok], level * table['predicted_ms'][ok]):.1%}"
           if np.isfinite(level) else "")
        + "; the analytic parameter and multiply-add counts equal torch's for every finalist")
    log(f"total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
