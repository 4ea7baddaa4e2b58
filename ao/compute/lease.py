"""The evaluation lease: one worker evaluates a process at a time, without holding a transaction to say so.

A lease is the holder and expiry on the process's cursor row, taken by a conditional update (free, or
expired). While a batch runs, a keeper thread renews it; if the renewal finds another holder, the batch is
abandoned. The commit itself checks the holder and the cursor (compare-and-set), so even a worker that
lost its lease without noticing cannot commit over another's work.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, connection
from django.db.models import Q
from django.utils import timezone

from ao import models
from ao.units import cu

log = logging.getLogger(__name__)



def lease_s() -> float:
    """How long a silent holder keeps a process (settings.AO["LEASE_S"]): a killed worker's process waits this long."""
    return float(settings.AO["LEASE_S"])


def new_holder() -> str:
    """A name for this worker's claim (host, pid and a random part)."""
    return f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def expiry() -> object:
    """When a lease taken or renewed now runs out."""
    return timezone.now() + timedelta(seconds=lease_s())


def claim(process_id: str, holder: str) -> bool:
    """Take the process's lease if it is free or expired."""
    now = timezone.now()
    free = Q(lease_holder="") | Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now)
    taken = models.Evaluation.objects.filter(free, process_id=process_id).update(
        lease_holder=holder, lease_expires_at=expiry()
    )
    if taken:
        return True
    if not models.Evaluation.objects.filter(process_id=process_id).exists():
        ensure_cursor(process_id)
        return claim(process_id, holder)
    return False


def ensure_cursor(process_id: str) -> None:
    """The cursor row of a process (made with its spawn; this covers rows of processes made before that)."""
    models.Evaluation.objects.get_or_create(
        process_id=process_id, defaults={"next_nonce": 0, "state_hash": cu.GENESIS_STATE_HASH}
    )


def release(process_id: str, holder: str) -> None:
    """Give the lease back (only if still ours)."""
    models.Evaluation.objects.filter(process_id=process_id, lease_holder=holder).update(
        lease_holder="", lease_expires_at=None
    )


class Keeper:
    """Renews a lease from a thread while a batch runs; ``lost`` turns True if another worker took it."""

    def __init__(self, process_id: str, holder: str) -> None:
        self.process_id, self.holder, self.every_s = process_id, holder, lease_s() / 3
        self.lost = False
        self._stop = threading.Event()
        # Inside an enclosing transaction (a caller's atomic block) the claim itself is not visible to others,
        # and a second connection renewing it would wait on our own row lock: nothing to keep, then.
        self._thread: threading.Thread | None = None
        if not connection.in_atomic_block:
            self._thread = threading.Thread(target=self._run, name=f"lease-{process_id[:8]}", daemon=True)

    def __enter__(self) -> Keeper:
        if self._thread is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.every_s):
                try:
                    renewed = models.Evaluation.objects.filter(
                        process_id=self.process_id, lease_holder=self.holder
                    ).update(lease_expires_at=expiry())
                except DatabaseError as exc:  # the commit's compare-and-set still protects the log
                    log.warning("could not renew the lease of %s: %s", self.process_id, exc)
                    continue
                if not renewed:
                    self.lost = True
                    return
        finally:
            connection.close()


class Lease:
    """A process's lease as one worker holds it: ``acquire``, work (renewed meanwhile), ``release``."""

    def __init__(self, process_id: str) -> None:
        self.process_id = process_id
        self.holder = new_holder()
        self._keeper: Keeper | None = None

    def acquire(self) -> bool:
        """Claim the lease and start renewing it; False if another worker holds it."""
        if not claim(self.process_id, self.holder):
            return False
        self._keeper = Keeper(self.process_id, self.holder).__enter__()
        return True

    def release(self) -> None:
        """Stop renewing and give the lease back (a failure to say so only delays the next holder)."""
        if self._keeper is None:
            return
        self._keeper.__exit__()
        self._keeper = None
        try:
            release(self.process_id, self.holder)
        except DatabaseError as error:  # it expires by itself
            log.warning("could not release the lease of %s: %s", self.process_id, error)

    @property
    def lost(self) -> bool:
        """Whether another worker has taken the lease."""
        return self._keeper is not None and self._keeper.lost
