"""Process state for one evaluation batch: reads through a cache, per-message write sets.

A message's writes are kept apart until its result is known: committed into the batch on
success, dropped on Error (AO: an errored message leaves the state as it was). The batch's
writes reach the database in the same transaction as its results.
"""

from __future__ import annotations

from ao import models

_MISSING = object()


class BatchState:
    """The state of one process across a batch of messages."""

    def __init__(self, process_id: str) -> None:
        self.process_id = process_id
        self._cache: dict[str, str | None] = {}
        self._dirty: dict[str, str | None] = {}
        self._message: dict[str, str | None] = {}

    # -- the HostState interface --------------------------------------------------------------

    def get(self, key: str) -> str | None:
        """Current value, seeing this message's own writes."""
        if key in self._message:
            return self._message[key]
        return self.before_message(key)

    def before_message(self, key: str) -> str | None:
        """The value as the current message found it (its own writes not seen)."""
        cached = self._cache.get(key, _MISSING)
        if cached is not _MISSING:
            return cached  # type: ignore[return-value]
        row = models.StateEntry.objects.filter(process_id=self.process_id, key=key).values_list("value", flat=True)
        value = row[0] if row else None
        self._cache[key] = value
        return value

    def set(self, key: str, value: str) -> None:
        """Write within the current message."""
        self._message[key] = value

    def delete(self, key: str) -> None:
        """Delete within the current message."""
        self._message[key] = None

    def keys(self, prefix: str, after: str, limit: int) -> list[str]:
        """Keys with a prefix in code-point order (the same on every database), after a cursor."""
        stored = set(
            models.StateEntry.objects.filter(process_id=self.process_id, key__startswith=prefix).values_list(
                "key", flat=True
            )
        )
        for overlay in (self._dirty, self._message):
            for key, value in overlay.items():
                if key.startswith(prefix):
                    if value is None:
                        stored.discard(key)
                    else:
                        stored.add(key)
        return sorted(k for k in stored if k > after)[:limit]

    # -- message boundaries -------------------------------------------------------------------

    def undo_of_message(self) -> dict[str, str | None]:
        """What the current message's writes overwrite: each key's value before the message (None: absent)."""
        return {key: self.before_message(key) for key in sorted(self._message)}

    def commit_message(self) -> dict[str, str | None]:
        """Keep the current message's writes; return them (for the state hash)."""
        writes = self._message
        self._cache.update(writes)
        self._dirty.update(writes)
        self._message = {}
        return writes

    def rollback_message(self) -> None:
        """Drop the current message's writes."""
        self._message = {}

    def flush(self) -> None:
        """Write the batch's changes (call inside the batch's transaction)."""
        upserts = [
            models.StateEntry(process_id=self.process_id, key=k, value=v) for k, v in self._dirty.items() if v is not None
        ]
        deletes = [k for k, v in self._dirty.items() if v is None]
        if upserts:
            models.StateEntry.objects.bulk_create(
                upserts, update_conflicts=True, unique_fields=["process", "key"], update_fields=["value"]
            )
        if deletes:
            models.StateEntry.objects.filter(process_id=self.process_id, key__in=deletes).delete()
        self._dirty = {}


class MemoryState:
    """Process state held in memory, starting empty: what replay-verify rebuilds from the log alone."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self._message: dict[str, str | None] = {}

    def get(self, key: str) -> str | None:
        """Current value, seeing this message's own writes."""
        if key in self._message:
            return self._message[key]
        return self.data.get(key)

    def undo_of_message(self) -> dict[str, str | None]:
        """What the current message's writes overwrite."""
        return {key: self.data.get(key) for key in sorted(self._message)}

    def set(self, key: str, value: str) -> None:
        """Write within the current message."""
        self._message[key] = value

    def delete(self, key: str) -> None:
        """Delete within the current message."""
        self._message[key] = None

    def keys(self, prefix: str, after: str, limit: int) -> list[str]:
        """Keys with a prefix in code-point order, after a cursor."""
        merged = {k for k in self.data if k.startswith(prefix)}
        for key, value in self._message.items():
            if key.startswith(prefix):
                if value is None:
                    merged.discard(key)
                else:
                    merged.add(key)
        return sorted(k for k in merged if k > after)[:limit]

    def commit_message(self) -> dict[str, str | None]:
        """Keep the current message's writes; return them."""
        writes = self._message
        for key, value in writes.items():
            if value is None:
                self.data.pop(key, None)
            else:
                self.data[key] = value
        self._message = {}
        return writes

    def rollback_message(self) -> None:
        """Drop the current message's writes."""
        self._message = {}


class PastState:
    """A process's state as it was at an earlier nonce, for rebuilding an instance window (reads only the past).

    ``current`` is the committed state now; ``undo`` maps each key written since that earlier nonce to its value
    then (None: absent). Writes of the messages being re-run stay in memory: nothing reaches the database.
    """

    def __init__(self, current: BatchState, undo: dict[str, str | None]) -> None:
        self._current = current
        self._past = dict(undo)
        self._message: dict[str, str | None] = {}

    def get(self, key: str) -> str | None:
        """The value at the point being re-run, seeing the current message's writes."""
        if key in self._message:
            return self._message[key]
        if key in self._past:
            return self._past[key]
        return self._current.before_message(key)

    def set(self, key: str, value: str) -> None:
        """Write within the current message (kept in memory)."""
        self._message[key] = value

    def delete(self, key: str) -> None:
        """Delete within the current message (kept in memory)."""
        self._message[key] = None

    def keys(self, prefix: str, after: str, limit: int) -> list[str]:
        """Keys with a prefix in code-point order, as they were, after a cursor."""
        merged = set(self._current.keys(prefix, "", 1 << 62))
        for overlay in (self._past, self._message):
            for key, value in overlay.items():
                if key.startswith(prefix):
                    if value is None:
                        merged.discard(key)
                    else:
                        merged.add(key)
        return sorted(k for k in merged if k > after)[:limit]

    def undo_of_message(self) -> dict[str, str | None]:
        """What the current message's writes overwrite."""
        return {key: self.get_before(key) for key in sorted(self._message)}

    def get_before(self, key: str) -> str | None:
        """The value as the current message found it."""
        if key in self._past:
            return self._past[key]
        return self._current.before_message(key)

    def commit_message(self) -> dict[str, str | None]:
        """Keep the current message's writes in the past view; return them."""
        writes = self._message
        self._past.update(writes)
        self._message = {}
        return writes

    def rollback_message(self) -> None:
        """Drop the current message's writes."""
        self._message = {}
