"""WeaveDrive, pure part: paths, modes and the admission rule, decided from the log alone.

A process reads Arweave data like files: ``/data/<txid>`` (the bytes), ``/tx/<txid>`` (the
header as JSON), ``/block/<height>`` (a block as JSON). WeaveDrive is on when the process or
its module carries ``Extension=WeaveDrive``. What a process may read is decided by its
``Availability-Type``:

- ``Assignments`` (the default, as AO): an ``Attestation`` item (``Message=<txid>``) signed by
  the process's scheduler or one of its ``Attestor`` addresses was assigned in the process's
  log before the reading message, at a block height no later than the reading message's.
- ``Individual``: an ``Available`` item (``Message=<txid>``) signed by the process's owner was
  assigned in its log before the reading message.
- ``Library`` (AO never built it; defined here): the process names library processes with
  ``Library=<process id>`` tags. A library's owner publishes ``Available`` items
  (``Message=<txid>``) into the library's log; an entry counts for a reader only if it was
  assigned at a block height strictly lower than the reading message's. Heights only grow,
  so an entry added later can never change a decision already taken: replays agree.

``/block/<height>`` is readable for heights no greater than the reading message's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

EXTENSION = "WeaveDrive"
MODES = ("Assignments", "Individual", "Library")
DEFAULT_MODE = "Assignments"
MAX_READ = 4 * 1024 * 1024  # bytes per read call
_TXID = r"[A-Za-z0-9_-]{43}"
_PATH = re.compile(rf"^/(data|tx)/({_TXID})$|^/block/(\d{{1,12}})$")


class WeaveDriveError(Exception):
    """A read refused or failed; the message says why."""


@dataclass(frozen=True)
class WeavePath:
    """A parsed WeaveDrive path."""

    kind: str  # "data", "tx" or "block"
    tx_id: str = ""
    height: int = -1


def parse_path(path: str) -> WeavePath:
    """Parse /data/<txid>, /tx/<txid> or /block/<height>."""
    match = _PATH.match(path)
    if not match:
        raise WeaveDriveError(f"not a WeaveDrive path: {path[:100]!r} (use /data/<txid>, /tx/<txid>, /block/<height>)")
    if match.group(3) is not None:
        return WeavePath("block", height=int(match.group(3)))
    return WeavePath(match.group(1), tx_id=match.group(2))


@dataclass(frozen=True)
class Policy:
    """How one process admits data: its mode and who may vouch."""

    enabled: bool
    mode: str
    scheduler: str
    owner: str
    attestors: frozenset[str]
    libraries: tuple[str, ...]


def policy_from_tags(
    *, process_tags: Iterable[tuple[str, str]], module_tags: Iterable[tuple[str, str]], scheduler: str, owner: str
) -> Policy:
    """The WeaveDrive policy a process's spawn and module tags declare."""
    ptags, mtags = list(process_tags), list(module_tags)
    enabled = any(n == "Extension" and v == EXTENSION for n, v in (*ptags, *mtags))
    mode = next((v for n, v in ptags if n == "Availability-Type"), DEFAULT_MODE)
    if mode not in MODES:
        raise WeaveDriveError(f"Availability-Type {mode!r} is not one of {', '.join(MODES)}")
    attestors = frozenset(a.strip() for n, v in ptags if n == "Attestor" for a in v.split(",") if a.strip())
    libraries = tuple(v for n, v in ptags if n == "Library")
    if mode == "Library" and not libraries:
        raise WeaveDriveError("Availability-Type Library needs at least one Library=<process id> tag")
    return Policy(enabled, mode, scheduler, owner, attestors, libraries)


def check_range(offset: int, length: int, size: int) -> int:
    """Bound a read; return how many bytes it yields."""
    if offset < 0 or length < 0:
        raise WeaveDriveError(f"bad read offset {offset} / length {length}")
    if length > MAX_READ:
        raise WeaveDriveError(f"reads are limited to {MAX_READ} bytes a call, asked {length}")
    return max(0, min(length, size - offset))
