"""Tables, as pandas DataFrames computed from the tidy frame of ``results.to_frame``.

Compute first, render second: every function here returns data; ``render.py`` and the CLI
only format it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

#: The rate each op is judged by: GFLOP/s where arithmetic dominates, GB/s where memory does.
PRIMARY_RATE = {
    "matmul": "gflops",
    "matmul_backward": "gflops",
    "hadamard": "gbps",
    "hadamard_backward": "gbps",
}
RATE_UNIT = {"gflops": "GFLOP/s", "gbps": "GB/s"}

#: Columns that identify a case apart from its backend (what "the same case" means when
#: backends are compared).
CASE_KEYS = ["machine", "op", "dtype", "m", "k", "n", "threads_label", "grad_mode"]


def run_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """The table printed after a run: one row per measurement, with its median, its rate and
    its speedup over numpy on the same machine, op, dtype, shape, threads and grad mode."""
    import pandas as pd

    df = frame.copy()
    df["rate"] = [row[PRIMARY_RATE[row["op"]]] for _, row in df.iterrows()]
    df["rate_unit"] = [RATE_UNIT[PRIMARY_RATE[op]] for op in df["op"]]
    base = df[(df["backend"] == "numpy") & (df["status"] == "ok")]
    base = base[[*CASE_KEYS[:-1], "median_s"]].rename(columns={"median_s": "numpy_median_s"})
    # numpy has no grad mode: its forward time is the baseline for torch's no_grad and grad
    df = df.merge(base, on=CASE_KEYS[:-1], how="left")
    df["speedup_vs_numpy"] = df["numpy_median_s"] / df["median_s"]
    cols = ["case_id", "status", "median_s", "rel_ci", "rate", "rate_unit", "speedup_vs_numpy",
            "noisy", "reason"]
    return pd.DataFrame(df[cols]).reset_index(drop=True)
