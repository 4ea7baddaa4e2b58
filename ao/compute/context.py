"""What stays the same for every message of a process: its module, limits, extensions, instance window."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from ao import models
from ao.effects.stores import embedded_store, remote_data
from ao.errors import EvaluationError
from ao.extensions import llm_host, weavedrive
from ao.modules import COMPONENT_FORMAT, CORE64_FORMAT
from ao.permaweb import dataitem
from ao.units import cu
from ao.units import weavedrive as wd

# An instance serves at most this many messages in a row (nonces [k*W, (k+1)*W)), then a fresh one starts;
# an Error result also ends its window. The interpreter's work, and so the fuel a message uses, depends on the
# instance's history: tying that history to nonces makes it the same on every node and every replay. A fresh
# interpreter is slow for its first few dozen messages (CPython specialises code as it runs), so windows are
# long; the price is paid only when a worker must rebuild a window (after a restart), re-running at most W-1
# messages of ~1 ms each.
INSTANCE_WINDOW = 1024
# A process using the LLM extension runs every message on a fresh instance: a completion costs seconds,
# instantiation milliseconds, and a window never has to be rebuilt by re-running completions.
LLM_INSTANCE_WINDOW = 1


@dataclass(frozen=True)
class ProcessContext:
    """What stays the same for every message of a process."""

    process_id: str
    module_id: str
    env_json: str
    fuel: int
    memory_limit: int
    trusted_pushers: frozenset[str]
    module_format: str = COMPONENT_FORMAT
    weave: wd.Policy | None = None
    llm: bool = False
    window: int = INSTANCE_WINDOW
    # Set when the spawn or module can never run (a bad limit tag, an unknown module format): a fact of the log,
    # so every message of the process gets this as its Error and the log goes on.
    invalid: str | None = None

    @property
    def instance_key(self) -> str:
        """The key of this process's warm instance in a runtime."""
        return f"{self.process_id}/{self.module_id}"


def process_context(process_id: str) -> ProcessContext:
    """Read the spawn and its module. Limits come from the module; a spawn tag may lower them, never raise them."""
    spawn_raw = (
        models.Assignment.objects.filter(process_id=process_id, nonce=0).values_list("message__raw", flat=True).first()
    )
    if spawn_raw is None:
        raise EvaluationError(f"no process {process_id} in this scheduler's log")
    return context_from_spawn(process_id, dataitem.parse(bytes(spawn_raw)))


def context_from_spawn(process_id: str, spawn: dataitem.DataItem) -> ProcessContext:
    """The context of a process from its spawn item and its module's record in this node's store."""
    module_id = spawn.tag("Module") or ""
    records = embedded_store().query(ids=[module_id], first=1)
    if not records or records[0].kind != "tx":
        # The module may exist on the permaweb without being in this node's store: a fault of this node.
        raise EvaluationError(f"process {process_id}: its module {module_id} is not in this node's store")
    module = records[0]
    module_tags = [(t.name, t.value) for t in module.tags]
    env = cu.env_json(
        process_id=process_id, process_owner=spawn.owner_address, process_tags=spawn.tags, module_id=module_id,
        module_owner=module.owner_address, module_tags=module_tags,
    )
    base = {
        "process_id": process_id, "module_id": module_id, "env_json": cu.canonical(env).decode("utf-8"),
        # Part of the log: the messengers the spawn names (AO's Authority tags), not this node's settings.
        "trusted_pushers": cu.authorities(spawn.tags),
    }
    fmt = cu.first_tag(module_tags, "Module-Format")
    try:
        if fmt not in (COMPONENT_FORMAT, CORE64_FORMAT):
            raise cu.LimitError(
                f"module {module_id} has Module-Format {fmt!r}; this unit runs {COMPONENT_FORMAT} and {CORE64_FORMAT}")
        memory, fuel = cu.process_limits(spawn_tags=spawn.tags, module_tags=module_tags)
        weave = wd.policy_from_tags(
            process_tags=spawn.tags, module_tags=module_tags, scheduler=spawn.tag("Scheduler") or "",
            owner=spawn.owner_address,
        )
    except (cu.LimitError, wd.WeaveDriveError) as exc:
        return ProcessContext(**base, fuel=1, memory_limit=1, module_format=fmt or "",
                              invalid=f"this process cannot run: {exc}")
    llm = llm_host.enabled(list(spawn.tags), module_tags)
    return ProcessContext(
        **base, fuel=fuel, memory_limit=memory, module_format=fmt, weave=weave, llm=llm,
        window=LLM_INSTANCE_WINDOW if llm else INSTANCE_WINDOW,
    )


@lru_cache(maxsize=256)
def module_bytes(module_id: str) -> bytes:
    """A module's binary from the store (content never changes for an id).

    A worker on another machine (``stores.remote_data``) fetches it through the node's gateway into its verified
    chunk cache, every chunk proven against the module transaction's data_root, and keeps it on its own disk.
    """
    if remote_data():
        cache = weavedrive.chunk_cache()
        return cache.read(module_id, 0, cache.store.data_size(module_id))
    return embedded_store().read(module_id)
