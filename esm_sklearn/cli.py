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
