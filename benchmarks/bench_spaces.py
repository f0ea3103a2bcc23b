"""Sampling and counting throughput of the search spaces, against prediction, on one core.

For every space with a macro-architecture, times (CPU time; wall time is
noisy on a shared machine):

- ``space.sample(n)`` with the random and the balanced strategy;
- ``space.sample_in_bin(2, n // 10)`` (the middle bin);
- ``space.count_params(archs)`` and ``space.count_flops(archs)`` on ``n``
  sampled architectures (counts are cached per block spec, so the first call
  of a process is timed too, as ``count_flops (cold)``);

and, for reference, ``predict`` of the default pipeline (FCC + MLP, fitted on
300 sampled ResNet archs with a synthetic target; prediction time does not
depend on the target) on ``n`` ResNet architectures. Each figure is the
mean over ``--seeds`` seeds with its range, in architectures per second of
CPU time; the garbage collector's pass over what a call creates is timed,
freeing its result is not.

Targets (issue 13): sampling at least as fast as prediction; counting tens of
thousands of architectures per second.

Run: ``python benchmarks/bench_spaces.py [--n 100000] [--seeds 3] [--spaces resnet ...]``.
"""

from __future__ import annotations

import os

# One thread everywhere, set before numpy and torch are imported.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import gc  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from esm_sklearn.counting import spec_counts  # noqa: E402
from esm_sklearn.spaces import get_space  # noqa: E402

SPACES = ("resnet", "mobilenetv3", "densenet", "ofa_mobilenetv3", "fbnet")


def _rate(n: int, fn, *args, **kwargs) -> float:
    """``n`` over the CPU seconds of ``fn(*args, **kwargs)``.

    The garbage collector's pass over the new objects (sampling pauses it) is
    timed; freeing the result is not (a NAS loop keeps what it samples).
    """
    start = time.process_time()
    result = fn(*args, **kwargs)
    gc.collect(0)
    seconds = time.process_time() - start
    del result
    return n / max(seconds, 1e-9)


def _row(label: str, rates: list[float]) -> str:
    rates = np.asarray(rates)
    return (
        f"| {label} | {rates.mean():,.0f} | {rates.min():,.0f} .. {rates.max():,.0f} |"
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="architectures per timing (default 100000)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds (runs) per figure (default 3)")
    parser.add_argument("--spaces", nargs="+", default=list(SPACES), choices=SPACES,
                        help="spaces to time (default: all)")
    args = parser.parse_args(argv)
    n, seeds = args.n, range(args.seeds)
    print(f"n = {n:,} architectures, {len(seeds)} seeds; archs/s of CPU time, mean and range\n")
    print("| space / operation | archs/s | range |")
    print("|---|---:|---:|")
    for name in args.spaces:
        space = get_space(name)
        for strategy in ("random", "balanced"):
            rates = [_rate(n, space.sample, n, strategy, random_state=s) for s in seeds]
            print(_row(f"{name} sample {strategy}", rates))
        k = max(n // 10, 1)
        rates = [_rate(k, space.sample_in_bin, 2, k, random_state=s) for s in seeds]
        print(_row(f"{name} sample_in_bin", rates))
        cold, params, flops = [], [], []
        for s in seeds:
            archs = space.sample(n, random_state=s)
            spec_counts.cache_clear()
            cold.append(_rate(n, space.count_flops, archs))
            params.append(_rate(n, space.count_params, archs))
            flops.append(_rate(n, space.count_flops, archs))
        print(_row(f"{name} count_params", params))
        print(_row(f"{name} count_flops", flops))
        print(_row(f"{name} count_flops (cold)", cold))

    import torch

    from esm_sklearn import make_latency_pipeline

    torch.set_num_threads(1)
    space = get_space("resnet")
    rates = []
    for s in seeds:
        train = space.sample(300, random_state=100 + s)
        y = 1.0 + 0.1 * space.total_depth(train) + np.random.RandomState(s).rand(300)
        pipe = make_latency_pipeline(space="resnet", random_state=s, max_epochs=5).fit(train, y)
        archs = space.sample(n, random_state=s)
        rates.append(_rate(n, pipe.predict, archs))
    print(_row("resnet predict (FCC + MLP), for reference", rates))


if __name__ == "__main__":
    main()
