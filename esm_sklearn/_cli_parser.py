"""The ``esm-sklearn`` argument parser (used only by :mod:`esm_sklearn.cli`).

Every option states its meaning and its default; thresholds are fractions. It
imports nothing heavy, so ``esm-sklearn --help`` is fast.
"""

from __future__ import annotations

import argparse

from .macro import BUILTIN_SPACES

_TRUST = ("Model files are pickles: loading one runs code, so load only files you "
          "trust (e.g. written by your own esm-sklearn fit).")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: ...)`` after every option whose help does not state it already."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if "default" in text or default is None or default is False or default == argparse.SUPPRESS:
            return text
        return super()._get_help_string(action)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("esm-sklearn")
    except Exception:  # noqa: BLE001 - not installed: the source tree's version
        from . import __version__

        return __version__


def _add_help_source(group, aliases: bool) -> None:
    """The HELP replay options (bundled tables unless --help-data points at another copy)."""
    group.add_argument("--help-data", default=None, metavar="DIR",
                       help="another copy of the HELP tables (folder or CSV) instead of the "
                       "copy bundled in the package (default: the bundled copy)")
    group.add_argument("--help-target-device", dest="help_device", default=None, metavar="DEV",
                       help="replay the HELP table of this device, e.g. 2080ti_1, pixel3 "
                       "(esm_sklearn.datasets.list_help_devices()); default: no HELP replay")
    group.add_argument("--help-search-space", dest="help_space", default=None,
                       choices=["ofa_mobilenetv3", "fbnet"],
                       help="which HELP table, when the device is in both (default: the one "
                       "that has the device)")
    if aliases:  # the first release's names, kept working but not shown
        group.add_argument("--help-table", dest="help_data", default=None, help=argparse.SUPPRESS)
        group.add_argument("--help-device", dest="help_device", default=None,
                           help=argparse.SUPPRESS)
        group.add_argument("--help-space", dest="help_space", default=None,
                           choices=["ofa_mobilenetv3", "fbnet"], help=argparse.SUPPRESS)


def _add_timing_options(group, defaults: bool) -> None:
    """The oracle's timing protocol (TorchLatencyOracle); ``defaults=False``: None unless given
    (``fit`` replays refuse them), with the oracle's default named in the help."""
    def default(value):
        return value if defaults else None

    group.add_argument("--clock", choices=["auto", "wall", "thread"], default=default("auto"),
                       help="wall: elapsed time; thread: CPU time of the timing thread (one "
                       "thread on a CPU); auto: thread on a CPU, else wall (default: auto)")
    group.add_argument("--paired", action=argparse.BooleanOptionalAction, default=default(True),
                       help="time each model alternately with an anchor model, which cancels "
                       "slow drifts of the machine (default: paired)")
    group.add_argument("--min-runs", type=int, default=default(30),
                       help="adaptive repeats: runs before the interval may stop the timing "
                       "(default: 30)")
    group.add_argument("--rel-ci", type=float, default=default(0.01),
                       help="stop once the 95%% interval is within this fraction (0.01 is "
                       "+-1%%; 0: always --runs) (default: 0.01)")
    group.add_argument("--burn-in", type=float, default=default(3.0), metavar="SECONDS",
                       help="untimed passes before the first model is timed (default: 3.0)")


