"""Token amounts for people: integers in base units shown as decimals. No Django."""

from __future__ import annotations

from decimal import Decimal

DEFAULT_DENOMINATION = 12  # wAR and LLAMA both have 12 decimals


def format_amount(value: int | Decimal | str | None, denomination: int = DEFAULT_DENOMINATION) -> str:
    """Base units as a grouped decimal without trailing zeros: 25000000000 → "0.025", 10**15 → "1,000"."""
    if value is None or value == "":
        return "—"
    units = int(value)
    sign = "-" if units < 0 else ""
    whole, fraction = divmod(abs(units), 10**denomination)
    digits = f"{fraction:0{denomination}d}".rstrip("0") if denomination else ""
    return f"{sign}{whole:,}" + (f".{digits}" if digits else "")
