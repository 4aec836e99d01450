"""Number formatting for people (never for saved data, which keeps full precision)."""

from __future__ import annotations

import math


def fmt_time(seconds: float) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
        if seconds >= scale or unit == "ns":
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds:.3g} s"  # pragma: no cover


def fmt_rate(value: float, unit: str) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:,.1f} {unit}" if value >= 10 else f"{value:.3g} {unit}"


def fmt_time_ratio(r: float) -> str:
    """A comparison's CAND/BASE time ratio: three decimals, so a 1% change shows."""
    return f"{r:.3f}" if math.isfinite(r) else "-"


def fmt_change(r: float) -> str:
    """A time ratio as a signed percentage change: 1.05 -> +5.0%."""
    return f"{(r - 1) * 100:+.1f}%" if math.isfinite(r) else "-"


def fmt_interval(lo: float, hi: float) -> str:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "-"
    return f"[{lo:.3f}, {hi:.3f}]"


def fmt_pct(value: float | None, digits: int = 0) -> str:
    """A fraction as a percentage: 0.42 -> 42%; "-" where there is none."""
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.{digits}%}"


def fmt_setting_pct(value: float) -> str:
    """A setting given as a fraction, as the percentage it was given: 0.05 -> 5%, 0.025 -> 2.5%."""
    return f"{value * 100:g}%"


def is_missing(value: object) -> bool:
    """None, NaN, NaT or pandas' NA: a cell with nothing in it."""
    try:
        import pandas as pd

        return bool(pd.isna(value))
    except (TypeError, ValueError):  # not a scalar
        return value is None


def fmt_ratio(value: float) -> str:
    """A speedup (many cores over one, GPU over CPU): two decimals and an x."""
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.2f}x"


def fmt_per_s(value: float | None, unit: str) -> str:
    """A rate in FLOP/s or B/s at the scale of today's devices: TFLOP/s or GFLOP/s, TB/s or GB/s."""
    if value is None or not math.isfinite(value):
        return "-"
    if unit == "FLOP/s":
        return f"{value / 1e12:,.1f} TFLOP/s" if value >= 1e12 else f"{value / 1e9:,.1f} GFLOP/s"
    return f"{value / 1e12:,.2f} TB/s" if value >= 1e12 else f"{value / 1e9:,.1f} GB/s"
