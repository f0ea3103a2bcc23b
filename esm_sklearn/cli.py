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

import json
import math
import os
import sys
from pathlib import Path

from ._cli_io import (
    _atomic_write,
    _check_output,
    _check_plot_dir,
    _load_model,
    _load_table,
    _model_space,
    _open_store,
    _predict,
    _read_archs,
    _table_label,
    get_space,
)
from ._cli_parser import _HelpFormatter, build_parser  # noqa: F401 (_HelpFormatter: tests)
from ._cli_report import (
    _MIN_TEST,
    _STOP,
    _format_bins,
    _format_history,
    _qc_line,
    _scores_line,
    _warn_small_test,
    _write_plots,
)

# ``esm-sklearn --help`` stays fast: the package's heavy modules (scikit-learn, pandas,
# torch) are imported by the commands that use them, not by the parser.


def list_spaces() -> list[str]:
    from .spaces import list_spaces as _list_spaces

    return _list_spaces()

# A replayed table with fewer distinct architectures is refused.
_MIN_REPLAY = 20


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
        max_retries=args.max_retries, threads=args.threads, clock=args.clock,
        paired=args.paired, min_runs=args.min_runs, rel_ci=args.rel_ci or None,
        burn_in=args.burn_in, random_state=args.seed, progress=not args.no_progress,
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
                again = ("the batches before them were timed again" if s["n_retimed"]
                         else "nothing was timed again (--max-retries 0)")
                print(f"  {n_retry} QC round(s) of this session failed; {again} (see the "
                      "store's reference rows)")
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
                   ("max_retries", "max_retries"), ("clock", "clock"), ("paired", "paired"),
                   ("min_runs", "min_runs"), ("rel_ci", "rel_ci"), ("burn_in", "burn_in"))


def _cmd_fit(args) -> int:
    from .spaces import arch_key

    uses_help = any(v is not None for v in (args.help_data, args.help_device, args.help_space))
    replay = args.table is not None or uses_help
    inputs = [("--table", args.table), ("--help-data", args.help_data)] + [
        ("--transfer-from", path) for path in args.transfer_from or ()]
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
        if oracle_params.get("rel_ci") == 0:
            oracle_params["rel_ci"] = None  # always --runs
        oracle = TorchLatencyOracle(device=device, progress=not args.no_progress, **oracle_params)
        oracle.device_description(space)  # a bad device or setting fails here, before any file
        store_path = args.store or str(Path("runs") / f"{device.replace(':', '')}_{space.name}.sqlite")
        out = _check_output(args.out, "--out", [("--store", store_path)] + inputs[2:], model=True)
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
    if args.transfer_from:
        from .transfer import TransferLatencyRegressor

        sources = [_load_model(path) for path in args.transfer_from]
        pipeline = TransferLatencyRegressor(sources, random_state=args.seed)
        label = f"transfer from {len(sources)} predictor(s)"
    else:
        pipeline = make_latency_pipeline(encoding=args.encoding, regressor=args.regressor,
                                         space=space, random_state=args.seed)
        label = f"{args.encoding} + {args.regressor}"
    sizes = {name: getattr(args, name) if getattr(args, name) is not None else "auto"
             for name in ("n_test", "n_initial", "n_step")}
    est = ActiveLatencyEstimator(
        estimator=pipeline, oracle=oracle, space=space.name, strategy=args.strategy,
        weights=tuple(args.weights), evaluation=args.evaluation, n_bins=args.n_bins,
        acc_threshold=args.acc_threshold, max_iter=args.max_iter, max_samples=args.max_samples,
        random_state=args.seed, verbose=not args.no_progress, **sizes,
    )
    print(f"fit {space.name}: {source}")
    print(f"  predictor {label}, strategy {args.strategy}, "
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
    if replay:  # the loop saw a table: the table knows the device, batch size, resolution
        from .setting import record_setting, setting_from_table

        record_setting(est, {**setting_from_table(data, n_bins=args.n_bins),
                             **{k: est.setting_[k] for k in ("n_rows", "n_bins", "rows_per_bin")}})
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


def _cmd_predict(args) -> int:
    import csv
    import io

    inputs = [("--model", args.model)] + ([("ARCHS", args.archs)] if args.archs != "-" else [])
    out = _check_output(args.out, "--out", inputs) if args.out else None
    from .setting import check_setting

    model = _load_model(args.model)
    setting = getattr(model, "setting_", None)
    if setting:
        print("model fitted for: " + ", ".join(
            f"{k} {setting[k]}" for k in ("space", "device", "batch_size", "resolution", "source")
            if setting.get(k) is not None), file=sys.stderr)
    expected = {k: getattr(args, k) for k in ("device", "batch_size", "resolution")
                if getattr(args, k) is not None}
    if expected:
        import warnings

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            check_setting(model, **expected)
        for w in caught:
            print(f"esm-sklearn predict: warning: {w.message}", file=sys.stderr)
    archs = _read_archs(args.archs, _model_space(model))
    pred = _predict(model, archs)
    ood = getattr(model, "ood_", None)
    if len(pred) != len(archs):
        raise ValueError(f"the model returned {len(pred)} predictions for {len(archs)} architectures")
    buf = io.StringIO()
    if args.csv:
        writer = csv.writer(buf, lineterminator="\n")
        scores = ood.ood_score(archs) if ood is not None and archs else [float("nan")] * len(archs)
        writer.writerow(["arch", "latency_ms", "ood_score", "ood"])
        for arch, value, score in zip(archs, pred, scores, strict=True):
            flag = "" if ood is None else int(score > ood.threshold)
            writer.writerow([json.dumps(arch, separators=(",", ":")), f"{value:.6g}",
                             f"{score:.3g}", flag])
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


def _build_parser():
    return build_parser({"spaces": _cmd_spaces, "sample": _cmd_sample, "collect": _cmd_collect,
                         "fit": _cmd_fit, "predict": _cmd_predict, "evaluate": _cmd_evaluate})


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
