"""The paper's Fig. 11 measured live: balanced vs random sampling on this CPU.

``ActiveLatencyEstimator`` with a real ``TorchLatencyOracle`` draws candidates
freely from the search space (no pool), measures them as it goes, and stops at
the same bin-wise threshold for both strategies (N_I 300, N_Step 100, as in the
paper). Every timing goes into one store, so the run is resumable and the same
held-out test set (drawn first from the seed) is measured once for both
strategies. More seeds are then replayed from that store: the pool is every
architecture the live runs measured; the live seed is replayed too, to show how
close a replay comes to the live run.

Run from the repository root (hours of measurement on a CPU; resumable)::

    python studies/live_active_learning.py --store runs/live_mobilenetv3_r128.sqlite
    python studies/live_active_learning.py --store runs/live_mobilenetv3_r128.sqlite --replay-only

or one process per strategy on the same store (it is safe for concurrent writers),
then ``--replay-only`` for the report::

    python studies/live_active_learning.py --strategies balanced --live-only &
    python studies/live_active_learning.py --strategies random --live-only

Writes ``docs/results/fig11_live.md``, ``fig11_live_history.csv`` and
``fig11_live.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402
import torch  # noqa: E402
from report import log, machine, to_markdown  # noqa: E402

from esm_sklearn import (  # noqa: E402
    ActiveLatencyEstimator,
    MeasurementStore,
    TorchLatencyOracle,
    check_references,
)
from esm_sklearn.plotting import plot_convergence  # noqa: E402

OUT = Path("docs/results")


def loop(args, strategy: str, seed: int, **kw) -> ActiveLatencyEstimator:
    return ActiveLatencyEstimator(
        space=args.space, strategy=strategy, n_initial=300, n_step=100, n_test=200,
        acc_threshold=args.threshold, max_samples=args.max_samples, max_iter=100,
        plateau_patience=args.plateau_patience, random_state=seed, **kw)


def history(est: ActiveLatencyEstimator, strategy: str, seed: int, mode: str) -> pd.DataFrame:
    hist = est.history_.copy()
    acc = [c for c in hist.columns if c.startswith("acc_bin")]
    hist["worst_bin"] = hist[acc].min(axis=1)
    hist["strategy"], hist["seed"], hist["mode"] = strategy, seed, mode
    hist["threshold"] = est.acc_threshold
    hist["end"] = est.termination_condition_
    return hist


def run_live(args, oracle) -> list[pd.DataFrame]:
    """Each strategy's live run; its history is also saved on its own, so strategies can
    run in separate processes on one store (``--strategies balanced`` and ``random``)."""
    out = []
    for strategy in args.strategies:
        log(f"live {strategy}, seed {args.seed}: measuring on {oracle.device} ...")
        start = time.perf_counter()
        est = loop(args, strategy, args.seed, oracle=oracle, verbose=True).fit()
        hist = history(est, strategy, args.seed, "live")
        hist["wall_seconds"] = time.perf_counter() - start
        hist.to_csv(args.out / f"fig11_live_{strategy}.csv", index=False)
        log(f"  {est.termination_condition_} after {len(est.X_train_)} samples, "
            f"{hist['wall_seconds'].iloc[-1] / 60:.1f} min; qc: {est.qc_}")
        out.append(hist)
    return out


def run_replays(args, table: pd.DataFrame) -> list[pd.DataFrame]:
    archs = [json.loads(a) for a in table["arch"]]
    y = table["latency_ms"].to_numpy(dtype=float)
    out = []
    for seed in [args.seed, *args.replay_seeds]:
        for strategy in args.strategies:
            est = loop(args, strategy, seed).fit(archs, y)
            out.append(history(est, strategy, seed, "replay"))
            log(f"replay {strategy} seed {seed}: {est.termination_condition_} after "
                f"{len(est.X_train_)} samples")
    return out


def reference_checks(refs: pd.DataFrame) -> list[str]:
    """The paper's 3% rule on the store's reference rounds: per collection run (runs cut
    short with a single round left out) and pooled over every session of the setting
    (paired latencies share the anchor's calibration, so sessions are comparable)."""
    rounds = refs.groupby("run")["round"].nunique()
    several = refs[refs["run"].isin(rounds[rounds >= 2].index)]
    pooled = refs.assign(run=1, round=refs.groupby("ref_id").cumcount())
    lines = []
    for label, frame in (("per run", several), ("pooled over all sessions", pooled)):
        lines.append(f"- {label} ({frame['run'].nunique()} run(s), {len(frame)} reference "
                     f"timings): {check_references(frame)}")
    return lines


def summarize(hist: pd.DataFrame) -> pd.DataFrame:
    last = hist.groupby(["mode", "strategy", "seed"], as_index=False).last()
    cols = ["mode", "strategy", "seed", "n_samples", "iteration", "worst_bin", "accuracy", "end"]
    if "wall_seconds" in last:
        last["wall_min"] = last["wall_seconds"] / 60
        cols.append("wall_min")
    return last[cols].rename(columns={"iteration": "extensions"})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", default="mobilenetv3")
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--store", type=Path, default=Path("runs/live_mobilenetv3_r128.sqlite"))
    parser.add_argument("--threshold", type=float, default=0.95)
    parser.add_argument("--max-samples", type=int, default=2000)
    parser.add_argument("--plateau-patience", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--replay-seeds", type=int, nargs="*", default=[1, 2, 3, 4])
    parser.add_argument("--strategies", nargs="+", default=["balanced", "random"])
    parser.add_argument("--replay-only", action="store_true",
                        help="replay the store without measuring (and report the live runs "
                        "saved by earlier invocations)")
    parser.add_argument("--live-only", action="store_true",
                        help="measure and save the live runs, no replay and no report")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--export", type=Path, default=None,
                        help="also write the store as a latency table (CSV, H200 format) with "
                        "its references beside it")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    args.store.parent.mkdir(parents=True, exist_ok=True)
    oracle = TorchLatencyOracle(device="cpu", resolution=args.resolution, threads=1,
                                store=str(args.store), progress=True)
    start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.live_only:
        run_live(args, oracle)
        return 0
    parts = [] if args.replay_only else run_live(args, oracle)
    if args.replay_only:  # the live runs of earlier (or parallel) invocations
        parts = [pd.read_csv(args.out / f"fig11_live_{s}.csv") for s in args.strategies
                 if (args.out / f"fig11_live_{s}.csv").is_file()]
    with MeasurementStore(args.store) as store:
        table = store.to_latency_table()
        refs = store.to_references_table()
        if args.export is not None:
            store.export_csv(args.export)
    parts += run_replays(args, table)
    hist = pd.concat(parts, ignore_index=True)
    hist.to_csv(args.out / "fig11_live_history.csv", index=False)
    fig = plot_convergence(hist.assign(dataset=hist["mode"]), title="Fig. 11 live (CPU)")
    fig.savefig(args.out / "fig11_live.png", dpi=120, bbox_inches="tight")
    summary = summarize(hist)
    text = [
        "# ESM Fig. 11 measured live on a CPU",
        "",
        f"Generated by `python studies/live_active_learning.py {' '.join(argv or sys.argv[1:])}` "
        f"in {(time.perf_counter() - start) / 60:.1f} min on {machine()}.",
        "",
        f"Space {args.space} at {args.resolution} px, batch 1, one thread; "
        f"`TorchLatencyOracle` defaults ({oracle.clock} clock, paired={oracle.paired}); "
        f"threshold {args.threshold:.3f} on every depth bin; N_I 300, N_Step 100, "
        f"200 held-out test architectures; at most {args.max_samples} training samples; "
        f"plateau stop after {args.plateau_patience} extensions without gain. "
        f"The store holds {len(table)} measured architectures.",
        "",
        "`live`: candidates drawn from the space and measured as the loop runs. `replay`: the "
        "same loop replayed over the store's architectures (seed "
        f"{args.seed} again, then {args.replay_seeds}).",
        "",
        to_markdown(summary),
        "",
        f"Sampling of the stored architectures: {table['sampling'].value_counts().to_dict()}. "
        "Reference quality control (worst coefficient of variation across rounds):",
        "",
        *reference_checks(refs),
        "",
        "![Fig. 11 live](fig11_live.png)",
        "",
    ]
    (args.out / "fig11_live.md").write_text("\n".join(text))
    log("\n".join(text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
