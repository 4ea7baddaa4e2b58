"""Request limits shared by every web worker: a sliding window per (scope, client) kept in Django's default cache.

The cache is Redis when one is configured and Django's database cache on the embedded default
(``settings.CACHES``), so every gunicorn worker counts against the same window. A limit allows at most ``count``
hits in any ``period`` seconds: the window holds the times of the hits it let through, and a refused hit is not
counted. The read-decide-write of one window runs under a short lock taken with ``cache.add`` (atomic on Redis
and on the database cache alike), so concurrent workers cannot both take the last place.

This is about the web tier only: nothing here is read by a process's evaluation.
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest

PERIODS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600,
           "d": 86400, "day": 86400}
_RATE_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([a-z]+)\s*$", re.IGNORECASE)
LOCK_TTL_S = 5  # a lock outlives any holder that died holding it by at most this
LOCK_WAIT_S = 2.0  # how long a hit waits for a window's lock before it is refused as "busy"


class RateError(ValueError):
    """A rate setting that is not like "20/hour"."""


@dataclass(frozen=True)
class Rate:
    """At most ``count`` hits per ``period`` seconds; ``count`` 0 refuses every hit."""

    count: int
    period: int

    def __str__(self) -> str:
        for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
            if self.period % size == 0:
                times = self.period // size
                return f"{self.count} per {unit}" if times == 1 else f"{self.count} per {times} {unit}s"
        raise AssertionError("unreachable: every period is a whole number of seconds")


def parse_rate(text: str) -> Rate:
    """DRF's syntax ("20/hour", "5/min", "100/s") and a multiple of the unit ("10/15min")."""
    match = _RATE_RE.match(text or "")
    if not match or match.group(3).lower() not in PERIODS:
        raise RateError(f"rate {text!r} is not like '20/hour' (units: s, min, hour, day)")
    multiple = int(match.group(2) or 1)
    if multiple <= 0:
        raise RateError(f"rate {text!r} has a zero period")
    return Rate(count=int(match.group(1)), period=multiple * PERIODS[match.group(3).lower()])


def describe_seconds(seconds: float) -> str:
    """A duration a person reads, rounded up: "45 s", "12 min", "21 h 14 min", "3 d 2 h"."""
    whole = max(math.ceil(seconds), 1)
    if whole < 60:
        return f"{whole} s"
    minutes = math.ceil(whole / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h" + (f" {minutes} min" if minutes else "")
    days, hours = divmod(hours, 24)
    return f"{days} d" + (f" {hours} h" if hours else "")


class Limited(Exception):
    """A hit over its limit; ``retry_after`` whole seconds until one is allowed again. The text says what to do."""

    status = 429

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = max(int(retry_after), 1)


def _key(scope: str, ident: str) -> str:
    digest = hashlib.sha256(ident.encode("utf-8")).hexdigest()[:40]
    return f"limit:{scope}:{digest}"


def _acquire(lock: str) -> str | None:
    token = secrets.token_hex(8)
    deadline = time.monotonic() + LOCK_WAIT_S
    pause = 0.002
    while True:
        if cache.add(lock, token, timeout=LOCK_TTL_S):
            return token
        if time.monotonic() >= deadline:
            return None
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


def _release(lock: str, token: str) -> None:
    if cache.get(lock) == token:
        cache.delete(lock)


@contextmanager
def exclusive(scope: str, ident: str, *, what: str) -> Iterator[None]:
    """Run the block while no other worker runs one for the same (scope, ident); Limited if that takes too long.

    What a count's check-then-act must not race on (django-axes' failed-login count) is run under this.
    """
    lock = _key(scope, ident) + ":lock"
    token = _acquire(lock)
    if token is None:
        raise Limited(f"another {what} is being checked right now; try again in a few seconds", retry_after=2)
    try:
        yield
    finally:
        _release(lock, token)


def hit(scope: str, ident: str, rate: Rate, *, what: str) -> None:
    """Count one hit of ``ident`` in ``scope``, or raise Limited (nothing counted) if ``rate`` is used up.

    ``what`` names the requests in the refusal ("sign-ups from this address").
    """
    key = _key(scope, ident)
    token = _acquire(key + ":lock")
    if token is None:
        raise Limited(f"too many {what} at once; try again in a few seconds", retry_after=2)
    try:
        now = time.time()
        window = [t for t in (cache.get(key) or []) if t > now - rate.period]
        if len(window) >= rate.count:
            wait = (window[0] + rate.period - now) if window else rate.period
            raise Limited(
                f"too many {what}: the limit is {rate}; try again in {describe_seconds(wait)}",
                retry_after=int(wait) + 1,
            )
        window.append(now)
        cache.set(key, window, timeout=rate.period + 1)
    finally:
        _release(key + ":lock", token)


def used(scope: str, ident: str, rate: Rate) -> int:
    """How many hits the window of ``ident`` in ``scope`` holds now."""
    now = time.time()
    return sum(1 for t in (cache.get(_key(scope, ident)) or []) if t > now - rate.period)


def reset(scope: str, ident: str) -> None:
    """Forget a window (an operator's unlock)."""
    cache.delete(_key(scope, ident))


def client_ip(request: HttpRequest, trusted_proxies: int | None = None) -> str:
    """The client's address: REMOTE_ADDR, or with N trusted proxies in front the Nth address from the right of
    X-Forwarded-For (the one the outermost trusted proxy saw). A client's own X-Forwarded-For is never trusted
    beyond that."""
    if trusted_proxies is None:
        trusted_proxies = settings.TRUSTED_PROXIES
    remote = request.META.get("REMOTE_ADDR", "") or "0.0.0.0"  # noqa: S104 - no address (not a WSGI request)
    if trusted_proxies <= 0:
        return remote
    forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
    if not forwarded:
        return remote
    return forwarded[-min(trusted_proxies, len(forwarded))]


def configured(name: str) -> Rate:
    """The rate of settings.LIMITS[name]."""
    return parse_rate(settings.LIMITS[name])
