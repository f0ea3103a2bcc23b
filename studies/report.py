"""What every study shares: progress lines, Markdown tables and the machine it ran on.

The studies in this folder regenerate the figures and tables under
``docs/results``; run them from the repository root, e.g.
``python studies/compare_encodings.py``.
"""

from __future__ import annotations

import os
import platform

import numpy as np
import pandas as pd


def log(message: str = "") -> None:
    """Print a progress line at once (studies run for minutes)."""
    print(message, flush=True)


def to_markdown(frame: pd.DataFrame, digits: int = 3) -> str:
    """A GitHub Markdown table of ``frame`` (no extra dependency such as tabulate).

    Floats get ``digits`` decimals, NaN an empty cell, booleans yes/no.
    """
    def cell(v):
        if isinstance(v, (bool, np.bool_)):
            return "yes" if v else "no"
        if isinstance(v, (float, np.floating)):
            return "" if np.isnan(v) else f"{v:.{digits}f}"
        return str(v)

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |",
             "|" + "|".join("---" for _ in frame.columns) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def machine() -> str:
    """The cores this process may use and the Python version, for a report's header."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{n} CPU core(s), Python {platform.python_version()}"
