"""Write AO processes in Python: handlers by Action, JSON state in the host's key-value store.

This module is bundled into every process module (componentize-py) and also imported natively
by tests and benchmarks. It uses only the standard library and keeps no state between messages
that a message could see: each message gets a fresh Context. Determinism rules for handler
authors: no clock, no randomness, no iteration over unordered collections into outputs; state
only via Context.

What it does remember between messages of one instance changes no result, only the work done:
the parsed env (the same text for every message of a process, handed to handlers read-only) and
compiled encoders. The compute unit ties an instance's history to nonces (instance windows), so
the fuel a message uses is still the same on every node and replay.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Protocol

MAX_LIST = 1000


class ProcessError(Exception):
    """Raised by a handler: the message fails, its state writes are discarded, Error is recorded."""


class ExtensionError(ProcessError):
    """An extension (WeaveDrive, LLM) refused or failed; unless caught, the message fails with it."""


class Host(Protocol):
    """What the compute unit provides (the WIT imports)."""

    def get(self, key: str) -> str | None: ...
    def set(self, key: str, value: str) -> None: ...
    def delete(self, key: str) -> None: ...
    def keys(self, prefix: str, after: str, limit: int) -> list[str]: ...
    def log(self, line: str) -> None: ...
    def weave_size(self, path: str) -> int: ...
    def weave_read(self, path: str, offset: int, length: int) -> bytes: ...
    def complete(self, model: str, prefix: list[tuple[str, bool]], parts: list[tuple[str, bool]], grammar: str,
                 max_tokens: int) -> str: ...
    def prefetch(self, model: str, prefix: list[tuple[str, bool]], parts: list[tuple[str, bool]], grammar: str,
                 max_tokens: int) -> None: ...


TagsLike = Mapping[str, str] | Sequence[tuple[str, str]]


def _tag_pairs(tags: TagsLike) -> list[dict[str, str]]:
    items: Iterable[tuple[str, str]] = tags.items() if isinstance(tags, Mapping) else tags
    return [{"name": str(n), "value": str(v)} for n, v in items]


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
# Results: the compute unit reads them and hashes its own canonical form, so key order here is free.
_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces: the same value always gives the same text."""
    return _CANONICAL.encode(value)


