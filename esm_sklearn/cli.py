"""The ``esm-sklearn`` command: list spaces, sample, collect, fit, evaluate, predict.

Each subcommand is a ``_cmd_<name>(args)`` function registered in ``_build_parser``.
Errors of the library (bad input, a device that does not exist, an unwritable
store) end the command with ``esm-sklearn <command>: error: <message>`` and exit
status 2; a reader that closes the pipe early (``| head``) ends it quietly with
status 141, as it does other Unix tools.

Outputs never destroy inputs: an output path that is an input of the command
(store, table, model, architectures; also through another path or a symlink)
or a SQLite database is refused before any work. ``fit --out`` overwrites an
existing file only when it is itself a pickle (a previous model); every output
file is written to a temporary name and renamed, so an interrupted command
leaves the previous file intact.

Model files are pickles (joblib): loading one runs code, so load only model
files you trust.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from .macro import BUILTIN_SPACES

# ``esm-sklearn --help`` stays fast: the package's heavy modules (scikit-learn, pandas,
# torch) are imported by the commands that use them, not by the parser.


def get_space(name):
    from .spaces import get_space as _get_space

    return _get_space(name)


def list_spaces() -> list[str]:
    from .spaces import list_spaces as _list_spaces

    return _list_spaces()

_SQLITE_MAGIC = b"SQLite format 3\x00"
# A held-out test set smaller than this gives accuracies and a Kendall tau that
# are mostly noise; a replayed table with fewer distinct architectures is refused.
_MIN_TEST, _MIN_REPLAY = 25, 20
_TRUST = ("Model files are pickles: loading one runs code, so load only files you "
          "trust (e.g. written by your own esm-sklearn fit).")


# ------------------------------------------------------------------ paths
def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def _is_pickle(head: bytes) -> bool:
    # joblib.dump writes a plain pickle: protocol 2..5 starts with 0x80 <protocol>.
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def _check_output(path, option: str, inputs=(), model: bool = False) -> Path:
    """Refuse an output path that would destroy an input or a file that is not ours.

    Runs before any work. ``inputs``: (option, path) pairs of the command's
    inputs. ``model``: the output is a model, which may replace a previous model
    (a pickle) but nothing else; other outputs may replace anything but a
    store or a model. Creates the folder.
    """
    out = Path(path)
    for label, other in inputs:
        if other is not None and _same_file(out, Path(other)):
            raise ValueError(f"{option} {path} is the same file as {label} {other}; refusing to "
                             f"overwrite it (choose another {option})")
    if out.is_dir():
        raise ValueError(f"{option} {path} is a folder; give a file name")
    if out.exists():
        try:
            with open(out, "rb") as fh:
                head = fh.read(16)
        except OSError as exc:
            raise ValueError(f"{option} {path}: cannot read it ({exc.strerror})") from None
        if head.startswith(_SQLITE_MAGIC):
            raise ValueError(f"{option} {path} is a SQLite database (a measurement store?); "
                             "refusing to overwrite it")
        if model and not _is_pickle(head):
            raise ValueError(f"{option} {path} exists and is not a model file (not a pickle); "
                             "refusing to overwrite it: remove it or choose another name")
        if not model and _is_pickle(head):
            raise ValueError(f"{option} {path} is a model file (a pickle); refusing to "
                             "overwrite it with another kind of output")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{option} {path}: {parent} is a file, not a folder")
            break
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"{option} {path}: cannot create its folder ({exc.strerror})") from None
    if not os.access(out.parent, os.W_OK):
        raise ValueError(f"{option} {path}: the folder {out.parent} is not writable")
    return out


def _check_plot_dir(path, option: str = "--plots") -> Path:
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{option} {path} is a file; give a folder for the figures")
    _check_output(folder / "predicted_vs_measured.png", option)
    return folder


def _atomic_write(path: Path, write) -> None:
    """``write(tmp)`` then rename ``tmp`` to ``path``: readers never see half a file."""
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _open_store(path):
    """The store of a measuring command, refused before any timing when it cannot be written."""
    from .store import MeasurementStore

    store = MeasurementStore(path)
    if store.read_only:
        store.close()
        raise ValueError(f"--store {path} cannot be written (read-only file, folder or media); "
                         "it can still be read and exported from Python: give a writable --store")
    return store


# ------------------------------------------------------------ spaces / sample
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
    out = _check_output(args.out, "--out") if args.out else None
    archs = space.sample(
        args.n, strategy=args.strategy, n_bins=args.n_bins, random_state=args.seed
    )
    text = "".join(json.dumps(arch) + "\n" for arch in archs)
    if out is None:
        sys.stdout.write(text)
    else:
        _atomic_write(out, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return 0


def _collect_archs(space, n: int, strategy: str, n_bins: int, seed) -> tuple[list, list]:
    """The seeded architectures of ``collect`` and their sampling labels.

    ``mixed``: half balanced, half random (distinct), interleaved so that any
    prefix of the collection is half/half too.
    """
    return space.sample(n, strategy=strategy, n_bins=n_bins, random_state=seed, unique=True,
                        return_labels=True)


def _qc_line(check) -> str:
    verdict = "passed" if check.passed else "FAILED"
    spreads = ", ".join(
        f"ref {int(r.ref_id)}: {getattr(r, check.statistic):.2%} ({int(r.n_rounds)} rounds)"
        for r in check.spread.itertuples()
    )
    return f"QC {verdict} ({check.statistic} threshold {check.threshold:.1%}): {spreads}"


def _cmd_collect(args) -> int:
    from .oracle import TorchLatencyOracle

    space = get_space(args.space)
    # Everything that can be refused is refused before the store is touched or
    # anything is timed: outputs, the device and the oracle's settings, the store.
    export = (_check_output(args.export, "--export", [("--store", args.store)])
              if args.export else None)
    lut_out = (_check_output(args.profile_blocks, "--profile-blocks",
                             [("--store", args.store), ("--export", args.export)])
               if args.profile_blocks else None)
    oracle = TorchLatencyOracle(
        device=args.device, batch_size=args.batch_size, resolution=args.resolution,
        warmup=args.warmup, runs=args.runs, trim=args.trim, n_references=args.n_references,
        check_every=args.check_every or None, variance_threshold=args.variance_threshold,
        max_retries=args.max_retries, threads=args.threads, random_state=args.seed,
        progress=not args.no_progress,
    )
    oracle.device_description(space)
    archs, labels = _collect_archs(space, args.n, args.strategy, args.n_bins, args.seed)
    store = _open_store(args.store)
    oracle.set_params(store=store)
    # -- fleet (issue 12, H6): the same protocol and store, timed on dask workers
    if args.workers is not None or args.scheduler is not None:
        if args.profile_blocks:
            raise ValueError("--profile-blocks times on one device; leave out --workers/--scheduler")
        from .fleet import FleetLatencyOracle

        oracle = FleetLatencyOracle(oracle, n_workers=args.workers, scheduler=args.scheduler)
    # -- end fleet
    try:
        return _run_collect(args, space, oracle, store, archs, labels, export, lut_out)
    finally:
        store.close()


def _run_collect(args, space, oracle, store, archs, labels, export, lut_out) -> int:
    try:
        if archs:
            oracle.measure(archs, space=space, sampling=labels)
        if lut_out is not None:
            lut = oracle.profile_blocks(space, resolution=args.resolution)
            _atomic_write(lut_out, lambda tmp: lut.to_csv(tmp, index=False))
            print(f"profiled {len(lut)} blocks -> {lut_out}")
    except KeyboardInterrupt:
        key = getattr(oracle, "setting_key_", None)
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
        if args.n_references == 0:
            print("  QC: off (--n-references 0)")
        elif check is None:
            print("  QC: not run (no reference rounds)")
        else:
            print(f"  {_qc_line(check)}")
            n_retry = int((~oracle.qc_["passed"]).sum()) if len(oracle.qc_) else 0
            if n_retry:
                print(f"  {n_retry} QC round(s) of this session failed and their batches were "
                      "timed again (see the store's reference rows)")
        print(f"  store: {args.store} (setting {oracle.setting_key_[:12]})")
        if export is not None:
            store.export_csv(export, setting_key=oracle.setting_key_)
            print(f"  exported -> {export} (+ _references.csv)")
    return 0


# ------------------------------------------------------ fit / predict / evaluate
# The paper's N_Test, N_I, N_Step ("auto" sizes of a pool large enough for them).
_PAPER_SIZES = {"n_test": 200, "n_initial": 300, "n_step": 100}
# Options of the device oracle: (argparse dest, TorchLatencyOracle parameter).
_ORACLE_OPTIONS = (("resolution", "resolution"), ("runs", "runs"), ("warmup", "warmup"),
                   ("threads", "threads"), ("batch_size", "batch_size"),
                   ("n_references", "n_references"), ("check_every", "check_every"),
                   ("variance_threshold", "variance_threshold"),
                   ("max_retries", "max_retries"))


def _load_table(table=None, help_data=None, help_device=None, help_space=None):
    """The latency table of ``--table`` (bundled name or CSV) or of the HELP options."""
    from .datasets import list_bundled, load_bundled, load_help, load_latency_table

    uses_help = any(v is not None for v in (help_data, help_device, help_space))
    if table is not None and uses_help:
        raise ValueError("give either --table or the --help-* options, not both")
    if uses_help:
        if not help_device:
            raise ValueError("a HELP replay needs --help-target-device (a device column, e.g. "
                             "2080ti_1; see esm_sklearn.datasets.list_help_devices())")
        return load_help(help_data, help_device, space=help_space)
    if table is None:
        raise ValueError("give --table NAME_OR_CSV or --help-target-device DEV")
    if Path(table).is_file():
        return load_latency_table(table)
    names = list_bundled()
    if table.removesuffix(".csv") in names:
        return load_bundled(table)
    raise FileNotFoundError(
        f"--table {table!r} is neither a CSV file nor a bundled table (bundled: {', '.join(names)})"
    )


def _table_label(data) -> str:
    name = Path(data.filename).name.removesuffix(".gz").removesuffix(".csv")
    device = data.get("device")
    return f"{name} [{device}]" if device else name


def _load_model(path):
    """A fitted predictor saved with joblib (anything with ``predict``). Runs pickle code."""
    import joblib

    if not Path(path).is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    with open(path, "rb") as fh:
        head = fh.read(16)
    if head.startswith(_SQLITE_MAGIC):
        raise ValueError(f"{path}: is a SQLite database (a measurement store?), not a model file")
    try:
        model = joblib.load(path)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means: not a model file
        raise ValueError(f"{path}: not a model saved with joblib ({type(exc).__name__}: {exc})") from None
    if not callable(getattr(model, "predict", None)):
        raise ValueError(f"{path}: holds a {type(model).__name__}, not a predictor (no predict method)")
    return model


def _model_space(model):
    """The search space a fitted predictor was trained on, or None when it does not say."""
    from .spaces import SearchSpace

    for candidate in (model, getattr(model, "estimator_", None)):
        if candidate is None:
            continue
        space = getattr(candidate, "space_", None)
        if isinstance(space, SearchSpace):
            return space
        steps = getattr(candidate, "steps", None)
        if steps:
            space = getattr(steps[0][1], "space_", None)
            if isinstance(space, SearchSpace):
                return space
    return None


def _predict(model, archs):
    import numpy as np

    if not archs:
        return np.zeros(0)
    pred = np.asarray(model.predict(archs), dtype=float)
    if pred.ndim == 2 and pred.shape[1] == 1:
        pred = pred[:, 0]
    return pred


def _pct(value) -> str:
    return "   n/a" if value != value else f"{100 * value:5.1f}%"


def _format_bins(table, threshold=None, train_counts=None) -> str:
    """The per-bin accuracy table as text (``table`` from :func:`binwise_accuracy`)."""
    header = "  bin  depth    test n  train n" if train_counts is not None else "  bin  depth         n"
    lines = [header + "  accuracy  within 10%"]
    for row in table.itertuples():
        acc = row.accuracy
        flag = "  < threshold" if threshold is not None and acc == acc and acc < threshold else ""
        train = f"  {int(train_counts[row.bin]):7d}" if train_counts is not None else ""
        lines.append(
            f"  {row.bin:3d}  {row.depth_low:3d}-{row.depth_high:<3d}  {row.count:6d}{train}"
            f"    {_pct(acc)}      {_pct(row.within_10)}{flag}"
        )
    return "\n".join(lines)


def _format_history(history, n_bins: int) -> str:
    lines = ["  iter  samples  added  accuracy  worst bin  " + " ".join(
        f"bin{b:<3d}" for b in range(n_bins)) + "  below      measure s  fit s"]
    for row in history.to_dict("records"):
        accs = [row[f"acc_bin{b}"] for b in range(n_bins)]
        finite = [a for a in accs if a == a]
        worst = min(finite) if finite else float("nan")
        below = ",".join(str(b) for b in row["below_bins"]) or "-"
        lines.append(
            f"  {row['iteration']:4d}  {row['n_samples']:7d}  {row['n_added']:5d}    "
            f"{_pct(row['accuracy'])}     {_pct(worst)}  "
            + " ".join(_pct(a) for a in accs)
            + f"  {below:9s}  {row['measure_seconds']:8.1f}  {row['fit_seconds']:5.1f}"
        )
    return "\n".join(lines)


def _scores_line(y_true, y_pred) -> str:
    from .metrics import kendall_tau, latency_accuracy, rmse, within_accuracy

    return (f"accuracy (1 - MAPE) {_pct(latency_accuracy(y_true, y_pred)).strip()}, "
            f"within +-10% {_pct(within_accuracy(y_true, y_pred, 0.1)).strip()}, "
            f"Kendall tau {kendall_tau(y_true, y_pred):.3f}, RMSE {rmse(y_true, y_pred):.4g} ms")


def _warn_small_test(n_test: int) -> None:
    if n_test < _MIN_TEST:
        print(f"WARNING: the held-out test set has only {n_test} architecture(s) (fewer than "
              f"{_MIN_TEST}): its accuracy and Kendall tau are mostly noise; measure or replay "
              "more architectures, or give --n-test", file=sys.stderr, flush=True)


def _write_plots(folder: Path, y_true, y_pred, bins, label: str, train_size=None,
                 train_counts=None, history=None, threshold=None) -> list[Path]:
    """The figures of a fit or an evaluation (esm_sklearn.plotting) as PNG files."""
    import matplotlib

    matplotlib.use("Agg")
    import pandas as pd

    from .plotting import plot_binwise_sample_size, plot_convergence, plot_predicted_vs_measured

    folder.mkdir(parents=True, exist_ok=True)
    figures = {"predicted_vs_measured.png": plot_predicted_vs_measured(
        pd.DataFrame({"y_true": y_true, "y_pred": y_pred, "encoding": label}),
        title=f"predicted vs measured ({len(y_true)} architectures)")}
    from .metrics import latency_accuracy

    binwise = bins.assign(train_size=train_size if train_size is not None
                          else "an unknown number of",
                          overall=latency_accuracy(y_true, y_pred))
    if train_counts is not None:
        binwise["train_count"] = [int(train_counts[b]) for b in binwise["bin"]]
    figures["binwise_accuracy.png"] = plot_binwise_sample_size(binwise, title="accuracy per depth bin")
    if history is not None and len(history):
        acc_cols = [c for c in history.columns if c.startswith("acc_bin")]
        frame = pd.DataFrame({"n_samples": history["n_samples"],
                              "worst_bin": history[acc_cols].min(axis=1, skipna=True),
                              "strategy": label})
        if threshold is not None:
            frame["threshold"] = threshold
        figures["convergence.png"] = plot_convergence(frame, panel=None,
                                                      title="worst-bin accuracy per round")
    written = []
    for name, fig in figures.items():
        path = folder / name
        _atomic_write(path, lambda tmp, fig=fig: fig.savefig(tmp, dpi=120))
        written.append(path)
    return written


_STOP = {"threshold_reached": "every bin reached the threshold",
         "plateau": "the accuracy stopped improving",
         "max_iter": "--max-iter reached", "max_samples": "--max-samples reached",
         "pool_exhausted": "no candidate architecture left"}


def _cmd_fit(args) -> int:
    from .spaces import arch_key

    uses_help = any(v is not None for v in (args.help_data, args.help_device, args.help_space))
    replay = args.table is not None or uses_help
    inputs = [("--table", args.table), ("--help-data", args.help_data)]
    if replay:
        device_opts = [("--device", args.device), ("--store", args.store)] + [
            ("--" + dest.replace("_", "-"), getattr(args, dest)) for dest, _ in _ORACLE_OPTIONS]
        given = [opt for opt, value in device_opts if value is not None]
        if given:
            raise ValueError(
                f"{', '.join(given)} only apply when measuring on a device; a replay "
                "(--table / --help-target-device) measures nothing"
            )
        out = _check_output(args.out, "--out", inputs, model=True)
        plots = _check_plot_dir(args.plots) if args.plots else None
        data = _load_table(args.table, args.help_data, args.help_device, args.help_space)
        space = get_space(data.space)
        if args.space is not None and get_space(args.space).name != space.name:
            raise ValueError(f"--space {args.space} does not match the table's space {space.name!r}")
        n_pool = len({arch_key(a) for a in data.data})
        if n_pool < _MIN_REPLAY:
            raise ValueError(
                f"{_table_label(data)} holds only {n_pool} distinct architecture(s); a fit needs "
                f"at least {_MIN_REPLAY} (a held-out test set, and training architectures in "
                "every depth bin)")
        source = f"replay of {_table_label(data)} ({len(data.data)} rows, {n_pool} distinct architectures)"
        store = oracle = None
    else:
        from .oracle import TorchLatencyOracle

        if args.space is None:
            raise ValueError(
                "give --space (and --device) to measure architectures on a device, or "
                "--table / --help-target-device to replay a measured table"
            )
        space = get_space(args.space)
        device = args.device or "cpu"
        oracle_params = {param: getattr(args, dest) for dest, param in _ORACLE_OPTIONS
                         if getattr(args, dest) is not None}
        if oracle_params.get("check_every") == 0:
            oracle_params["check_every"] = None  # only at start and end
        oracle = TorchLatencyOracle(device=device, progress=not args.no_progress, **oracle_params)
        oracle.device_description(space)  # a bad device or setting fails here, before any file
        store_path = args.store or str(Path("runs") / f"{device.replace(':', '')}_{space.name}.sqlite")
        out = _check_output(args.out, "--out", [("--store", store_path)], model=True)
        plots = _check_plot_dir(args.plots) if args.plots else None
        store = _open_store(store_path)
        oracle.set_params(store=store)
        source = f"measuring on {device}, store {store_path}"
    try:
        return _run_fit(args, space, source, data if replay else None, store, oracle, out,
                        plots)
    finally:
        if store is not None:
            store.close()


def _run_fit(args, space, source, data, store, oracle, out, plots) -> int:
    """The fit itself, once every input and output has been checked."""
    import time

    import joblib
    import numpy as np

    from .active import ActiveLatencyEstimator
    from .metrics import binwise_accuracy
    from .predictors import make_latency_pipeline
    from .quality import ReferenceCheck

    replay = data is not None
    pipeline = make_latency_pipeline(encoding=args.encoding, regressor=args.regressor,
                                     space=space, random_state=args.seed)
    sizes = {name: getattr(args, name) if getattr(args, name) is not None else "auto"
             for name in ("n_test", "n_initial", "n_step")}
    est = ActiveLatencyEstimator(
        estimator=pipeline, oracle=oracle, space=space.name, strategy=args.strategy,
        weights=tuple(args.weights), evaluation=args.evaluation, n_bins=args.n_bins,
        acc_threshold=args.acc_threshold, max_iter=args.max_iter, max_samples=args.max_samples,
        random_state=args.seed, verbose=not args.no_progress, **sizes,
    )
    print(f"fit {space.name}: {source}")
    print(f"  predictor {args.encoding} + {args.regressor}, strategy {args.strategy}, "
          f"threshold {100 * args.acc_threshold:g}% ({args.evaluation}, {args.n_bins} bins), "
          + ", ".join(f"{k} {v}" for k, v in sizes.items()) + f", seed {args.seed}", flush=True)
    start = time.perf_counter()
    rows_before = len(store.frame("arch")) if store is not None else 0
    try:
        if replay:
            est.fit(data.data, data.target)
        else:
            est.fit()
    except KeyboardInterrupt:
        if replay:
            print("\ninterrupted; nothing was saved", file=sys.stderr)
        else:
            n_new = len(store.frame("arch")) - rows_before
            print(f"\ninterrupted: the {n_new} architecture(s) measured in this session are safely "
                  f"in {store.path}; run the same command again to resume (measured "
                  "architectures are not timed again).", file=sys.stderr)
        return 130
    seconds = time.perf_counter() - start
    est_sizes = {n: getattr(est, n + "_", None) for n in ("n_test", "n_initial", "n_step")}
    print("sizes used: " + ", ".join(f"{k} {v}" for k, v in est_sizes.items())
          + f" ({len(est.X_train_)} training + {len(est.X_test_)} test architectures)")
    scaled = [n for n, v in sizes.items() if v == "auto" and est_sizes[n] != _PAPER_SIZES[n]]
    if scaled:
        print(f"  ({', '.join(scaled)} scaled down from the paper's "
              f"{'/'.join(str(_PAPER_SIZES[n]) for n in scaled)} to fit the table; "
              "give them to override)")
    _warn_small_test(len(est.X_test_))
    _atomic_write(out, lambda tmp: joblib.dump(est, tmp))

    print("\nhistory (accuracy on the held-out test set):")
    print(_format_history(est.history_, args.n_bins))
    print(f"\nper-bin accuracy of the final predictor on the {len(est.X_test_)} held-out test "
          "architectures:")
    y_pred = est.predict(est.X_test_)
    bins = binwise_accuracy(est.y_test_, y_pred, est.X_test_, space=space, n_bins=args.n_bins)
    train_counts = np.bincount(space.bin_index(est.X_train_, args.n_bins), minlength=args.n_bins)
    print(_format_bins(bins, args.acc_threshold, train_counts))
    print(f"  all bins: {_scores_line(est.y_test_, y_pred)}")
    stop = _STOP.get(est.termination_condition_, est.termination_condition_)
    print(f"\nstopped: {stop} ({est.termination_condition_}) after {est.n_iter_} extension(s); "
          f"{len(est.X_train_)} training + {len(est.X_test_)} test architectures"
          + (f", {est.n_failed_} failed" if est.n_failed_ else "") + f"; {seconds:.1f} s")
    if store is not None:
        rows_after = len(store.frame("arch"))
        print(f"store {store.path}: {rows_after - rows_before} new measurement(s) this session, "
              f"{rows_after} architecture rows in all")
        if args.n_references == 0:
            print("quality control: off (--n-references 0)")
        elif isinstance(getattr(est, "qc_", None), ReferenceCheck):
            print(f"quality control: {est.qc_}")
    if plots is not None:
        files = _write_plots(plots, est.y_test_, y_pred, bins, args.encoding,
                             train_size=len(est.X_train_), train_counts=train_counts,
                             history=est.history_, threshold=args.acc_threshold)
        print(f"figures -> {', '.join(str(f) for f in files)}")
    print(f"saved -> {out}")
    return 0


def _read_archs(path: str, space) -> list[dict]:
    """Architectures from a JSON-lines file (``-``: standard input), validated.

    Blank lines are skipped; an input without any architecture is an error.
    """
    name = "<stdin>" if path == "-" else path
    try:
        if path == "-":
            lines = sys.stdin.read().removeprefix("\ufeff").splitlines()
        else:
            with open(path, encoding="utf-8-sig") as fh:  # -sig: a byte-order mark is skipped
                lines = fh.read().splitlines()
    except FileNotFoundError:
        raise FileNotFoundError(f"architecture file not found: {path}") from None
    except IsADirectoryError:
        raise ValueError(f"{name} is a folder; expected a file of JSON lines") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{name}: not a UTF-8 text file ({exc.reason} at byte {exc.start})") from None
    archs = []
    for lineno, line in enumerate(lines, 1):
        text = line.strip()
        if not text:
            continue
        try:
            arch = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{name} line {lineno}: not valid JSON ({exc.msg}): {text[:80]!r}") from None
        except RecursionError:
            raise ValueError(f"{name} line {lineno}: JSON nested too deeply to be an "
                             "architecture") from None
        if not isinstance(arch, dict):
            raise ValueError(
                f"{name} line {lineno}: expected an architecture (a JSON object), got "
                f"{type(arch).__name__} {text[:80]!r}"
            )
        try:
            line_space = space if space is not None else get_space(arch.get("space"))
            archs.append(line_space.validate(arch))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{name} line {lineno}: {exc}") from None
        except RecursionError:
            raise ValueError(f"{name} line {lineno}: architecture nested too deeply") from None
    if not archs:
        raise ValueError(f"{name}: no architecture in it (expected one JSON object per line)")
    return archs


def _cmd_predict(args) -> int:
    import csv
    import io

    inputs = [("--model", args.model)] + ([("ARCHS", args.archs)] if args.archs != "-" else [])
    out = _check_output(args.out, "--out", inputs) if args.out else None
    model = _load_model(args.model)
    archs = _read_archs(args.archs, _model_space(model))
    pred = _predict(model, archs)
    if len(pred) != len(archs):
        raise ValueError(f"the model returned {len(pred)} predictions for {len(archs)} architectures")
    buf = io.StringIO()
    if args.csv:
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["arch", "latency_ms"])
        for arch, value in zip(archs, pred, strict=True):
            writer.writerow([json.dumps(arch, separators=(",", ":")), f"{value:.6g}"])
    else:
        for value in pred:
            buf.write(f"{value:.6g}\n")
    if out is None:
        sys.stdout.write(buf.getvalue())
    else:
        _atomic_write(out, lambda tmp: tmp.write_text(buf.getvalue(), encoding="utf-8"))
    return 0


def _cmd_evaluate(args) -> int:
    import numpy as np
    import pandas as pd

    from .metrics import binwise_accuracy
    from .spaces import arch_key

    inputs = [("--model", args.model), ("--table", args.table), ("--help-data", args.help_data)]
    predictions = (_check_output(args.predictions, "--predictions", inputs)
                   if args.predictions else None)
    plots = _check_plot_dir(args.plots) if args.plots else None
    model = _load_model(args.model)
    data = _load_table(args.table, args.help_data, args.help_device, args.help_space)
    space = _model_space(model)
    if space is not None and space.name != data.space:
        raise ValueError(
            f"the model predicts architectures of space {space.name!r}, the table holds {data.space!r}"
        )
    space = get_space(data.space)
    n_bins = args.n_bins if args.n_bins is not None else int(getattr(model, "n_bins", 5))
    pred = _predict(model, data.data)
    y = np.asarray(data.target, dtype=float)
    if len(pred) != len(y):
        raise ValueError(f"the model returned {len(pred)} predictions for {len(y)} architectures")
    if not np.isfinite(pred).all():
        bad = int(np.flatnonzero(~np.isfinite(pred))[0])
        raise ValueError(f"the model predicted a non-finite latency for row {bad} of the table")
    train = getattr(model, "X_train_", None)
    seen = np.zeros(len(y), dtype=bool)
    if train is not None:
        train_keys = {arch_key(a) for a in train}
        seen = np.array([arch_key(a) in train_keys for a in data.data], dtype=bool)

    print(f"evaluate {args.model} on {_table_label(data)}: {len(y)} architectures of {space.name}")
    print(f"  all rows:  {_scores_line(y, pred)}")
    rows = np.ones(len(y), dtype=bool)
    if seen.any():
        rows = ~seen
        print(f"  {int(seen.sum())} of these architectures were in the model's training set")
        if rows.any():
            print(f"  the other {int(rows.sum())}: {_scores_line(y[rows], pred[rows])}")
        else:
            print("  every architecture was in the training set: these are training scores")
            rows = seen
    if int(rows.sum()) < _MIN_TEST:
        print(f"WARNING: only {int(rows.sum())} architecture(s) to score (fewer than "
              f"{_MIN_TEST}): the accuracy and Kendall tau are mostly noise", file=sys.stderr)
    label = "the architectures not trained on" if seen.any() and not seen.all() else "all rows"
    archs = [a for a, keep in zip(data.data, rows, strict=True) if keep]
    table = binwise_accuracy(y[rows], pred[rows], archs, space=space, n_bins=n_bins)
    print(f"\nper-bin accuracy ({label}):")
    print(_format_bins(table, getattr(model, "acc_threshold", None)))
    if predictions is not None:
        frame = pd.DataFrame({"arch": [json.dumps(a, separators=(",", ":")) for a in data.data],
                              "latency_ms": y, "predicted_ms": pred, "in_training_set": seen})
        _atomic_write(predictions, lambda tmp: frame.to_csv(tmp, index=False))
        print(f"\npredictions -> {predictions}")
    if plots is not None:
        files = _write_plots(plots, y[rows], pred[rows], table, type(model).__name__,
                             train_size=len(train) if train is not None else None)
        print(f"figures -> {', '.join(str(f) for f in files)}")
    return 0


# ------------------------------------------------------------------ parser
def _check_fraction_option(value, option: str, example: str, include_one: bool = False) -> None:
    """Thresholds are fractions; 3 or 95 are percentages typed by mistake."""
    high_ok = value <= 1 if include_one else value < 1
    if not (math.isfinite(value) and value > 0 and high_ok):
        interval = "(0, 1]" if include_one else "(0, 1)"
        raise ValueError(f"{option} must be a fraction in {interval} ({example}), got {value:g}")


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


def _build_parser() -> argparse.ArgumentParser:
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
    p.set_defaults(func=_cmd_spaces)

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
    p.set_defaults(func=_cmd_sample)

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
    p.add_argument("--runs", type=int, default=150, help="timed inferences per model")
    p.add_argument("--warmup", type=int, default=10, help="untimed inferences first")
    p.add_argument("--trim", type=float, default=0.2,
                   help="share of the fastest and of the slowest runs dropped before averaging")
    p.add_argument("--batch-size", type=int, default=1, help="input batch size")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads while timing (default: torch's setting)")
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
    p.set_defaults(func=_cmd_collect)

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
    dev.add_argument("--runs", type=int, default=None, help="timed runs per model (default: 150)")
    dev.add_argument("--warmup", type=int, default=None, help="untimed runs first (default: 10)")
    dev.add_argument("--threads", type=int, default=None,
                     help="torch intra-op threads while timing (default: torch's setting)")
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
    p.set_defaults(func=_cmd_fit)

    p = add("predict", help="predict latencies of architectures (JSON lines)",
            description="Predict the latency (ms) of each architecture of a JSON-lines file "
            "with a predictor saved by esm-sklearn fit. " + _TRUST)
    p.add_argument("--model", required=True,
                   help="a predictor saved by esm-sklearn fit (required; a pickle: only "
                   "trusted files)")
    p.add_argument("archs", help="file with one architecture (JSON object) per line; - for stdin")
    p.add_argument("--csv", action="store_true",
                   help="write CSV with columns arch,latency_ms (default: one number per line)")
    p.add_argument("--out", default=None, help="file to write (default: standard output)")
    p.set_defaults(func=_cmd_predict)

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
    p.set_defaults(func=_cmd_evaluate)

    # Further subcommands register here.
    return parser


def _quiet_stdout() -> None:
    """After a closed pipe: point stdout at /dev/null so the exit flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def main(argv=None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)  # usage errors exit 2, --help/--version exit 0
    try:
        if args.command in ("fit", "collect"):
            if args.variance_threshold is not None:
                _check_fraction_option(args.variance_threshold, "--variance-threshold",
                                       "0.03 is 3%")
            if args.command == "fit":
                _check_fraction_option(args.acc_threshold, "--acc-threshold", "0.95 is 95%",
                                       include_one=True)
        code = args.func(args)
        sys.stdout.flush()
        return code
    except KeyboardInterrupt:  # collect and fit say what is safe themselves
        print(f"\nesm-sklearn {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader stopped early (`... | head`): stop quietly, like other Unix tools.
        _quiet_stdout()
        return 141
    except (ValueError, KeyError, OSError, RuntimeError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"esm-sklearn {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
