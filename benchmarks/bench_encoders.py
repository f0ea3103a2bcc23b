"""Encoding throughput: architectures per second of every encoder on one core.

Samples ``--n`` architectures of a space (default: 100,000 ResNet archs, seed
0), fits each encoder on the first 100, then times ``transform`` on all of
them (sampling and fitting excluded; best of ``--repeat`` runs) and prints a
table with wall-clock and CPU-time throughput. CPU time is the fairer figure on
a shared machine. Rows:

- the six encoders (``LookupTableEncoder`` only where a lookup table for the
  space is found, by default ``shared/datasets/h200/<space>_b1_lut.csv``);
- ``FCCEncoder`` on JSON strings (parsing included);
- ``space.block_codes`` per arch, the pre-existing per-arch reader, for reference.

Target (issue): FCC >= 100,000 archs/s on one core.

Run: ``python benchmarks/bench_encoders.py [--n 100000] [--space resnet]``.
"""

from __future__ import annotations

import os

# One thread everywhere, set before numpy is imported.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from esm_sklearn.encoders import (  # noqa: E402
    FCCEncoder,
    FeatureCountEncoder,
    FeatureEncoder,
    LookupTableEncoder,
    OneHotArchEncoder,
    StatisticalEncoder,
)
from esm_sklearn.spaces import get_space  # noqa: E402

H200 = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "h200"
TARGET = 100_000


def _time(func, repeat: int) -> tuple[float, float]:
    """Best wall-clock and best CPU seconds of ``func()`` over ``repeat`` runs."""
    wall, cpu = float("inf"), float("inf")
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        func()
        wall = min(wall, time.perf_counter() - w0)
        cpu = min(cpu, time.process_time() - c0)
    return wall, cpu


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="architectures to encode")
    parser.add_argument("--space", default="resnet")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3, help="runs per encoder (best kept)")
    parser.add_argument("--lut", type=Path, default=None, help="lookup-table CSV")
    args = parser.parse_args(argv)

    space = get_space(args.space)
    t0 = time.perf_counter()
    archs = space.sample(args.n, random_state=args.seed)
    print(f"sampled {args.n:,} {space.name} archs (seed {args.seed}) in "
          f"{time.perf_counter() - t0:.1f} s; timing transform, best of {args.repeat}")

    encoders = [OneHotArchEncoder(), FeatureEncoder(), FeatureCountEncoder(), FCCEncoder(),
                StatisticalEncoder()]
    lut = args.lut or H200 / f"{space.name}_b1_lut.csv"
    if lut.exists():
        encoders.append(LookupTableEncoder(lut))
    else:
        print(f"(no lookup table at {lut}: LookupTableEncoder skipped)")
    rows = []
    for encoder in encoders:
        encoder.fit(archs[:100])
        wall, cpu = _time(lambda e=encoder: e.transform(archs), args.repeat)
        rows.append((type(encoder).__name__, encoder.n_features_out_, wall, cpu))
    strings = [json.dumps(a) for a in archs]
    fcc = FCCEncoder().fit(archs[:100])
    wall, cpu = _time(lambda: fcc.transform(strings), args.repeat)
    rows.append(("FCCEncoder (JSON strings)", fcc.n_features_out_, wall, cpu))
    wall, cpu = _time(lambda: [space.block_codes(a) for a in archs], 1)
    rows.append(("space.block_codes loop (ref.)", None, wall, cpu))

    print(f"\n{'encoder':30s} {'cols':>5s} {'archs/s (wall)':>15s} {'archs/s (CPU)':>14s} "
          f"{'us/arch (CPU)':>14s}")
    for name, cols, wall, cpu in rows:
        print(f"{name:30s} {'' if cols is None else cols:>5} {args.n / wall:>15,.0f} "
              f"{args.n / cpu:>14,.0f} {1e6 * cpu / args.n:>14.2f}")
    fcc_cpu = next(cpu for name, _, _, cpu in rows if name == "FCCEncoder")
    rate = args.n / fcc_cpu
    verdict = "met" if rate >= TARGET else "NOT met"
    print(f"\nFCC target >= {TARGET:,} archs/s on one core: {verdict} ({rate:,.0f} archs/s CPU time)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