def _frozen(value: Any) -> Any:
    """A read-only copy of parsed JSON (objects become mapping proxies, arrays tuples)."""
    if isinstance(value, dict):
        return MappingProxyType({k: _frozen(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    return value


class _MessageRandom:
    """`random` seeded from the message, lazily: only a message that uses it pays for seeding.

    The module's functions are rebound (once) to check for a pending seed first, so a message sees exactly
    the stream it would after ``random.seed(<its seed>)`` at its start, whether its instance is fresh or not.
    """

    pending: bytes | None = None
    installed = False

    @classmethod
    def expect(cls, seed: bytes) -> None:
        if not cls.installed:
            cls._install()
        cls.pending = seed

    @classmethod
    def _install(cls) -> None:
        inst = random._inst  # type: ignore[attr-defined]
        for name in dir(random):
            bound = getattr(random, name)
            if getattr(bound, "__self__", None) is inst and callable(bound):
                setattr(random, name, cls._wrap(inst, name))
        cls.installed = True

    @classmethod
    def _wrap(cls, inst: random.Random, name: str) -> Callable[..., Any]:
        method = getattr(inst, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            seed, cls.pending = cls.pending, None
            if seed is not None and name != "seed":
                inst.seed(seed)
            return method(*args, **kwargs)

        call.__name__ = call.__qualname__ = name
        return call


class Message:
    """A message as the compute unit hands it to a process (AO's msg)."""

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self.raw = raw
        self.tags: list[tuple[str, str]] = [(t["name"], t["value"]) for t in raw.get("Tags", [])]

    def tag(self, name: str, default: str | None = None) -> str | None:
        """First value of a tag."""
        for n, v in self.tags:
            if n == name:
                return v
        return default

    @property
    def id(self) -> str:
        return str(self.raw.get("Id", ""))

    @property
    def sender(self) -> str:
        """AO's From: the sending process for pushed messages, else the signer."""
        return str(self.raw.get("From", ""))

    @property
    def owner(self) -> str:
        return str(self.raw.get("Owner", ""))

    @property
    def action(self) -> str | None:
        return self.tag("Action")

    @property
    def data(self) -> str:
        return str(self.raw.get("Data", ""))

    @property
    def nonce(self) -> int:
        return int(self.raw.get("Nonce", 0))

    @property
    def timestamp(self) -> int:
        return int(self.raw.get("Timestamp", 0))

    @property
    def block_height(self) -> int:
        return int(self.raw.get("Block-Height", 0))

    @property
    def is_spawn(self) -> bool:
        return self.tag("Type") == "Process"

    def forwarded_tags(self) -> list[tuple[str, str]]:
        """The X- tags a token forwards on its notices."""
        return [(n, v) for n, v in self.tags if n.startswith("X-")]


class Context:
    """Everything a handler may touch while one message is evaluated."""

    def __init__(self, host: Host, msg: Message, env: Mapping[str, Any]) -> None:
        self.host = host
        self.msg = msg
        self.env = env
        self.messages: list[dict[str, Any]] = []
        # Writes ride back with the result (one boundary crossing instead of one per write).
        self.writes: dict[str, str | None] = {}
        self.spawns: list[dict[str, Any]] = []
        self.output: list[str] = []

    @property
    def process_id(self) -> str:
        return str(self.env.get("Process", {}).get("Id", ""))

    @property
    def process_owner(self) -> str:
        return str(self.env.get("Process", {}).get("Owner", ""))

    def send(self, target: str, tags: TagsLike, data: str = "") -> None:
        """Queue a message to another process or address."""
        self.messages.append({"Target": target, "Tags": _tag_pairs(tags), "Data": data})

    def reply(self, tags: TagsLike, data: str = "") -> None:
        """Queue a message back to the sender, referencing the message answered."""
        pairs = list(tags.items()) if isinstance(tags, Mapping) else list(tags)
        self.send(self.msg.sender, [*pairs, ("X-Reference", self.msg.id)], data)

    def print(self, text: str) -> None:
        """Add a line to the result's Output."""
        self.output.append(text)

    def get(self, key: str, default: Any = None) -> Any:
        """A JSON value from state, seeing this message's own writes."""
        raw = self.writes[key] if key in self.writes else self.host.get(key)
        return default if raw is None else json.loads(raw)

    def put(self, key: str, value: Any) -> None:
        """Write a JSON value to state (canonical encoding)."""
        self.writes[key] = canonical_json(value)

    def delete(self, key: str) -> None:
        """Remove a key from state."""
        self.writes[key] = None

    def weave_size(self, path: str) -> int:
        """Size of a WeaveDrive path (/data/<txid>, /tx/<txid>, /block/<height>)."""
        return self.host.weave_size(path)

    def weave_read(self, path: str, offset: int = 0, length: int | None = None) -> bytes:
        """Bytes of a WeaveDrive path; admission and chunk verification are the host's."""
        if length is None:
            length = self.weave_size(path) - offset
        return self.host.weave_read(path, offset, length)

    def complete(
        self,
        model: str,
        *,
        parts: Sequence[tuple[str, bool]],
        prefix: Sequence[tuple[str, bool]] = (),
        grammar: str = "",
        max_tokens: int = 64,
    ) -> dict[str, Any]:
        """A greedy llama.cpp completion over model weights at a WeaveDrive path.

        Parts are (text, special): scaffold text is special (chat markup parsed), user text is
        not (typed markup stays text). The prefix's state is computed once and reused.
        """
        raw = self.host.complete(model, list(prefix), list(parts), grammar, max_tokens)
        return json.loads(raw)

    def prefetch(
        self,
        model: str,
        *,
        parts: Sequence[tuple[str, bool]],
        prefix: Sequence[tuple[str, bool]] = (),
        grammar: str = "",
        max_tokens: int = 64,
    ) -> None:
        """Say that a later message will ask for this completion (same arguments as `complete`).

        Only a hint: nothing comes back and the result is the same without it, but the compute unit may compute
        the completion ahead on another worker, so completions hinted together run at once.
        """
        self.host.prefetch(model, list(prefix), list(parts), grammar, max_tokens)

    def keys(self, prefix: str, after: str = "", limit: int = MAX_LIST) -> list[str]:
        """State keys with a prefix, in code-point order, after a cursor, seeing this message's writes."""
        limit = min(limit, MAX_LIST)
        found = set(self.host.keys(prefix, after, limit + len(self.writes)))
        for key, value in self.writes.items():
            if key.startswith(prefix) and key > after:
                if value is None:
                    found.discard(key)
                else:
                    found.add(key)
        return sorted(found)[:limit]


Handler = Callable[[Context], None]


class Process:
    """A process: handlers keyed by Action, plus one for the spawn message."""

    def __init__(self, *, accepts_assignments: bool = False) -> None:
        # A message whose Target is another process reached this one through the scheduler's `assign` (anyone may
        # ask for one): as in aos, it is refused unless the process says it takes assignments.
        self.accepts_assignments = accepts_assignments
        self._handlers: dict[str, Handler] = {}
        self._spawn: Handler | None = None
        self._default: Handler | None = None
        self._env: tuple[str, Mapping[str, Any]] | None = None  # (text, parsed): a process's env never changes

    def on(self, action: str) -> Callable[[Handler], Handler]:
        """Register a handler for an Action."""

        def register(fn: Handler) -> Handler:
            self._handlers[action] = fn
            return fn

        return register

    def on_spawn(self, fn: Handler) -> Handler:
        """Register the handler of the spawn message (nonce 0)."""
        self._spawn = fn
        return fn

    def otherwise(self, fn: Handler) -> Handler:
        """Register the handler of messages no other handler takes."""
        self._default = fn
        return fn

    def handle(self, host: Host, msg_json: str, env_json: str) -> str:
        """Evaluate one message; return AO's result JSON."""
        msg = Message(json.loads(msg_json))
        # The interpreter (and its `random` module) may live on between messages or be
        # recycled at any point; seeding from the message makes `random` the same either way.
        _MessageRandom.expect(hashlib.sha256(f"{msg.id}/{msg.nonce}".encode()).digest())
        ctx = Context(host, msg, self._parsed_env(env_json))
        error = None
        target = str(msg.raw.get("Target", ""))
        try:
            if not msg.is_spawn and target and ctx.process_id and target != ctx.process_id and not self.accepts_assignments:
                raise ProcessError(f"assignment refused: this message is for {target}, and this process does not "
                                   "take assigned messages")
            if msg.is_spawn:
                handler = self._spawn
            else:
                handler = self._handlers.get(msg.action or "", self._default)
            if handler is not None:
                handler(ctx)
        except ProcessError as exc:
            error = str(exc) or type(exc).__name__
        except Exception as exc:  # noqa: BLE001 - a handler bug fails the message, not the unit
            error = f"{type(exc).__name__}: {exc}"
        result: dict[str, Any] = {
            "Messages": [] if error else ctx.messages,
            "Spawns": [] if error else ctx.spawns,
            "Assignments": [],
            "Output": "\n".join(ctx.output),
        }
        if error is not None:
            result["Error"] = error
        else:
            result["Writes"] = ctx.writes
        return _COMPACT.encode(result)

    def _parsed_env(self, env_json: str) -> Mapping[str, Any]:
        cached = self._env
        if cached is None or (cached[0] is not env_json and cached[0] != env_json):
            cached = self._env = (env_json, _frozen(json.loads(env_json)))
        return cached[1]
