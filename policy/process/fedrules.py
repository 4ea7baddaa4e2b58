"""The Fed's parameters and arithmetic: spawn-tag parsing, intake rules, aggregation, payout. Pure functions.

Amounts are integers in base units (whole LLAMA x 10**Denomination). Nothing here touches state.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any

from prompts import EXAMPLE_SETS, GRADE_FIRST, MAX_GRADE, ORDERS, REASON_FIRST, SENTINEL, SENTINEL_EXAMPLE_SETS

ID_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")
MODEL_RE = re.compile(r"^/data/[A-Za-z0-9_-]{43}$")
DECIMAL_RE = re.compile(r"^(0|[1-9][0-9]*)$")
MAX_DIGITS = 40
MAX_DENOMINATION = 24
MAX_GOVERNORS = 7
MAX_GOVERNOR_NAME = 32
MAX_TOKENS_LIMIT = 1024
REQUIRED_EXTENSIONS = ("WeaveDrive", "Llama")
AGGREGATIONS = ("min", "median")

MAX_PETITION_CHARS = 250
MIN_NAME_CHARS, MAX_NAME_CHARS = 2, 20

# Chosen by bench/judge/run.py with the default model: the sentinel first (its veto ends the deliberation),
# then one grade-first and one reason-first grader on different example sets, the minimum of the two.
DEFAULT_GOVERNORS = [
    {"name": "Cy", "order": SENTINEL, "examples": "S"},
    {"name": "Ada", "order": GRADE_FIRST, "examples": "A"},
    {"name": "Bo", "order": REASON_FIRST, "examples": "B"},
]
DEFAULTS = {
    "Denomination": "12",
    "Offering": "25000000000",  # 0.025 wAR
    "Schedule": "0,1,5,10,20,100",  # whole LLAMA for grades 0..5
    "Max-Supply": "11111111000000000000",  # 11,111,111 LLAMA
    "Epoch-Ms": "86400000",  # one day
    "Epoch-Budget": "100000000000000",  # 100 LLAMA per epoch
    "Cooldown-Ms": "82800000",  # 23 hours
    "Aggregation": "min",
    "Max-Tokens": "64",
    "Steering-Filter": "veto",
}
# What the deterministic first line (steering.py) does with a petition it finds steering: "veto" decides it at
# grade 0 before any model reads it; "off" leaves it to the governors (for measuring the filter alone).
STEERING_FILTERS = ("veto", "off")

# Refund reasons (the X-Refund-Reason and Reason tags).
WRONG_OFFERING = "wrong offering"
PETITION_LENGTH = "petition must be 1 to 250 characters"
NAME_LENGTH = "name must be 2 to 20 characters"
COOLDOWN = "one petition per address per cooldown"
DUPLICATE = "duplicate petition id"


class ConfigError(ValueError):
    """A spawn tag is missing or malformed."""


def amount(raw: str) -> int | None:
    """A non-negative integer from its decimal string (base units), or None when malformed."""
    if len(raw) > MAX_DIGITS or not DECIMAL_RE.match(raw):
        return None
    return int(raw)


def _integer(tags: Callable[[str], str | None], name: str, *, minimum: int = 0) -> int:
    raw = tags(name)
    if raw is None:
        raw = DEFAULTS[name]
    value = amount(raw)
    if value is None or value < minimum:
        raise ConfigError(f"spawn tag {name} must be an integer >= {minimum}, got {raw[:60]!r}")
    return value


def _process_id(tags: Callable[[str], str | None], name: str) -> str:
    value = tags(name)
    if value is None or not ID_RE.match(value):
        raise ConfigError(f"spawn tag {name} must be a 43-character process id")
    return value


def _schedule(raw: str) -> list[int]:
    parsed = [amount(i.strip()) for i in raw.split(",")]
    if len(parsed) != MAX_GRADE + 1 or None in parsed:
        raise ConfigError(f"spawn tag Schedule must be {MAX_GRADE + 1} comma-separated whole amounts, got {raw[:80]!r}")
    values = [v for v in parsed if v is not None]
    if any(b < a for a, b in zip(values, values[1:])):
        raise ConfigError("spawn tag Schedule must not decrease with the grade (min aggregation relies on it)")
    return values


def _governors(raw: str | None) -> list[dict[str, str]]:
    if raw is None:
        return [dict(g) for g in DEFAULT_GOVERNORS]
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"spawn tag Governors is not JSON: {exc}") from None
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_GOVERNORS:
        raise ConfigError(f"spawn tag Governors must be a JSON list of 1 to {MAX_GOVERNORS} governors")
    governors = []
    for item in value:
        if not isinstance(item, dict) or set(item) != {"name", "order", "examples"}:
            raise ConfigError('each governor is {"name", "order", "examples"}')
        name, order, examples = item["name"], item["order"], item["examples"]
        if not isinstance(name, str) or not 1 <= len(name) <= MAX_GOVERNOR_NAME:
            raise ConfigError(f"a governor's name must be 1 to {MAX_GOVERNOR_NAME} characters")
        if order not in ORDERS:
            raise ConfigError(f"a governor's order must be one of {', '.join(ORDERS)}, got {order!r}")
        allowed = SENTINEL_EXAMPLE_SETS if order == SENTINEL else EXAMPLE_SETS
        if examples not in allowed:
            raise ConfigError(f"a {order} governor's examples must be one of {', '.join(allowed)}, got {examples!r}")
        governors.append({"name": name, "order": order, "examples": examples})
    if len({g["name"] for g in governors}) != len(governors):
        raise ConfigError("governor names must be unique")
    if all(g["order"] == SENTINEL for g in governors):
        raise ConfigError("the committee needs at least one governor that grades (a sentinel only vetoes)")
    return governors


def parse_config(tags: Sequence[tuple[str, str]], owner: str) -> dict[str, Any]:
    """The Fed's configuration from its spawn tags; ConfigError names the first bad tag."""

    def first(name: str) -> str | None:
        return next((v for n, v in tags if n == name), None)

    extensions = {v for n, v in tags if n == "Extension"}
    missing = [e for e in REQUIRED_EXTENSIONS if e not in extensions]
    if missing:
        raise ConfigError(f"spawn needs the tags Extension={' and Extension='.join(missing)}")
    model = first("Model")
    if model is None or not MODEL_RE.match(model):
        raise ConfigError("spawn tag Model must be /data/<43-character transaction id>")
    steering_filter = first("Steering-Filter") or DEFAULTS["Steering-Filter"]
    if steering_filter not in STEERING_FILTERS:
        raise ConfigError(f"spawn tag Steering-Filter must be one of {', '.join(STEERING_FILTERS)}, "
                          f"got {steering_filter[:40]!r}")
    aggregation = first("Aggregation") or DEFAULTS["Aggregation"]
    if aggregation not in AGGREGATIONS:
        raise ConfigError(f"spawn tag Aggregation must be one of {', '.join(AGGREGATIONS)}, got {aggregation[:40]!r}")
    denomination = _integer(first, "Denomination")
    if denomination > MAX_DENOMINATION:
        raise ConfigError(f"spawn tag Denomination must be at most {MAX_DENOMINATION}")
    max_tokens = _integer(first, "Max-Tokens", minimum=1)
    if max_tokens > MAX_TOKENS_LIMIT:
        raise ConfigError(f"spawn tag Max-Tokens must be at most {MAX_TOKENS_LIMIT}")
    war, llama = _process_id(first, "War-Token"), _process_id(first, "Llama-Token")
    if war == llama:
        raise ConfigError("War-Token and Llama-Token must be different processes")
    return {
        "War-Token": war,
        "Llama-Token": llama,
        "Model": model,
        "Denomination": denomination,
        "Offering": _integer(first, "Offering", minimum=1),
        "Schedule": _schedule(first("Schedule") or DEFAULTS["Schedule"]),
        "Max-Supply": _integer(first, "Max-Supply"),
        "Epoch-Ms": _integer(first, "Epoch-Ms", minimum=1),
        "Epoch-Budget": _integer(first, "Epoch-Budget"),
        "Cooldown-Ms": _integer(first, "Cooldown-Ms"),
        "Governors": _governors(first("Governors")),
        "Aggregation": aggregation,
        "Max-Tokens": max_tokens,
        "Steering-Filter": steering_filter,
        "Owner": owner,
    }


