"""Throughput of what a NAS loop calls: sampling, search operators, the codec, prediction.

Prints architectures per second (median and range over ``--repeats`` runs) of
``space.sample``, ``mutate``, ``crossover``, ``neighbours``, ``to_vector`` and
``from_vector`` for every built-in space, then of a predictor
(``make_latency_pipeline`` fitted on the bundled ``h200_resnet_b32`` table)
called on batches of 1, 10, 100 and 10,000 architectures, with torch's default
number of threads and with ``torch.set_num_threads(1)``. ``--fork-check``
then predicts with the default threads, forks a worker that predicts too (with
the threads it inherits, then with one thread), and reports whether it
finished within ``--fork-timeout`` seconds.

    python benchmarks/bench_nas_ops.py                  # about 2 min
    python benchmarks/bench_nas_ops.py --quick --fork-check
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time

import numpy as np

from esm_sklearn import get_space, make_latency_pipeline
from esm_sklearn.datasets import load_bundled

SPACES = ["resnet", "mobilenetv3", "densenet", "ofa_mobilenetv3", "fbnet"]


def rate(n_items: int, repeats: int, fn, *args) -> tuple[float, float, float]:
    """(median, min, max) items per second over ``repeats`` calls of ``fn(*args)``."""
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args)
        rates.append(n_items / (time.perf_counter() - start))
    return float(np.median(rates)), min(rates), max(rates)


def fmt(r) -> str:
    return f"{r[0]:>10,.0f}/s ({r[1]:,.0f}-{r[2]:,.0f})"


def _mutate_all(space, archs, rng):
    return [space.mutate(a, rng) for a in archs]


def _crossover_all(space, archs, rng):
    return [space.crossover(a, b, rng) for a, b in zip(archs, archs[1:] + archs[:1])]


def _neighbours_all(space, archs):
    return [space.neighbours(a) for a in archs]


def _predict_chunks(model, chunks):
    return [model.predict(c) for c in chunks]


def bench_space(name: str, n: int, repeats: int) -> None:
    space = get_space(name)
    archs = space.sample(n, random_state=0)
    rng = np.random.RandomState(0)
    V = space.to_vector(archs)
    few = archs[: max(1, n // 20)]
    per = sum(len(space.neighbours(a)) for a in few) / len(few)
    print(f"  {name}")
    print("    sample      ", fmt(rate(n, repeats, space.sample, n, "random", 5, 1)))
    print("    mutate      ", fmt(rate(n, repeats, _mutate_all, space, archs, rng)))
    print("    crossover   ", fmt(rate(n, repeats, _crossover_all, space, archs, rng)))
    print("    neighbours  ", fmt(rate(len(few), repeats, _neighbours_all, space, few)),
          f"archs ({per:.0f} neighbours each)")
    print("    to_vector   ", fmt(rate(n, repeats, space.to_vector, archs)))
    print("    from_vector ", fmt(rate(n, repeats, space.from_vector, V)))


def bench_operators(n: int, repeats: int) -> None:
    print(f"operators and codec, {n} architectures per run, {repeats} runs: median (range)")
    for name in SPACES:
        bench_space(name, n, repeats)


def fit_predictor(max_epochs: int):
    table = load_bundled("h200_resnet_b32")
    return make_latency_pipeline(space="resnet", random_state=0, max_epochs=max_epochs).fit(
        table.data, table.target)


def bench_predict(model, total: int, repeats: int) -> None:
    import torch

    default = torch.get_num_threads()
    space = get_space("resnet")
    archs = space.sample(total, random_state=2)
    print(f"\npredict (FCC + MLP pipeline), {total} architectures per run in batches of b, "
          f"{repeats} runs: archs/s median (range)")
    for batch in (1, 10, 100, 10_000):
        n = min(total, max(batch, total if batch >= 100 else total // 10))
        chunks = [archs[i : i + batch] for i in range(0, n, batch)]
        for threads in (default, 1):
            torch.set_num_threads(threads)
            r = rate(n, repeats, _predict_chunks, model, chunks)
            print(f"  batch {batch:>6}  threads {threads}:  {fmt(r)}")
        torch.set_num_threads(default)
    enc, reg = model[0], model[-1]
    X = enc.transform(archs)
    for threads in (default, 1):
        torch.set_num_threads(threads)
        print(f"  of which encoding {fmt(rate(total, repeats, enc.transform, archs))}, "
              f"MLP alone {fmt(rate(total, repeats, reg.predict, X))} (threads {threads})")
    torch.set_num_threads(default)


def _child_predict(model, archs, threads):
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    return float(np.sum(model.predict(archs)))


def fork_check(model, timeout: float) -> None:
    import torch

    archs = get_space("resnet").sample(10_000, random_state=3)
    print(f"\nfork check: predict 10k in the parent with {torch.get_num_threads()} threads, then "
          "a fork-started worker predicts 10k")
    model.predict(archs)
    for threads in (None, 1):
        label = "as inherited" if threads is None else f"after torch.set_num_threads({threads})"
        with mp.get_context("fork").Pool(1) as pool:
            result = pool.apply_async(_child_predict, (model, archs, threads))
            try:
                result.get(timeout=timeout)
                print(f"  worker predicting with threads {label}: finished")
            except mp.TimeoutError:
                print(f"  worker predicting with threads {label}: HUNG (no result in {timeout:.0f} s)")
                pool.terminate()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=5000, help="architectures per operator run")
    p.add_argument("--predict-n", type=int, default=10_000, help="architectures per predict run")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--max-epochs", type=int, default=100)
    p.add_argument("--fork-check", action="store_true")
    p.add_argument("--fork-timeout", type=float, default=30.0)
    p.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.predict_n, args.repeats, args.max_epochs = 500, 1000, 2, 5
    bench_operators(args.n, args.repeats)
    model = fit_predictor(args.max_epochs)
    bench_predict(model, args.predict_n, args.repeats)
    if args.fork_check:
        fork_check(model, args.fork_timeout)


if __name__ == "__main__":
    main()
