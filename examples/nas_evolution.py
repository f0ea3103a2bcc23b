"""Evolutionary NAS under a latency budget with ``space.mutate`` and ``space.crossover``.

A latency predictor for the H200 at batch size 32 is fitted on the bundled
``h200_resnet_b32`` table. The search keeps a population of ResNet-space
architectures; each generation, parents picked by tournament make children
(per-unit crossover, then one mutation each), the predictor scores all children
in one batched call, and the population becomes the best architectures by
parameter count among those predicted under the budget (over-budget ones rank
behind every feasible one, by latency). The winners are printed with their
out-of-distribution score (distance to the predictor's training data).

    python examples/nas_evolution.py                       # 30 generations, seconds
    python examples/nas_evolution.py --generations 2 --population 16
"""

from __future__ import annotations

import argparse

import numpy as np

from esm_sklearn import get_space, make_latency_pipeline
from esm_sklearn.datasets import load_bundled
from esm_sklearn.setting import check_setting, record_setting, setting_from_table


def rank(params: np.ndarray, latency: np.ndarray, budget: float) -> np.ndarray:
    """Best first: feasible by most parameters, then infeasible by least latency."""
    feasible = latency <= budget
    return np.lexsort((np.where(feasible, -params, latency), ~feasible))


def evolve(space, predictor, budget, population, generations, rng):
    archs = space.sample(population, strategy="balanced", random_state=rng)
    params, latency = space.count_params(archs).astype(float), predictor.predict(archs)
    for g in range(1, generations + 1):
        picks = rng.randint(population, size=(population, 2, 2))  # two tournaments of two
        order = np.argsort(rank(params, latency, budget))  # position of each arch in the ranking
        parents = [[pair[np.argmin(order[pair])] for pair in trial] for trial in picks]
        children = [space.mutate(space.crossover(archs[a], archs[b], rng), rng) for a, b in parents]
        archs = archs + children
        params = np.concatenate([params, space.count_params(children)])
        latency = np.concatenate([latency, predictor.predict(children)])
        keep = rank(params, latency, budget)[:population]
        archs, params, latency = [archs[i] for i in keep], params[keep], latency[keep]
        if g == 1 or g == generations or g % 10 == 0:
            print(f"generation {g:3d}: best {params[0] / 1e6:6.1f} M params at "
                  f"{latency[0]:.2f} ms predicted ({np.sum(latency <= budget)} under budget)")
    return archs, params, latency


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--generations", type=int, default=30)
    p.add_argument("--population", type=int, default=100)
    p.add_argument("--budget-ms", type=float, default=None,
                   help="latency budget (default: the 25th percentile of the training latencies)")
    p.add_argument("--max-epochs", type=int, default=100, help="predictor training epochs")
    p.add_argument("--top", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    space = get_space("resnet")
    table = load_bundled("h200_resnet_b32")
    predictor = make_latency_pipeline(space="resnet", random_state=0, max_epochs=args.max_epochs)
    predictor.fit(table.data, table.target)
    record_setting(predictor, setting_from_table(table), table.data)
    check_setting(predictor, space=space, device="h200", batch_size=32)  # warns if not
    budget = args.budget_ms if args.budget_ms is not None else float(np.percentile(table.target, 25))
    print(f"budget {budget:.2f} ms predicted on the H200 at batch 32; population "
          f"{args.population}, {args.generations} generations")

    rng = np.random.RandomState(args.seed)
    archs, params, latency = evolve(space, predictor, budget, args.population, args.generations, rng)
    top = archs[: args.top]
    print(f"\n{'params_M':>9} {'pred_ms':>8} {'ood':>5}  depth")
    for arch, n, ms, score in zip(top, params, latency, predictor.ood_.ood_score(top)):
        print(f"{n / 1e6:9.1f} {ms:8.2f} {score:5.2f}  {arch['depth']}")
    if latency[0] > budget:
        print("no architecture is predicted under the budget; raise --budget-ms")


if __name__ == "__main__":
    main()