def intake_refusal(
    config: dict[str, Any], *, quantity: int, text: str | None, name: str | None, last: int | None, now: int
) -> str | None:
    """The first intake rule a petition breaks (the refund reason), or None when it is accepted."""
    if quantity != config["Offering"]:
        return WRONG_OFFERING
    if not 1 <= len((text or "").strip()) <= MAX_PETITION_CHARS:
        return PETITION_LENGTH
    if not MIN_NAME_CHARS <= len((name or "").strip()) <= MAX_NAME_CHARS:
        return NAME_LENGTH
    if last is not None and now - last < config["Cooldown-Ms"]:
        return COOLDOWN
    return None


def committee_grade(votes: Sequence[dict[str, Any]], how: str) -> int:
    """The committee's grade from its votes: 0 when a sentinel vetoed, else the graders' aggregate."""
    if any(v.get("veto") for v in votes):
        return 0
    return aggregate([v["grade"] for v in votes if v.get("grade") is not None], how)


def aggregate(grades: Sequence[int], how: str) -> int:
    """The committee's grade: the minimum, or the median (the lower middle one for an even count)."""
    if not grades:
        raise ValueError("no votes to aggregate")
    ordered = sorted(grades)
    if how == "min":
        return ordered[0]
    return ordered[(len(ordered) - 1) // 2]


def epoch_of(timestamp_ms: int, epoch_ms: int) -> int:
    """The epoch a message timestamp falls in."""
    return timestamp_ms // epoch_ms


def payout(config: dict[str, Any], grade: int, *, granted: int, epoch_granted: int) -> tuple[int, int, str | None]:
    """(schedule amount, amount, what capped it or None): the schedule's amount within both caps, never below 0."""
    scheduled = config["Schedule"][grade] * 10 ** config["Denomination"]
    supply_left = max(0, config["Max-Supply"] - granted)
    epoch_left = max(0, config["Epoch-Budget"] - epoch_granted)
    amount = min(scheduled, supply_left, epoch_left)
    cap = None
    if amount < scheduled:
        cap = "max-supply" if supply_left <= epoch_left else "epoch-budget"
    return scheduled, amount, cap
