"""The component entry point shared by every Python process module.

componentize-py builds ``app`` with the module's directory on the path; that directory
provides ``process_main.process`` (an ``aosdk.Process``). This file binds the WIT imports
to the SDK's Host interface and exports ``handle``.
"""

from __future__ import annotations

import wit_world
from aosdk import ExtensionError
from process_main import process
from wit_world.imports import llm, log, state, weavedrive
from componentize_py_types import Err


class _WitHost:
    """The compute unit's imports, as the SDK's Host."""

    def get(self, key: str) -> str | None:
        return state.get(key)

    def set(self, key: str, value: str) -> None:
        state.set(key, value)

    def delete(self, key: str) -> None:
        state.delete(key)

    def keys(self, prefix: str, after: str, limit: int) -> list[str]:
        return state.keys(prefix, after, limit)

    def log(self, line: str) -> None:
        log.write(line)

    def weave_size(self, path: str) -> int:
        try:
            return weavedrive.size(path)
        except Err as exc:
            raise ExtensionError(str(exc.value)) from None

    def weave_read(self, path: str, offset: int, length: int) -> bytes:
        try:
            return weavedrive.read(path, offset, length)
        except Err as exc:
            raise ExtensionError(str(exc.value)) from None

    def complete(self, model: str, prefix: list[tuple[str, bool]], parts: list[tuple[str, bool]], grammar: str,
                 max_tokens: int) -> str:
        try:
            return llm.complete(_request(model, prefix, parts, grammar, max_tokens))
        except Err as exc:
            raise ExtensionError(str(exc.value)) from None

    def prefetch(self, model: str, prefix: list[tuple[str, bool]], parts: list[tuple[str, bool]], grammar: str,
                 max_tokens: int) -> None:
        llm.prefetch(_request(model, prefix, parts, grammar, max_tokens))


def _request(model: str, prefix: list[tuple[str, bool]], parts: list[tuple[str, bool]], grammar: str,
             max_tokens: int) -> llm.CompletionRequest:
    return llm.CompletionRequest(
        model=model,
        prefix=[llm.PromptPart(text=t, special=s) for t, s in prefix],
        parts=[llm.PromptPart(text=t, special=s) for t, s in parts],
        grammar=grammar,
        max_tokens=max_tokens,
    )


class WitWorld(wit_world.WitWorld):
    """The exported world."""

    def handle(self, msg: str, env: str) -> str:
        return process.handle(_WitHost(), msg, env)
