"""Core (memory64) processes in the compute unit: live instances per worker, checkpoints on disk.

A core process's state is its linear memory. The worker keeps the live instance between
batches; at the end of every batch it writes a sparse snapshot (content-addressed file) and a
Checkpoint row in the batch's transaction. A worker that finds no live instance at the cursor
(after a restart, or because another worker moved on) restores the newest checkpoint at or
before the cursor and replays the messages after it.
"""

from __future__ import annotations

import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from ao import models
from ao.effects.core64 import CoreModuleRuntime, CoreProcess, Snapshot

_local = threading.local()


@dataclass
class LiveCore:
    """A live core process and the nonce it expects next."""

    process: CoreProcess
    next_nonce: int


def core_runtime() -> CoreModuleRuntime:
    """This thread's core-module runtime."""
    runtime = getattr(_local, "core", None)
    if runtime is None:
        runtime = CoreModuleRuntime(cache_dir=Path(settings.AO["BUILD_CACHE"]) / "core64")
        _local.core = runtime
        _local.live = {}
    return runtime


def live_cores() -> dict[str, LiveCore]:
    """This thread's live core processes by process id."""
    core_runtime()
    return _local.live  # type: ignore[no-any-return]


def snapshot_dir() -> Path:
    """Where checkpoint snapshots live (content-addressed)."""
    path = Path(settings.DATA_DIR) / "snapshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_snapshot(snapshot: Snapshot) -> tuple[str, int]:
    """Write a snapshot file named by its sha256 (atomically); return (sha256, size)."""
    data = snapshot.to_bytes()
    digest = snapshot.sha256()
    target = snapshot_dir() / f"{digest}.snap"
    if not target.exists():
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".snap-")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)
    return digest, len(data)


def load_snapshot(checkpoint: models.Checkpoint) -> Snapshot:
    """Read a checkpoint's snapshot and check it is the one recorded."""
    snapshot = Snapshot.from_bytes((snapshot_dir() / f"{checkpoint.sha256}.snap").read_bytes())
    if snapshot.sha256() != checkpoint.sha256:
        raise ValueError(f"snapshot of checkpoint at nonce {checkpoint.nonce} is corrupt")
    return snapshot
