"""Measuring on a fleet (issue 12): throughput for 1 and 2 workers, agreement of units,
and the comparison study through joblib's dask backend.

Writes ``docs/results/fleet.csv`` (one row per run), ``docs/results/fleet_references.csv``
(every reference timing, per unit) and prints the markdown tables of
``docs/results/fleet.md``.

1. Throughput: the same ``--n`` MobileNetV3 architectures timed (fresh store
   each time) by one ``TorchLatencyOracle`` in this process (one torch thread),
   by a ``FleetLatencyOracle`` of 1 worker and of 2 workers; ``--repeats``
   times each, with different architectures per repeat. Architectures per hour
   count the architectures only (references, start-up and calibration are in
   the time).
2. Agreement: per reference, how far the two units' mean latencies are apart,
   raw, calibrated with the fleet's factor (fit on these same references, so
   optimistic), and calibrated leave-one-reference-out (the factor from the
   other references: what an architecture gets).
3. ``GridSearchCV`` of ``make_latency_pipeline`` on a bundled table, on a
   ``LocalCluster`` via ``joblib.parallel_backend("dask")``.

0. Scheduling: the same loop on a fake device whose every timing sleeps 1 s
   (no CPU used), so the speed-up of 2 workers and the cost of per-unit
   references show even on a machine shared with other jobs.

Run: ``python benchmarks/bench_fleet.py`` (about 15 minutes on 2 idle cores);
``--sections scheduling --n 12 --repeats 1`` for a quick look.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from esm_sklearn import TorchLatencyOracle, get_space
from esm_sklearn.fleet import FleetLatencyOracle, reference_agreement, unit_factor

OUT = Path(__file__).resolve().parents[1] / "docs" / "results"


def _oracle(args, store):
    return TorchLatencyOracle(resolution=args.resolution, runs=args.runs, warmup=5,
                              n_references=args.n_references, check_every=args.check_every,
                              max_retries=0, store=store, burn_in=1.0)


class _SleepOracle(TorchLatencyOracle):
    """A fake device: every architecture (and reference) takes ``runs`` x 20 ms of sleep.

    No CPU is used, so the fleet's scheduling overhead and speed-up show even
    on a machine busy with other jobs.
    """

    def time_architecture(self, arch, space=None):
        time.sleep(0.02 * self.runs)
        return {"latency_ms": 1.0, "median_ms": 1.0, "min_ms": 1.0, "p90_ms": 1.0,
                "std_ms": 0.0, "runs": self.runs, "status": "ok", "error": None}


def scheduling(args) -> pd.DataFrame:
    """Wall time of ``--n`` fake 1 s timings on 1 and 2 workers (after a warm-up call)."""
    space = get_space("mobilenetv3")
    rows = []
    for rep in range(args.repeats):
        archs = space.sample(args.n + 2, random_state=200 + rep, unique=True)
        for n in (1, 2):
            oracle = _SleepOracle(runs=50, n_references=args.n_references,
                                  check_every=args.check_every, burn_in=0.0)
            with FleetLatencyOracle(oracle, n_workers=n) as fleet:
                fleet.measure(archs[:2])  # workers up and warm
                t0 = time.perf_counter()
                fleet.measure(archs[2:])
                seconds = time.perf_counter() - t0
            n_ref = int(fleet.qc_["n_references"].sum())
            rows.append({"repeat": rep, "workers": n, "archs": args.n, "reference_timings": n_ref,
                         "seconds": seconds, "ideal_seconds": (args.n + n_ref) / n,
                         "archs_per_hour": 3600 * args.n / seconds})
            print(rows[-1], flush=True)
    return pd.DataFrame(rows)


def throughput(args) -> tuple[pd.DataFrame, pd.DataFrame]:
    space = get_space("mobilenetv3")
    rows, refs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            archs = space.sample(args.n, random_state=100 + rep, unique=True)
            for mode in ("process", 1, 2):
                store = os.path.join(tmp, f"{mode}_{rep}.sqlite")
                load = os.getloadavg()[0]
                t0 = time.perf_counter()
                if mode == "process":
                    oracle = _oracle(args, store).set_params(threads=1)
                    y = oracle.measure(archs)
                    seconds, units = time.perf_counter() - t0, 1
                else:
                    with FleetLatencyOracle(_oracle(args, store), n_workers=mode) as fleet:
                        fleet.connect()  # the cluster's start-up is reported apart
                        start = time.perf_counter() - t0
                        y = fleet.measure(archs)
                    seconds, units = fleet.summary_["seconds"], int(mode)
                    r = fleet.references_.assign(repeat=rep, workers=mode)
                    refs.append(r)
                ok = int(np.isfinite(y).sum())
                rows.append({"repeat": rep, "mode": "one process" if mode == "process"
                             else f"fleet, {mode} worker{'s' * (mode > 1)}",
                             "units": units, "archs": ok, "seconds": seconds,
                             "archs_per_hour": 3600 * ok / seconds,
                             "cluster_start_s": None if mode == "process" else start,
                             "load_before": load})
                print(rows[-1], flush=True)
    return pd.DataFrame(rows), pd.concat(refs, ignore_index=True)


def agreement(refs: pd.DataFrame) -> pd.DataFrame:
    """Per repeat and reference: the spread across the 2 units, raw / calibrated / LOO."""
    out = []
    for rep, r in refs[refs["workers"] == 2].groupby("repeat"):
        raw = reference_agreement(r, "raw_latency_ms")
        cal = reference_agreement(r, "latency_ms")
        # leave one reference out: a unit's factor from its other references' means
        means = r.groupby(["unit", "ref_id"])["raw_latency_ms"].mean().unstack()
        level = means.median(axis=0)
        loo = {}
        for ref in means.columns:
            others = [c for c in means.columns if c != ref]
            fixed = {u: means.loc[u, ref] / unit_factor(means.loc[u, others], level[others])
                     for u in means.index}
            vals = np.array(list(fixed.values()))
            loo[ref] = (vals.max() - vals.min()) / vals.mean()
        for i, ref in enumerate(raw["ref_id"]):
            out.append({"repeat": rep, "ref_id": ref, "raw_max_rel_dev": raw["max_rel_dev"][i],
                        "calibrated_max_rel_dev": cal["max_rel_dev"][i],
                        "loo_calibrated_max_rel_dev": loo[ref]})
    return pd.DataFrame(out)


def grid_search(args) -> str:
    import joblib
    from distributed import Client, LocalCluster
    from sklearn.model_selection import GridSearchCV

    from esm_sklearn import FCCEncoder, FeatureCountEncoder, make_latency_pipeline
    from esm_sklearn.datasets import load_bundled
    from esm_sklearn.metrics import latency_accuracy_scorer

    data = load_bundled("h200_mobilenetv3_b1")
    rng = np.random.RandomState(0)
    idx = rng.choice(len(data.target), size=min(400, len(data.target)), replace=False)
    X, y = [data.data[i] for i in idx], np.asarray(data.target)[idx]
    pipe = make_latency_pipeline("fcc", "mlp", space="mobilenetv3", random_state=0,
                                 max_epochs=40)
    grid = {"encoder": [FCCEncoder(), FeatureCountEncoder()],
            "regressor__lr": [0.01, 0.003]}
    search = GridSearchCV(pipe, grid, cv=3, scoring=latency_accuracy_scorer, n_jobs=-1)
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        t0 = time.perf_counter()
        with joblib.parallel_backend("dask"):
            search.fit(X, y)
        seconds = time.perf_counter() - t0
        workers = len(client.scheduler_info(n_workers=-1)["workers"])
    res = pd.DataFrame(search.cv_results_)[["param_encoder", "param_regressor__lr",
                                             "mean_test_score", "std_test_score"]]
    res["param_encoder"] = res["param_encoder"].map(lambda e: type(e).__name__)
    text = (f"GridSearchCV, 4 candidates x 3 folds on {len(y)} rows of h200_mobilenetv3_b1, "
            f"dask backend on {workers} workers: {seconds:.1f} s\n"
            + res.to_string(index=False)
            + f"\nbest: {type(search.best_params_['encoder']).__name__}, "
              f"lr {search.best_params_['regressor__lr']}, accuracy {search.best_score_:.4f}")
    print(text)
    return text


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=24, help="architectures per run")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--n-references", type=int, default=4)
    parser.add_argument("--check-every", type=int, default=8)
    parser.add_argument("--sections", default="scheduling,throughput,grid",
                        help="comma-separated subset of scheduling, throughput, grid")
    args = parser.parse_args(argv)
    sections = set(args.sections.split(","))
    OUT.mkdir(parents=True, exist_ok=True)

    if "scheduling" in sections:
        sched = scheduling(args)
        sched.to_csv(OUT / "fleet_scheduling.csv", index=False)
        print("\nfake 1 s timings (sleep): wall seconds, mean and range over repeats")
        print(sched.groupby("workers")[["seconds", "ideal_seconds", "archs_per_hour"]]
              .agg(["mean", "min", "max"]).round(1).to_markdown())
    if "throughput" not in sections:
        if "grid" in sections:
            grid_search(args)
        return
    runs, refs = throughput(args)
    runs.to_csv(OUT / "fleet.csv", index=False)
    refs.to_csv(OUT / "fleet_references.csv", index=False)
    summary = runs.groupby("mode", sort=False)["archs_per_hour"].agg(["mean", "min", "max"])
    print("\narchitectures per hour (mean, range over repeats)")
    print(summary.round(0).to_markdown())
    agree = agreement(refs)
    print("\nagreement of the 2 units on the references (max-min)/mean, per repeat and reference")
    print(agree.round(4).to_markdown(index=False))
    print("\nmean over references and repeats:",
          agree[["raw_max_rel_dev", "calibrated_max_rel_dev",
                 "loo_calibrated_max_rel_dev"]].mean().round(4).to_dict())
    if "grid" in sections:
        print()
        grid_search(args)


if __name__ == "__main__":
    main()
