"""A test process that does what the compute unit must contain: loops, traps, big allocations, entropy."""

from __future__ import annotations

import json
import os
import random
import time

from aosdk import Context, Process, ProcessError

process = Process()


@process.on_spawn
def spawn(ctx: Context) -> None:
    ctx.put("spawned", True)


@process.on("Set")
def set_value(ctx: Context) -> None:
    ctx.put(ctx.msg.tag("Key", "k") or "k", ctx.msg.data)


@process.on("Get")
def get_value(ctx: Context) -> None:
    ctx.print(json.dumps(ctx.get(ctx.msg.tag("Key", "k") or "k")))


@process.on("Set-Then-Fail")
def set_then_fail(ctx: Context) -> None:
    ctx.put(ctx.msg.tag("Key", "k") or "k", ctx.msg.data)
    ctx.send(ctx.msg.sender, {"Action": "Never-Sent"})
    raise ProcessError("failed after writing")


@process.on("Set-Then-Crash")
def set_then_crash(ctx: Context) -> None:
    ctx.put(ctx.msg.tag("Key", "k") or "k", ctx.msg.data)
    raise ValueError("a bug in the handler")


@process.on("Loop")
def loop(ctx: Context) -> None:
    ctx.put("k", "looping")
    n = 0
    while True:
        n += 1


@process.on("Work")
def work(ctx: Context) -> None:
    """A bounded amount of interpreter work (the fuel it takes depends on how warm the interpreter is)."""
    total = 0
    for i in range(int(ctx.msg.tag("N", "1000") or "1000")):
        total += len(str(i * 7)) + len({"k": i})
    ctx.print(str(total))


@process.on("Send-Big")
def send_big(ctx: Context) -> None:
    """An outbox message of Size bytes (more than any message the scheduler takes in)."""
    ctx.send(ctx.msg.tag("To", "") or ctx.msg.sender, [("Action", "Big")], "x" * int(ctx.msg.tag("Size", "0") or "0"))


@process.on("Alloc")
def alloc(ctx: Context) -> None:
    ctx.put("k", "allocating")
    block = bytearray(int(ctx.msg.tag("Size", "0") or "0"))
    ctx.print(str(len(block)))


@process.on("Entropy")
def entropy(ctx: Context) -> None:
    ctx.print(json.dumps({"random": random.random(), "time": time.time(), "urandom": os.urandom(8).hex(),
                          "monotonic": time.monotonic_ns()}))


@process.on("Sleep")
def sleep(ctx: Context) -> None:
    time.sleep(0.01)


@process.on("Env")
def env(ctx: Context) -> None:
    ctx.print(json.dumps({"environ": dict(os.environ), "files": _listdir()}))


def _listdir() -> list[str] | str:
    try:
        return os.listdir("/")
    except OSError as exc:
        return f"{type(exc).__name__}"


@process.on("Whoami")
def whoami(ctx: Context) -> None:
    ctx.print(json.dumps({"From": ctx.msg.sender, "Owner": ctx.msg.owner, "Forwarded-By": ctx.msg.raw.get("Forwarded-By"),
                          "Tags": ctx.msg.tags}))


@process.on("Send")
def send(ctx: Context) -> None:
    tags = [("Action", ctx.msg.tag("Forward-Action", "Ping") or "Ping")]
    tags += [(n.removeprefix("Fwd-"), v) for n, v in ctx.msg.tags if n.startswith("Fwd-")]
    ctx.send(ctx.msg.tag("To", "") or "", tags, ctx.msg.data)


@process.on("Weave-Read")
def weave_read(ctx: Context) -> None:
    path = ctx.msg.tag("Path", "") or ""
    offset = int(ctx.msg.tag("Offset", "0") or "0")
    length = int(ctx.msg.tag("Length", "-1") or "-1")
    data = ctx.weave_read(path, offset, None if length < 0 else length)
    ctx.print(json.dumps({"size": ctx.weave_size(path), "hex": data.hex()}))


def _request(ctx: Context) -> dict:
    return {
        "prefix": [(ctx.msg.tag("Prefix", "") or "", True)],
        "parts": [("<|im_start|>user\n", True), (ctx.msg.data, False), ("<|im_end|>\n<|im_start|>assistant\n", True)],
        "grammar": ctx.msg.tag("Grammar", "") or "",
        "max_tokens": int(ctx.msg.tag("Max-Tokens", "16") or "16"),
    }


@process.on("Complete")
def complete(ctx: Context) -> None:
    answer = ctx.complete(ctx.msg.tag("Model", "") or "", **_request(ctx))
    ctx.put("last-answer", answer["text"])
    ctx.print(json.dumps(answer, sort_keys=True))


@process.on("Prefetch")
def prefetch(ctx: Context) -> None:
    """Hint the completion a Complete with the same tags and data would ask for."""
    ctx.prefetch(ctx.msg.tag("Model", "") or "", **_request(ctx))
    ctx.print("hinted")


@process.on("Env-Write")
def env_write(ctx: Context) -> None:
    """Try to change the env a handler is given (read-only: the next message must see it unchanged)."""
    ctx.env["Process"]["Id"] = "changed"  # type: ignore[index]


@process.on("Process-Id")
def process_id(ctx: Context) -> None:
    ctx.print(ctx.process_id)


@process.on("Entropy-Twice")
def entropy_twice(ctx: Context) -> None:
    """Draws after work that does not touch `random`: the same draws as right after the message's seed."""
    ctx.put("drew", "yes")
    ctx.print(json.dumps([random.random(), random.randint(0, 10**9)]))
