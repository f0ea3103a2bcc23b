"""Sizes of the built-in spaces and balanced vs random depth-bin counts.

Run::

    python examples/space_summary.py
"""

import numpy as np

from esm_sklearn import get_space, list_spaces


def main(n: int = 5000, n_bins: int = 5, seed: int = 0) -> None:
    print("| space | units | total depth | architectures |")
    print("|---|---|---|---|")
    for name in list_spaces():
        space = get_space(name)
        print(f"| `{name}` | {space.n_units} | {space.min_depth}..{space.max_depth} | {space.size():.3g} |")
    space = get_space("resnet")
    edges = space.bin_edges(n_bins)
    print(f"\nresnet, {n} samples, {n_bins} depth bins with edges {np.round(edges, 2).tolist()}:")
    print("| strategy | " + " | ".join(f"bin {b}" for b in range(n_bins)) + " |")
    print("|---|" + "---|" * n_bins)
    for strategy in ("balanced", "random"):
        archs = space.sample(n, strategy, n_bins=n_bins, random_state=seed)
        counts = np.bincount(space.bin_index(archs, n_bins), minlength=n_bins)
        print(f"| {strategy} | " + " | ".join(str(c) for c in counts) + " |")


if __name__ == "__main__":
    main()
