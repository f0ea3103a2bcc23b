"""The ``esm-sklearn`` command: list spaces, sample, collect, fit, evaluate, predict.

Each subcommand is a ``_cmd_<name>(args)`` function registered in ``_build_parser``.
"""

from __future__ import annotations

import argparse
import json
import sys

from .spaces import get_space, list_spaces


def _cmd_spaces(args) -> int:
    for name in list_spaces():
        space = get_space(name)
        print(
            f"{name:16s} units={space.n_units} depth={space.min_depth}..{space.max_depth} "
            f"size={space.size():.3g}  {space.description}"
        )
    return 0


def _cmd_sample(args) -> int:
    space = get_space(args.space)
    archs = space.sample(
        args.n, strategy=args.strategy, n_bins=args.n_bins, random_state=args.seed
    )
    out = open(args.out, "w") if args.out else sys.stdout
    try:
        for arch in archs:
            out.write(json.dumps(arch) + "\n")
    finally:
        if args.out:
            out.close()
    return 0


def _collect_archs(space, n: int, strategy: str, n_bins: int, seed) -> tuple[list, list]:
    """The seeded architectures of ``collect`` and their sampling labels.

    ``mixed``: half balanced, half random (distinct), interleaved so that any
    prefix of the collection is half/half too.
    """
    if strategy != "mixed":
        archs = space.sample(n, strategy=strategy, n_bins=n_bins, random_state=seed, unique=True)
        return archs, [strategy] * len(archs)
    import numpy as np

    rng = np.random.RandomState(seed)
    balanced = space.sample(n - n // 2, strategy="balanced", n_bins=n_bins, random_state=rng,
                            unique=True)
    rand = space.sample(n // 2, strategy="random", random_state=rng, exclude=balanced)
    archs, labels = [], []
    for i in range(len(balanced)):
        archs.append(balanced[i])
        labels.append("balanced")
        if i < len(rand):
            archs.append(rand[i])
            labels.append("random")
    return archs, labels


def _cmd_collect(args) -> int:
    from .oracle import TorchLatencyOracle
    from .store import MeasurementStore

    space = get_space(args.space)
    if args.n < 0:
        raise ValueError(f"--n must be >= 0, got {args.n}")
    archs, labels = _collect_archs(space, args.n, args.strategy, args.n_bins, args.seed)
    oracle = TorchLatencyOracle(
        device=args.device, batch_size=args.batch_size, resolution=args.resolution,
        warmup=args.warmup, runs=args.runs, trim=args.trim, n_references=args.n_references,
        check_every=args.check_every or None, variance_threshold=args.variance_threshold,
        max_retries=args.max_retries, threads=args.threads, store=args.store,
        random_state=args.seed, progress=not args.no_progress,
    )
    try:
        if archs:
            oracle.measure(archs, space=space, sampling=labels)
        if args.profile_blocks:
            lut = oracle.profile_blocks(space, resolution=args.resolution)
            lut.to_csv(args.profile_blocks, index=False)
            print(f"profiled {len(lut)} blocks -> {args.profile_blocks}")
    except KeyboardInterrupt:
        key = getattr(oracle, "setting_key_", None)
        with MeasurementStore(args.store) as store:
            n_done = len(store.measured_keys(key)) if key else 0
        print(
            f"\ninterrupted: {n_done} architectures of this setting are safely in {args.store}; "
            "run the same command again to resume (measured architectures are skipped).",
            file=sys.stderr,
        )
        return 130
    if archs:
        s, info = oracle.summary_, oracle.device_info_
        print(
            f"collect {space.name} on {info['name']} ({info['type']}, {info['threads']} threads, "
            f"batch {info['batch_size']}, resolution {info['resolution'] or 'per arch'})"
        )
        per_arch = s["seconds_per_arch"]
        per_arch = f"{per_arch:.3f} s per timed arch" if per_arch == per_arch else "nothing timed"
        print(
            f"  measured {s['n_measured']}, failed {s['n_failed']}, skipped (already in store) "
            f"{s['n_skipped']}, re-timed for QC {s['n_retimed']}; {s['seconds']:.1f} s, {per_arch}"
        )
        check = oracle.qc_check_
        if check is None:
            print("  QC: not run (no reference rounds)")
        else:
            verdict = "passed" if check.passed else "FAILED"
            spreads = ", ".join(
                f"ref {int(r.ref_id)}: {getattr(r, check.statistic):.2%} ({int(r.n_rounds)} rounds)"
                for r in check.spread.itertuples()
            )
            print(f"  QC {verdict} ({check.statistic} threshold {check.threshold:.1%}): {spreads}")
            n_retry = int((~oracle.qc_["passed"]).sum()) if len(oracle.qc_) else 0
            if n_retry:
                print(f"  {n_retry} QC round(s) of this session failed (see the store's "
                      "reference rows)")
        print(f"  store: {args.store} (setting {oracle.setting_key_[:12]})")
        if args.export:
            with MeasurementStore(args.store) as store:
                store.export_csv(args.export, setting_key=oracle.setting_key_)
            print(f"  exported -> {args.export} (+ _references.csv)")
    return 0


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="esm-sklearn", description="Build latency predictors for hardware-aware NAS."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("spaces", help="list the registered search spaces")
    p.set_defaults(func=_cmd_spaces)

    p = sub.add_parser("sample", help="write sampled architectures as JSON lines")
    p.add_argument("--space", required=True)
    p.add_argument("--n", type=int, default=10)
    p.add_argument("--strategy", choices=["random", "balanced"], default="random")
    p.add_argument("--n-bins", type=int, default=5)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--out", help="file to write (default: standard output)")
    p.set_defaults(func=_cmd_sample)

    p = sub.add_parser(
        "collect",
        help="time sampled architectures on a device into a store (resumable, Ctrl-C safe)",
    )
    p.add_argument("--space", required=True)
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:<index>")
    p.add_argument("--n", type=int, default=100, help="architectures to sample")
    p.add_argument("--strategy", choices=["random", "balanced", "mixed"], default="balanced",
                   help="mixed: half balanced, half random")
    p.add_argument("--n-bins", type=int, default=5)
    p.add_argument("--seed", type=int, default=0, help="seeds sampling and references")
    p.add_argument("--store", required=True, help="SQLite file; rerun to resume")
    p.add_argument("--resolution", type=int, default=None)
    p.add_argument("--runs", type=int, default=150)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--trim", type=float, default=0.2)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--n-references", type=int, default=4)
    p.add_argument("--check-every", type=int, default=150, help="0: only start and end")
    p.add_argument("--variance-threshold", type=float, default=0.03)
    p.add_argument("--max-retries", type=int, default=2)
    p.add_argument("--export", default=None, help="write the latency table CSV here")
    p.add_argument("--profile-blocks", default=None, metavar="CSV",
                   help="also profile every block alone and write the lookup table here")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_collect)

    # Further subcommands register here.
    return parser


def main(argv=None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, KeyError, FileNotFoundError) as exc:
        print(f"esm-sklearn {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