def build_parser(commands: dict) -> argparse.ArgumentParser:
    """The parser; ``commands`` maps each subcommand name to its ``_cmd_<name>(args)``."""
    parser = argparse.ArgumentParser(
        prog="esm-sklearn", description="Build latency predictors for hardware-aware NAS.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    spaces = sorted(BUILTIN_SPACES)

    def add(name, **kw):
        return sub.add_parser(name, formatter_class=_HelpFormatter, **kw)

    p = add("spaces", help="list the registered search spaces",
            description="List the registered search spaces with their size.")
    p.set_defaults(func=commands["spaces"])

    p = add("sample", help="write sampled architectures as JSON lines",
            description="Sample architectures of a search space, one JSON object per line.")
    p.add_argument("--space", required=True, choices=spaces, help="search space (required)")
    p.add_argument("--n", type=int, default=10, help="how many architectures")
    p.add_argument("--strategy", choices=["random", "balanced"], default="random",
                   help="random: uniform choices; balanced: equal numbers per total-depth bin")
    p.add_argument("--n-bins", type=int, default=5, help="total-depth bins of --strategy balanced")
    p.add_argument("--seed", type=int, default=None,
                   help="random seed (default: none, a different sample each time)")
    p.add_argument("--out", help="file to write (default: standard output)")
    p.set_defaults(func=commands["sample"])

    p = add("collect",
            help="time sampled architectures on a device into a store (resumable, Ctrl-C safe)",
            description="Sample architectures, time them on a device and record every timing "
            "in a SQLite store as it is taken. Rerun the same command to resume; two collects "
            "may write one store at once (each architecture is timed once per setting).")
    p.add_argument("--space", required=True,
                   help=f"search space (required): {', '.join(spaces)}")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:<index>")
    p.add_argument("--n", type=int, default=100, help="architectures to sample")
    p.add_argument("--strategy", choices=["random", "balanced", "mixed"], default="balanced",
                   help="sampling; mixed: half balanced, half random")
    p.add_argument("--n-bins", type=int, default=5, help="total-depth bins of balanced sampling")
    p.add_argument("--seed", type=int, default=0, help="seeds the sampling")
    p.add_argument("--store", required=True,
                   help="SQLite file of every measurement (required; created if absent); rerun "
                   "to resume")
    p.add_argument("--resolution", type=int, default=None,
                   help="input resolution in pixels (default: the space's, e.g. 224)")
    p.add_argument("--runs", type=int, default=150,
                   help="most timed inferences (pairs when paired) per model")
    p.add_argument("--warmup", type=int, default=10, help="untimed inferences first")
    p.add_argument("--trim", type=float, default=0.2,
                   help="share of the fastest and of the slowest runs dropped before averaging")
    p.add_argument("--batch-size", type=int, default=1, help="input batch size")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads while timing (default: one on a CPU, torch's "
                   "setting on a GPU)")
    _add_timing_options(p, defaults=True)
    p.add_argument("--n-references", type=int, default=4,
                   help="reference architectures re-timed for quality control (0: off)")
    p.add_argument("--check-every", type=int, default=150,
                   help="architectures between reference rounds (0: only at start and end)")
    p.add_argument("--variance-threshold", type=float, default=0.03,
                   help="largest allowed spread of a reference, a fraction (0.03 is 3%%)")
    p.add_argument("--max-retries", type=int, default=2,
                   help="times a batch is timed again after a failing reference round")
    p.add_argument("--export", default=None, metavar="CSV",
                   help="also write the latency table here (default: no export)")
    p.add_argument("--profile-blocks", default=None, metavar="CSV",
                   help="also profile every block alone and write the lookup table here "
                   "(default: no profiling)")
    # -- fleet (issue 12, H6): measure on dask workers, one device unit each
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="start N local single-device dask workers (one per core/GPU; "
                   "default: time in this process)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="use a running dask cluster whose workers declare device:<type>=1 "
                   "(default: none)")
    # -- end fleet
    p.add_argument("--no-progress", action="store_true", help="no progress bar (default: shown)")
    p.set_defaults(func=commands["collect"])

    p = add("fit",
            help="build a latency predictor with the train-evaluate-extend loop (measure or replay)",
            description="Measure on a device (--space, --device, --store; resumable) or replay a "
            "measured table (--table NAME_OR_CSV, or a HELP table: --help-target-device DEV), "
            "stop when every depth bin reaches --acc-threshold, save the predictor (a joblib "
            "pickle). " + _TRUST)
    src = p.add_argument_group("what to learn from")
    src.add_argument("--table", default=None,
                     help="replay a bundled table (esm_sklearn.datasets.list_bundled()) or a CSV "
                     "in the shared/datasets/h200 format (default: none)")
    _add_help_source(src, aliases=True)
    src.add_argument("--space", default=None,
                     help=f"search space to measure on a device: {', '.join(spaces)} "
                     "(default: none, a replay)")
    dev = p.add_argument_group("measuring on a device (not with a replay)")
    dev.add_argument("--device", default=None, help="cpu, cuda or cuda:<index> (default: cpu)")
    dev.add_argument("--store", default=None,
                     help="SQLite file of every measurement; rerun to resume "
                     "(default: runs/<device>_<space>.sqlite)")
    dev.add_argument("--resolution", type=int, default=None,
                     help="input resolution in pixels (default: the space's)")
    dev.add_argument("--runs", type=int, default=None,
                     help="most timed runs (pairs when paired) per model (default: 150)")
    dev.add_argument("--warmup", type=int, default=None, help="untimed runs first (default: 10)")
    dev.add_argument("--threads", type=int, default=None,
                     help="torch intra-op threads while timing (default: one on a CPU, torch's "
                     "setting on a GPU)")
    _add_timing_options(dev, defaults=False)
    dev.add_argument("--batch-size", type=int, default=None, help="input batch size (default: 1)")
    dev.add_argument("--n-references", type=int, default=None,
                     help="reference architectures for quality control (0: off; default: 4)")
    dev.add_argument("--check-every", type=int, default=None,
                     help="architectures between reference checks (0: start and end; default: 150)")
    dev.add_argument("--variance-threshold", type=float, default=None,
                     help="largest allowed spread of a reference, a fraction (0.03 is 3%%; "
                     "default: 0.03)")
    dev.add_argument("--max-retries", type=int, default=None,
                     help="times a batch is timed again after a failing reference round "
                     "(default: 2)")
    loop = p.add_argument_group("the loop (ESM Algorithm 1)")
    loop.add_argument("--acc-threshold", type=float, default=0.95,
                      help="target 1 - MAPE per bin, a fraction (0.95 is 95%%)")
    loop.add_argument("--strategy", choices=["balanced", "random"], default="balanced",
                      help="how extensions are sampled")
    loop.add_argument("--evaluation", choices=["binwise", "overall"], default="binwise",
                      help="stop when every bin / the whole test set reaches the threshold")
    loop.add_argument("--n-initial", type=int, default=None,
                      help="N_I, initial training samples (default: 300, or 40%% of a smaller "
                      "pool)")
    loop.add_argument("--n-step", type=int, default=None,
                      help="N_Step, samples per extension (default: 100, or 10%% of a smaller "
                      "pool)")
    loop.add_argument("--n-test", type=int, default=None,
                      help="held-out test set (default: 200, or 20%% of a smaller pool)")
    loop.add_argument("--n-bins", type=int, default=5, help="total-depth bins")
    loop.add_argument("--weights", type=float, nargs=2, default=(2.0, 1.0), metavar=("W1", "W2"),
                      help="share of a bin below / at or above the threshold in an extension")
    loop.add_argument("--max-iter", type=int, default=50, help="most extensions")
    loop.add_argument("--max-samples", type=int, default=None,
                      help="most training samples (default: no limit)")
    loop.add_argument("--encoding", default="fcc", help="architecture encoding: fcc, fc, fe, "
                      "onehot, stat or lut (see make_latency_pipeline)")
    loop.add_argument("--regressor", default="mlp",
                      help="regressor: mlp, ridge, gbm or linear (see make_latency_pipeline)")
    loop.add_argument("--transfer-from", nargs="+", default=None, metavar="MODEL",
                      help="predictors of other devices (files saved by esm-sklearn fit, same "
                      "space; pickles: only trusted files) to start from: the loop then fits a "
                      "TransferLatencyRegressor on them, so a few measurements suffice "
                      "(default: none, the --encoding/--regressor pipeline from scratch)")
    loop.add_argument("--seed", type=int, default=0,
                      help="seeds sampling, the test set and the model; rerun with the same "
                      "seed to resume a device fit")
    p.add_argument("--out", default="predictor.joblib",
                   help="where to save the predictor; an existing file is replaced only if it "
                   "is a previous model (a pickle), never a store or an input")
    p.add_argument("--plots", default=None, metavar="DIR",
                   help="also write the figures (predicted vs measured, accuracy per bin, "
                   "convergence) as PNG files into this folder (default: none)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (default: shown)")
    p.set_defaults(func=commands["fit"])

    p = add("predict", help="predict latencies of architectures (JSON lines)",
            description="Predict the latency (ms) of each architecture of a JSON-lines file "
            "with a predictor saved by esm-sklearn fit. " + _TRUST)
    p.add_argument("--model", required=True,
                   help="a predictor saved by esm-sklearn fit (required; a pickle: only "
                   "trusted files)")
    p.add_argument("archs", help="file with one architecture (JSON object) per line; - for stdin")
    p.add_argument("--csv", action="store_true",
                   help="write CSV with columns arch,latency_ms,ood_score,ood (distance to the "
                   "model's training architectures and whether it is out of distribution; "
                   "default: one number per line)")
    p.add_argument("--device", default=None,
                   help="the device you are predicting for (e.g. cpu, cuda, h200): warn when the "
                   "model was fitted on another (default: not checked)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="the batch size you are predicting for: warn on a mismatch (default: not "
                   "checked)")
    p.add_argument("--resolution", type=int, default=None,
                   help="the input resolution you are predicting for: warn on a mismatch "
                   "(default: not checked)")
    p.add_argument("--out", default=None, help="file to write (default: standard output)")
    p.set_defaults(func=commands["predict"])

    p = add("evaluate", help="score a predictor on a measured latency table",
            description="Score a predictor saved by esm-sklearn fit on a measured table: "
            "overall and per depth bin, leaving out the architectures it was trained on. "
            + _TRUST)
    p.add_argument("--model", required=True,
                   help="a predictor saved by esm-sklearn fit (required; a pickle: only "
                   "trusted files)")
    p.add_argument("--table", default=None,
                   help="bundled table name or CSV path (default: none; or a HELP table)")
    _add_help_source(p, aliases=True)
    p.add_argument("--n-bins", type=int, default=None,
                   help="total-depth bins (default: the model's, else 5)")
    p.add_argument("--predictions", default=None, metavar="CSV",
                   help="also write arch, latency_ms, predicted_ms, in_training_set "
                   "(default: not written)")
    p.add_argument("--plots", default=None, metavar="DIR",
                   help="also write the figures (predicted vs measured, accuracy per bin) as "
                   "PNG files into this folder (default: none)")
    p.set_defaults(func=commands["evaluate"])

    # Further subcommands register here.
    return parser
