"""How trustworthy is CPU timing on a busy machine? (issue 10 item 5)

Times the reference architectures of a space again and again, each round with
every timing mode in turn (so all modes see the same conditions), first on the
machine as it is ("idle") and then under a load this script starts and stops
itself (one busy process per core, each bounded in time):

* ``wall``: ``time.perf_counter``, trimmed mean (the ESM protocol);
* ``thread``: ``time.thread_time`` (CPU time of the timing thread), trimmed mean;
* ``wall paired`` / ``thread paired``: each run alternates with a run of the
  anchor model, latency = median per-pair ratio x the anchor's latency
  calibrated once at the start;
* ``thread paired adaptive``: the oracle's default, stopping once the 95%
  interval of the median ratio is within +-1% (at least ``min_runs`` pairs).

For each mode and condition it reports the worst reference spread across
rounds (coefficient of variation, the paper's QC statistic, 3% allowed), the
range over references, the shift of each reference's mean latency from idle to
load, and the seconds spent per architecture timing.

``--agreement N`` also times N random architectures with the default mode and
with plain wall-clock timing repeated 3 times (median of the 3 trimmed means),
and reports MAPE and Kendall's tau between the two, and between the three
wall-clock passes themselves (the noise floor of the comparison).

Run from the repository root (about 8 minutes with the defaults on 2 cores)::

    python benchmarks/bench_timing_noise.py
    python benchmarks/bench_timing_noise.py --part agreement --agreement 50
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "studies"))

from report import log, machine, to_markdown  # noqa: E402

from esm_sklearn import TorchLatencyOracle, get_space, timing  # noqa: E402
from esm_sklearn.metrics import kendall_tau  # noqa: E402
from esm_sklearn.oracle import anchor_architecture  # noqa: E402
from esm_sklearn.quality import check_references  # noqa: E402

# name -> (clock, paired, adaptive)
MODES = {
    "wall": ("wall", False, False),
    "thread": ("thread", False, False),
    "wall paired": ("wall", True, False),
    "thread paired": ("thread", True, False),
    "thread paired adaptive": ("thread", True, True),
}


def _spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    x = 1
    while time.monotonic() < end:
        for _ in range(20_000):
            x = (x * 7 + 1) % 1_000_003


@contextmanager
def cpu_load(n_procs: int, max_seconds: float):
    """``n_procs`` processes spinning at 100% CPU; each stops by itself after ``max_seconds``."""
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_spin, args=(max_seconds,), daemon=True) for _ in range(n_procs)]
    for p in procs:
        p.start()
    time.sleep(1.0)  # let them start spinning
    try:
        yield
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.join(timeout=10)


def _time(model, shape, mode: str, anchor, anchor_ms: dict, args) -> dict:
    clock, paired, adaptive = MODES[mode]
    return timing.time_model(
        model, shape, "cpu", warmup=args.warmup, runs=args.runs, clock=clock,
        anchor=anchor if paired else None, anchor_ms=anchor_ms[clock] if paired else None,
        min_runs=args.min_runs if adaptive else None, rel_ci=args.rel_ci if adaptive else None,
        seed=0)


def spread(args, space, shape, models, anchor, anchor_ms) -> pd.DataFrame:
    rows = []
    for condition in ("idle", "load"):
        budget = args.rounds * 600.0  # an upper bound on the loaded phase, in seconds
        with (cpu_load(args.load_procs, budget) if condition == "load" else _nothing()):
            start = time.perf_counter()
            for rnd in range(args.rounds):
                for ref_id, model in enumerate(models):
                    for mode in args.modes:
                        stats = _time(model, shape, mode, anchor, anchor_ms, args)
                        rows.append({"condition": condition, "mode": mode, "round": rnd,
                                     "ref_id": ref_id, "latency_ms": stats["latency_ms"],
                                     "seconds": stats["seconds"], "runs": stats["runs"]})
                log(f"  {condition} round {rnd + 1}/{args.rounds} "
                    f"({time.perf_counter() - start:.0f} s)")
    return pd.DataFrame(rows)


@contextmanager
def _nothing():
    yield


def summarize(raw: pd.DataFrame) -> pd.DataFrame:
    out = []
    means = raw.groupby(["condition", "mode", "ref_id"])["latency_ms"].mean()
    for (condition, mode), group in raw.groupby(["condition", "mode"], sort=False):
        cv = check_references(group[["ref_id", "round", "latency_ms"]]).spread["cv"]
        shift = (means["load"][mode] / means["idle"][mode] - 1).abs()
        out.append({"mode": mode, "condition": condition,
                    "worst spread %": 100 * cv.max(), "best ref %": 100 * cv.min(),
                    "idle->load shift % (worst ref)": 100 * shift.max(),
                    "s per arch": group["seconds"].mean(), "runs used": group["runs"].mean()})
    return pd.DataFrame(out)


def agreement(args, space, anchor, anchor_ms) -> pd.DataFrame:
    archs = space.sample(args.agreement, random_state=args.seed, unique=True)
    rows = []
    start = time.perf_counter()
    for i, arch in enumerate(archs):
        model = space.build_model(arch, resolution=args.resolution)
        paired = _time(model, (1, 3, args.resolution, args.resolution),
                       "thread paired adaptive", anchor, anchor_ms, args)
        rows.append({"arch": i, "paired_ms": paired["latency_ms"],
                     "paired_s": paired["seconds"], "wall_ms": []})
        if (i + 1) % 10 == 0:
            log(f"  paired {i + 1}/{len(archs)} ({time.perf_counter() - start:.0f} s)")
    # Careful plain wall clock: three passes over the list, median of the three.
    for rep in range(3):
        for i, arch in enumerate(archs):
            model = space.build_model(arch, resolution=args.resolution)
            stats = _time(model, (1, 3, args.resolution, args.resolution), "wall", None,
                          anchor_ms, argparse.Namespace(**{**vars(args), "runs": 150}))
            rows[i]["wall_ms"].append(stats["latency_ms"])
        log(f"  wall pass {rep + 1}/3 ({time.perf_counter() - start:.0f} s)")
    frame = pd.DataFrame(rows)
    for rep in range(3):  # each pass kept: their disagreement is the comparison's noise floor
        frame[f"wall_{rep + 1}_ms"] = [w[rep] for w in frame["wall_ms"]]
    frame["wall_ms"] = [float(np.median(w)) for w in frame["wall_ms"]]
    return frame


def wall_noise_floor(frame: pd.DataFrame) -> tuple[float, float]:
    """Mean MAPE and Kendall tau between the plain wall-clock passes, over pass pairs."""
    passes = [frame[f"wall_{k}_ms"].to_numpy() for k in (1, 2, 3)]
    pairs = [(0, 1), (0, 2), (1, 2)]
    mape = np.mean([np.mean(np.abs(passes[i] / passes[j] - 1)) for i, j in pairs])
    tau = np.mean([kendall_tau(passes[i], passes[j]) for i, j in pairs])
    return float(mape), float(tau)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", default="mobilenetv3")
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--n-references", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--runs", type=int, default=60, help="timed runs (pairs) per timing")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--min-runs", type=int, default=30)
    parser.add_argument("--rel-ci", type=float, default=0.01)
    parser.add_argument("--burn-in", type=float, default=3.0)
    parser.add_argument("--load-procs", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--part", choices=["spread", "agreement", "both"], default="spread")
    parser.add_argument("--agreement", type=int, default=50, help="architectures compared")
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES),
                        help="timing modes compared (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(REPO / "docs" / "results" / "timing_noise"))
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    space = get_space(args.space)
    shape = (1, 3, args.resolution, args.resolution)
    refs = TorchLatencyOracle(n_references=args.n_references).reference_archs(space)
    models = [space.build_model(a, resolution=args.resolution).eval() for a in refs]
    anchor = space.build_model(anchor_architecture(space), resolution=args.resolution).eval()
    log(f"{machine()}, load average {os.getloadavg()[0]:.1f} at start; {args.space} at "
        f"{args.resolution} px, {len(refs)} references, {args.rounds} rounds, {args.runs} runs")
    t0 = time.perf_counter()
    inputs = [torch.randn(*shape) for _ in range(len(models) + 1)]
    with torch.inference_mode():
        timing.burn_in([lambda m=m, x=x: m(x) for m, x in zip([anchor, *models], inputs,
                                                             strict=True)], args.burn_in)
    # The anchor's latency on each clock, calibrated once at the start (as the oracle does).
    anchor_ms = {clock: timing.time_model(anchor, shape, "cpu", warmup=args.warmup,
                                          runs=max(3 * args.runs, 60), clock=clock,
                                          seed=0)["median_ms"]
                 for clock in ("wall", "thread")}
    log(f"anchor calibration: wall {anchor_ms['wall']:.2f} ms, thread {anchor_ms['thread']:.2f} ms")

    if args.part in ("spread", "both"):
        raw = spread(args, space, shape, models, anchor, anchor_ms)
        raw.to_csv(f"{args.out}_rounds.csv", index=False)
        table = summarize(raw)
        table.to_csv(f"{args.out}.csv", index=False)
        log("\n" + to_markdown(table, digits=2))
    if args.part in ("agreement", "both"):
        frame = agreement(args, space, anchor, anchor_ms)
        frame.to_csv(f"{args.out}_agreement.csv", index=False)
        err = (frame["paired_ms"] / frame["wall_ms"] - 1).abs()
        tau = kendall_tau(frame["wall_ms"].to_numpy(), frame["paired_ms"].to_numpy())
        log(f"\nagreement over {len(frame)} architectures: MAPE {100 * err.mean():.2f}% "
            f"(max {100 * err.max():.1f}%), Kendall tau {tau:.3f}, paired "
            f"{frame['paired_s'].mean():.2f} s per arch")
        mape, tau = wall_noise_floor(frame)
        log(f"noise floor: plain wall-clock passes against each other (each a new build of "
            f"the model): MAPE {100 * mape:.2f}%, Kendall tau {tau:.3f}")
    log(f"total {time.perf_counter() - t0:.0f} s, load average {os.getloadavg()[0]:.1f} at end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
