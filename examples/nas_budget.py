"""Keep only NAS candidates that surely meet a latency budget: conformal upper bounds vs points.

A NAS loop under a latency budget asks "which candidates meet B ms?". Keeping
those whose *predicted* latency is under B lets through every candidate the
predictor underestimates; keeping those whose 90% *upper bound* is under B
lets through about 10% of the violators at most, by construction. This script
fits a :class:`~esm_sklearn.conformal.ConformalLatencyRegressor` on a few
measured architectures, filters the other architectures of a measured table
both ways and counts the true violators that slip through.

Run: ``python examples/nas_budget.py --n 200`` (bundled CPU MobileNetV3
table, default pipeline); ``--help-device raspi4`` uses the HELP FBNet table
instead (``--help-path`` for a copy that is not bundled).
"""

import argparse

import numpy as np

from esm_sklearn import make_latency_pipeline
from esm_sklearn.conformal import ConformalLatencyRegressor
from esm_sklearn.datasets import load_bundled, load_help


def load(args):
    if args.help_device is None:
        return load_bundled(args.table)
    if args.help_path is None:
        return load_help(device=args.help_device, space="fbnet")
    return load_help(path=args.help_path, device=args.help_device, space="fbnet")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=400, help="architectures used (train + candidates)")
    parser.add_argument("--n-train", type=int, default=150, help="measured training architectures")
    parser.add_argument("--budget", type=float, default=None, help="ms (default: candidates' median)")
    parser.add_argument("--confidence", type=float, default=0.9)
    parser.add_argument("--epochs", type=int, default=50, help="MLP epochs")
    parser.add_argument("--table", default="cpu_mobilenetv3_r128_b1")
    parser.add_argument("--help-device", default=None)
    parser.add_argument("--help-path", default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    table = load(args)
    idx = np.random.default_rng(args.seed).permutation(len(table.data))[: args.n]
    archs = [table.data[i] for i in idx]
    y = np.asarray(table.target, dtype=float)[idx]
    n_train = min(args.n_train, len(archs) // 2)
    train, cand = slice(0, n_train), slice(n_train, None)

    model = ConformalLatencyRegressor(
        make_latency_pipeline(max_epochs=args.epochs, random_state=args.seed),
        confidence_level=args.confidence, random_state=args.seed,
    ).fit(archs[:n_train], y[train])
    point = model.predict(archs[n_train:])
    upper = model.predict_interval(archs[n_train:])[:, 1]
    truth = y[cand]
    budget = float(np.median(truth)) if args.budget is None else args.budget

    meets = truth <= budget
    print(f"{len(truth)} candidates, budget {budget:.3f} ms, {int(meets.sum())} truly meet it; "
          f"predictor fitted on {n_train} measured architectures")
    print(f"{'rule':<28}{'kept':>6}{'violators kept':>16}{'share':>8}{'good ones lost':>16}")
    for name, keep in (("point prediction <= budget", point <= budget),
                       (f"{args.confidence:.0%} upper bound <= budget", upper <= budget)):
        slipped = int(np.sum(keep & ~meets))
        share = slipped / max(int(keep.sum()), 1)
        lost = int(np.sum(~keep & meets))
        print(f"{name:<28}{int(keep.sum()):>6}{slipped:>16}{share:>8.1%}{lost:>16}")
    return budget


if __name__ == "__main__":
    main()
