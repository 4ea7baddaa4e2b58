"""The llama.cpp compute-unit extension's engine: deterministic, replayable greedy completions.

A completion must be a pure function of (model bytes, request, the recorded params) so that any
compute unit replaying a process gets byte-identical text. On one llama.cpp build, greedy logits
are bit-identical across runs, processes and thread counts, but NOT across different ways of
feeding the same prompt (batch boundaries change the arithmetic). So every prompt is fed one
canonical way, and nothing in llama-cpp-python's high-level ``Llama`` class (which silently reuses
a matching KV-cache prefix and re-feeds the last token on its own) is used:

1. Tokenize each part on its own (``special`` parts with special tokens parsed, user parts with
   ``parse_special=False`` so a typed ``<|im_end|>`` stays text) and concatenate.
2. Prefix non-empty: clear the context's memory, decode the prefix tokens as one ``llama_decode``
   call, copy out the context state (``llama_state_get_data``) and cache it keyed by (model sha256,
   prefix token ids). Whether computed now or found in the cache, the memory is then cleared and the
   state *restored* (``llama_state_set_data``), so both cases continue from the very same step.
   Prefix empty: clear the context's memory (``llama_memory_clear``). A pool's engines also keep each
   computed prefix state on disk (``state_dir``, named by the model, the engine, the context shape and the
   prefix tokens, checksummed), so another worker of the machine, or this one after a restart, restores it
   instead of spending a minute of one core on a long prefix; the bytes restored are the bytes computed.
3. Decode the suffix tokens as one ``llama_decode`` call, then generate token by token
   (argmax of the logits, grammar-masked when a grammar is given), stopping at an end-of-generation
   token or at ``max_tokens``.

A segment longer than ``n_batch`` is fed in consecutive ``n_batch``-sized calls from its start;
llama.cpp splits each call into ``n_ubatch`` micro-batches. Both splits depend only on token counts
and the recorded ``n_batch``/``n_ubatch``, so they are part of the canonical path. If the parts
produce no tokens, the prefix's last token is fed as the suffix (logits always come from a decode).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import logging
import os
import platform
import sys
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np

from ao.errors import AoError, HostUnavailable

log = logging.getLogger(__name__)

# Fuel: a fixed rule that depends only on token counts, never on cache state or timing. Prices are
# wasm-fuel equivalents of the wall time each costs the reference model (Qwen2.5-Coder-1.5B, one
# thread: ~50 prompt tokens/s, ~21 generated tokens/s, at ~1e9 fuel/s).
FUEL_PER_REQUEST = 10_000_000
FUEL_PER_PROMPT_TOKEN = 20_000_000  # counted for the prefix too, whether its state was reused or not
FUEL_PER_GENERATED_TOKEN = 50_000_000

SEED = 0  # recorded; greedy decoding draws no random numbers
N_UBATCH = 512  # micro-batch size: bounds the attention scratch buffer (n_ubatch x n_ctx floats per head)
# Weights are read into private memory at load rather than mmap'ed: a file replaced or truncated after
# its hash was checked cannot change (or crash) a loaded model, and no page faults land mid-completion.
LOAD_MODE = llama_cpp.LLAMA_LOAD_MODE_NONE
LAZY_MODE = llama_cpp.LLAMA_LAZY_MODE_OFF  # every tensor read up front, at load
# Weight repacking into extra buffer types (the AMX/AVX-512 paths) segfaults in llama_decode with
# the default Q4_K_M model on these machines (seen with llama-cpp-python 0.3.36, also through the
# high-level Llama class); plain CPU buffers are what we load into.
USE_EXTRA_BUFTS = False
KV_TYPE = llama_cpp.GGML_TYPE_F16  # pinned rather than left to defaults: the KV precision changes logits
KV_TYPE_NAME = "f16"
DETOKENIZE_SPECIAL = True  # control tokens the model emits are kept visible in the raw output
FEED_SCHEME = "prefix-state-restore/suffix-batch/greedy-argmax/v1"  # names the canonical path above

PREFIX_CACHE_MAX_ENTRIES = 8
PREFIX_CACHE_MAX_BYTES = 512 * 1024 * 1024  # an 850-token prefix of a 1.5B model is ~25 MB of KV state
GRAMMAR_CACHE_MAX_ENTRIES = 32
POOL_MAX_ENGINES = 2  # the default model is ~1.9 GB resident; a worker rarely needs more than one
HASH_CHUNK_BYTES = 4 * 1024 * 1024
TOKEN_PIECE_BYTES = 64
NEG_INF = float("-inf")
GRAMMAR_ROOT = "root"
GRAMMAR_ERROR_CHARS = 400  # the parser echoes the grammar after its message; keep errors readable
STDERR_FD = 2
STOP_EOG = "eog"  # the model (or the grammar, once complete) chose an end-of-generation token
STOP_MAX_TOKENS = "max_tokens"


class LlmError(AoError):
    """Base of the LLM extension's errors."""


class BadRequest(LlmError):
    """The completion request is malformed (empty prompt, max_tokens out of range)."""


class PromptTooLong(LlmError):
    """The prompt plus max_tokens does not fit the context window."""


class BadGrammar(LlmError):
    """The GBNF grammar does not parse, or it allows no token at some step."""


class ModelMismatch(LlmError):
    """The model file's sha256 is not the one the request names."""

    status = 409


class ModelLoadFailed(LlmError, HostUnavailable):
    """llama.cpp could not load the model file (its bytes were verified: this is the node — memory, the build)."""

    status = 503


class DecodeFailed(LlmError, HostUnavailable):
    """llama.cpp failed to evaluate a batch (a fault of this node, retried and never recorded)."""

    status = 503


@dataclass(frozen=True)
class PromptPart:
    """A piece of prompt text; `special` parts (scaffold) have special tokens parsed, others never do."""

    text: str
    special: bool


@dataclass(frozen=True)
class CompletionRequest:
    """A greedy completion: a shared prefix (its state is cached), the request's own parts, a GBNF grammar."""

    prefix: tuple[PromptPart, ...]
    parts: tuple[PromptPart, ...]
    grammar: str
    max_tokens: int


@dataclass(frozen=True)
class Completion:
    """A completion's text and everything needed to audit or replay it."""

    text: str
    prefix_tokens: int
    prompt_tokens: int  # total, including the prefix
    generated_tokens: int
    model_sha256: str
    params: dict[str, Any]
    fuel: int
    prefix_reused: bool
    stop_reason: str  # STOP_EOG or STOP_MAX_TOKENS
    tokens: tuple[int, ...] = field(default=(), compare=False, repr=False)
    logits_sha256: str = ""  # sha256 over the float32 logits of every generation step: the engine's exact output


def fuel_for(*, prompt_tokens: int, generated_tokens: int) -> int:
    """Fuel charged for a completion: per request, per prompt token (prefix included), per generated token."""
    return FUEL_PER_REQUEST + FUEL_PER_PROMPT_TOKEN * prompt_tokens + FUEL_PER_GENERATED_TOKEN * generated_tokens


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


# --- llama.cpp logging: silenced, except that messages are captured while we wait for an error text.

_log_lock = threading.Lock()
_log_capture: list[str] | None = None
_backend_ready = False


@llama_cpp.llama_log_callback
def _log_sink(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    """Drop llama.cpp/ggml log lines, or keep them while an error message is being captured."""
    if _log_capture is not None and text:
        _log_capture.append(text.decode("utf-8", errors="replace"))


class _CapturedLog:
    """Collects llama.cpp's log lines during a call whose failure llama.cpp only explains in its log;
    with `stderr=True` also what it prints straight to file descriptor 2 (the GBNF parser does)."""

    def __init__(self, *, stderr: bool = False) -> None:
        self.lines: list[str] = []
        self._stderr = stderr
        self._saved_fd: int | None = None
        self._tmp: Any = None

    def __enter__(self) -> _CapturedLog:
        global _log_capture
        _log_lock.acquire()
        _log_capture = self.lines
        if self._stderr:
            sys.stderr.flush()
            self._tmp = tempfile.TemporaryFile()
            self._saved_fd = os.dup(STDERR_FD)
            os.dup2(self._tmp.fileno(), STDERR_FD)
        return self

    def __exit__(self, *exc: object) -> None:
        global _log_capture
        try:
            if self._saved_fd is not None:
                os.dup2(self._saved_fd, STDERR_FD)
                os.close(self._saved_fd)
                self._tmp.seek(0)
                self.lines.append(self._tmp.read().decode("utf-8", errors="replace"))
                self._tmp.close()
        finally:
            _log_capture = None
            _log_lock.release()

    def text(self) -> str:
        """The captured lines, joined, with noise trimmed."""
        return " ".join(" ".join(line.split()) for line in self.lines if line.strip())


# The canonical engine: llama.cpp compiled for x86-64-v3 (Haswell: AVX2, FMA, F16C, BMI2) with no native tuning, no
# AVX-512 and no runtime kernel dispatch (scripts/setup sets the CMake flags). Float results are a function of the
# binary's instructions, so every machine running this build computes the same logits and the same decisions.
CANONICAL_FEATURES = ("SSE3", "SSSE3", "AVX", "AVX2", "F16C", "FMA", "BMI2", "LLAMAFILE", "OPENMP", "REPACK")


@functools.cache
def engine_fingerprint() -> str:
    """llama.cpp's version and the instruction-set features it was compiled with, e.g. 'llama-cpp-python 0.3.36 x86
    SSE3 SSSE3 AVX AVX2 F16C FMA BMI2 LLAMAFILE OPENMP REPACK'."""
    info = llama_cpp.llama_print_system_info()
    text = info.decode("utf-8", "replace") if isinstance(info, bytes) else str(info)
    features = [part.split("=")[0].strip() for part in text.split("|") if part.strip().endswith("= 1")]
    features = [f.split(":")[-1].strip() for f in features]
    return f"llama-cpp-python {llama_cpp.__version__} {platform.machine()} {' '.join(features)}"


def canonical_engine() -> bool:
    """Whether the installed build is the canonical one (the features above, nothing more, nothing less)."""
    return engine_fingerprint().split(" ", 3)[3:] == [" ".join(CANONICAL_FEATURES)] and platform.machine() in (
        "x86_64", "AMD64")


def _ensure_backend() -> None:
    """Install the quiet log sink and initialise the llama.cpp backend once per process."""
    global _backend_ready
    if _backend_ready:
        return
    llama_cpp.llama_log_set(_log_sink, ctypes.c_void_p(0))
    llama_cpp.llama_backend_init()
    _backend_ready = True


_TOKEN_DATA_DTYPE = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)], align=True)


class _Grammar:
    """A compiled GBNF grammar: a pristine llama.cpp grammar sampler, cloned fresh for each request."""

    def __init__(self, vocab: Any, text: str) -> None:
        with _CapturedLog(stderr=True) as log:
            sampler = llama_cpp.llama_sampler_init_grammar(vocab, text.encode("utf-8"), GRAMMAR_ROOT.encode())
        if not sampler:
            detail = log.text() or "llama.cpp rejected it"
            raise BadGrammar(f"the GBNF grammar does not compile; llama.cpp says: {detail[:GRAMMAR_ERROR_CHARS]} "
                             f"(the start rule must be named `{GRAMMAR_ROOT}`)")
        self.sampler = sampler
        self.sha256 = hashlib.sha256(text.encode("utf-8")).hexdigest()

    def fresh(self) -> Any:
        """A new sampler in the grammar's start state (the caller frees it)."""
        return llama_cpp.llama_sampler_clone(self.sampler)

    def close(self) -> None:
        """Free the pristine sampler."""
        if self.sampler:
            llama_cpp.llama_sampler_free(self.sampler)
            self.sampler = None


class LlamaEngine:
    """One model in one llama.cpp context, completing requests deterministically, one at a time."""

    def __init__(
        self,
        model_path: Path,
        *,
        expected_sha256: str,
        n_ctx: int = 4096,
        n_threads: int = 1,
        n_batch: int = 2048,
        prefix_cache_entries: int = PREFIX_CACHE_MAX_ENTRIES,
        prefix_cache_bytes: int = PREFIX_CACHE_MAX_BYTES,
        state_dir: Path | None = None,
    ) -> None:
        self.model_path = Path(model_path)
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self._model: Any = None
        self._ctx: Any = None
        self._grammars: OrderedDict[str, _Grammar] = OrderedDict()
        self._prefix_states: OrderedDict[tuple[str, tuple[int, ...]], ctypes.Array[ctypes.c_uint8]] = OrderedDict()
        self._prefix_bytes = 0
        self._lock = threading.Lock()
        self.prefix_cache_entries = prefix_cache_entries
        self.prefix_cache_bytes = prefix_cache_bytes

        expected = expected_sha256.strip().lower()
        try:
            before = os.stat(self.model_path)
            actual = file_sha256(self.model_path)
        except OSError as e:  # this node's disk, not the model: retried, never recorded
            raise HostUnavailable(f"cannot read the model file {self.model_path}: {e.strerror}") from e
        if actual != expected:
            raise ModelMismatch(
                f"model file {self.model_path} has sha256 {actual}, not the expected {expected}: "
                "fetch the model again or fix the recorded hash")
        self.sha256 = actual

        _ensure_backend()
        model_params = llama_cpp.llama_model_default_params()
        model_params.n_gpu_layers = 0
        model_params.load_mode = LOAD_MODE
        model_params.lazy_mode = LAZY_MODE
        model_params.use_extra_bufts = USE_EXTRA_BUFTS
        with _CapturedLog() as log:
            self._model = llama_cpp.llama_model_load_from_file(str(self.model_path).encode(), model_params)
        if not self._model:
            raise ModelLoadFailed(f"llama.cpp cannot load {self.model_path}: {log.text() or 'unknown reason'}")
        after = os.stat(self.model_path)
        if (before.st_ino, before.st_size, before.st_mtime_ns) != (after.st_ino, after.st_size, after.st_mtime_ns):
            self.close()
            raise HostUnavailable(f"model file {self.model_path} changed while it was being loaded; load it again")

        self.n_batch = min(n_batch, n_ctx)
        self.n_ubatch = min(N_UBATCH, self.n_batch)
        ctx_params = llama_cpp.llama_context_default_params()
        ctx_params.n_ctx = n_ctx
        ctx_params.n_batch = self.n_batch
        ctx_params.n_ubatch = self.n_ubatch
        ctx_params.n_seq_max = 1
        ctx_params.n_threads = n_threads
        ctx_params.n_threads_batch = n_threads
        ctx_params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED  # flash attention is not reproducible
        ctx_params.type_k = KV_TYPE
        ctx_params.type_v = KV_TYPE
        ctx_params.embeddings = False
        ctx_params.no_perf = True
        with _CapturedLog() as log:
            self._ctx = llama_cpp.llama_init_from_model(self._model, ctx_params)
        if not self._ctx:  # the weights loaded, so this is the node's memory, not the model
            self.close()
            raise HostUnavailable(f"llama.cpp cannot create a context of {n_ctx} tokens: {log.text()}")

        self.n_ctx = llama_cpp.llama_n_ctx(self._ctx)
        self.n_threads = n_threads
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        self._add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self._vocab))
        self._bos = llama_cpp.llama_vocab_bos(self._vocab)
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        self._candidates = (llama_cpp.llama_token_data * self.n_vocab)()
        self._candidates_np = np.frombuffer(self._candidates, dtype=_TOKEN_DATA_DTYPE)
        self._candidates_np["id"] = np.arange(self.n_vocab, dtype=np.int32)
        self._one = (llama_cpp.llama_token_data * 1)()
        self._piece = ctypes.create_string_buffer(TOKEN_PIECE_BYTES)
        self._logits_type = ctypes.c_float * self.n_vocab

    # --- public API

    def complete(self, request: CompletionRequest) -> Completion:
        """Greedy completion of `request`, fed the canonical way (see the module docstring)."""
        if request.max_tokens < 1:
            raise BadRequest(f"max_tokens must be at least 1, not {request.max_tokens}")
        with self._lock:
            self._check_open()
            grammar = self._grammar(request.grammar) if request.grammar else None
            prefix = self.tokenize(request.prefix)
            suffix = self.tokenize(request.parts)
            if self._add_bos and self._bos >= 0:
                if prefix:
                    prefix = [self._bos, *prefix]
                else:
                    suffix = [self._bos, *suffix]
            if not suffix:
                if not prefix:
                    raise BadRequest("the prompt is empty: give at least one non-empty part")
                prefix, suffix = prefix[:-1], prefix[-1:]
            prompt_tokens = len(prefix) + len(suffix)
            if prompt_tokens + request.max_tokens > self.n_ctx:
                raise PromptTooLong(
                    f"the prompt is {prompt_tokens} tokens and max_tokens is {request.max_tokens}, "
                    f"but the context holds {self.n_ctx}: shorten the prompt or lower max_tokens")

            reused = self._start(prefix)
            self._decode(suffix)
            generated, stop, logits_sha256 = self._generate(grammar, request.max_tokens)
            return Completion(
                text=self.detokenize(generated),
                prefix_tokens=len(prefix),
                prompt_tokens=prompt_tokens,
                generated_tokens=len(generated),
                model_sha256=self.sha256,
                params=self.params(grammar=request.grammar, max_tokens=request.max_tokens),
                fuel=fuel_for(prompt_tokens=prompt_tokens, generated_tokens=len(generated)),
                prefix_reused=reused,
                stop_reason=stop,
                tokens=tuple(generated),
                logits_sha256=logits_sha256,
            )

    def params(self, *, grammar: str, max_tokens: int) -> dict[str, Any]:
        """Everything that determines a completion's output besides the model bytes and prompt."""
        return {
            "model_sha256": self.sha256,
            "n_ctx": self.n_ctx,
            "n_batch": self.n_batch,
            "n_ubatch": self.n_ubatch,
            "greedy": True,
            "grammar_sha256": hashlib.sha256(grammar.encode("utf-8")).hexdigest() if grammar else None,
            "max_tokens": max_tokens,
            "llama_cpp_python": llama_cpp.__version__,
            "engine": engine_fingerprint(),
            "flash_attn": False,
            "kv_type": KV_TYPE_NAME,
            "seed": SEED,
            "add_bos": self._add_bos,
            "detokenize_special": DETOKENIZE_SPECIAL,
            "feed": FEED_SCHEME,
        }

    def tokenize(self, parts: tuple[PromptPart, ...] | list[PromptPart]) -> list[int]:
        """Token ids of the parts, each tokenized on its own (special tokens parsed only in special parts)."""
        tokens: list[int] = []
        for part in parts:
            tokens += self._tokenize_text(part.text, special=part.special)
        return tokens

    def detokenize(self, tokens: list[int] | tuple[int, ...]) -> str:
        """Text of generated tokens (invalid UTF-8 from a cut-off multi-byte character is replaced)."""
        return b"".join(self._token_bytes(t) for t in tokens).decode("utf-8", errors="replace")

    def is_eog(self, token: int) -> bool:
        """Whether the token ends generation (EOS, end-of-turn markers)."""
        return bool(llama_cpp.llama_vocab_is_eog(self._vocab, token))

    def cached_prefixes(self) -> int:
        """Number of prefix states held in the cache."""
        return len(self._prefix_states)

    def clear_prefix_cache(self) -> None:
        """Forget every cached prefix state."""
        with self._lock:
            self._prefix_states.clear()
            self._prefix_bytes = 0

    def close(self) -> None:
        """Free the llama.cpp context, model and compiled grammars (waits for a running completion)."""
        with self._lock:
            self._free()

    def __del__(self) -> None:
        if hasattr(self, "_lock"):
            self.close()

    def _free(self) -> None:
        for grammar in self._grammars.values():
            grammar.close()
        self._grammars.clear()
        self._prefix_states.clear()
        self._prefix_bytes = 0
        if self._ctx:
            llama_cpp.llama_free(self._ctx)
            self._ctx = None
        if self._model:
            llama_cpp.llama_model_free(self._model)
            self._model = None

    # --- the canonical path

    def _start(self, prefix: list[int]) -> bool:
        """Put the context at the end of `prefix` by restoring its state; True if it came from the cache.

        The memory (cells and data) is cleared before every restore, so the whole KV buffer holds the same
        bytes whatever ran before: a cache hit, a miss and an engine's first request continue identically.
        """
        if not prefix:
            llama_cpp.llama_memory_clear(self._memory, True)
            return False
        key = (self.sha256, tuple(prefix))
        state = self._prefix_states.get(key)
        reused = state is not None
        if state is None:
            state = self._kept_state(prefix)
            reused = state is not None
            if state is None:
                llama_cpp.llama_memory_clear(self._memory, True)
                self._decode(prefix)
                state = self._save_state()
                self._keep_state(prefix, state)
            self._remember(key, state)
        else:
            self._prefix_states.move_to_end(key)
        llama_cpp.llama_memory_clear(self._memory, True)
        if llama_cpp.llama_state_set_data(self._ctx, state, len(state)) != len(state):
            raise DecodeFailed("llama.cpp could not restore the prefix state")
        return reused

    # --- prefix states kept on disk, shared by this machine's workers and kept across restarts

    def _state_path(self, prefix: list[int]) -> Path | None:
        """Where the state after `prefix` is kept: named by everything that determines its bytes."""
        if self.state_dir is None:
            return None
        what = json.dumps({"model_sha256": self.sha256, "engine": engine_fingerprint(), "n_ctx": self.n_ctx,
                           "n_batch": self.n_batch, "n_ubatch": self.n_ubatch, "kv_type": KV_TYPE_NAME,
                           "feed": FEED_SCHEME, "prefix": prefix}, sort_keys=True, separators=(",", ":"))
        return self.state_dir / f"{hashlib.sha256(what.encode()).hexdigest()}.state"

    def _kept_state(self, prefix: list[int]) -> ctypes.Array[ctypes.c_uint8] | None:
        """The kept state after `prefix`, if a worker kept it and its checksum holds (else it is computed)."""
        path = self._state_path(prefix)
        if path is None:
            return None
        try:
            raw = path.read_bytes()
        except OSError:
            return None
        digest, body = raw[:32], raw[32:]
        if len(raw) < 32 or hashlib.sha256(body).digest() != digest:
            path.unlink(missing_ok=True)  # torn or rotten: computed again and kept anew
            return None
        return (ctypes.c_uint8 * len(body)).from_buffer_copy(body)

    def _keep_state(self, prefix: list[int], state: ctypes.Array[ctypes.c_uint8]) -> None:
        """Keep a computed prefix state on disk (written whole under a temporary name, then renamed)."""
        path = self._state_path(prefix)
        if path is None or len(state) > self.prefix_cache_bytes:
            return
        body = bytes(state)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".state-")
            with os.fdopen(fd, "wb") as out:
                out.write(hashlib.sha256(body).digest() + body)
            os.replace(tmp, path)
        except OSError:  # a full disk costs the next worker the prefix's time, nothing else
            log.warning("cannot keep the prefix state %s", path, exc_info=True)

    def _save_state(self) -> ctypes.Array[ctypes.c_uint8]:
        """A copy of the context's state (KV memory and last logits)."""
        size = llama_cpp.llama_state_get_size(self._ctx)
        buf = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_get_data(self._ctx, buf, size)
        if written != size:
            raise DecodeFailed(f"llama.cpp saved {written} of {size} bytes of prefix state")
        return buf

    def _remember(self, key: tuple[str, tuple[int, ...]], state: ctypes.Array[ctypes.c_uint8]) -> None:
        """Cache a prefix state, evicting least recently used ones beyond the count and byte bounds."""
        if len(state) > self.prefix_cache_bytes or self.prefix_cache_entries < 1:
            return
        self._prefix_states[key] = state
        self._prefix_bytes += len(state)
        while len(self._prefix_states) > self.prefix_cache_entries or self._prefix_bytes > self.prefix_cache_bytes:
            _, old = self._prefix_states.popitem(last=False)
            self._prefix_bytes -= len(old)

    def _decode(self, tokens: list[int]) -> None:
        """Evaluate tokens after the context's current position, in n_batch-sized llama_decode calls."""
        for start in range(0, len(tokens), self.n_batch):
            chunk = tokens[start:start + self.n_batch]
            array = (llama_cpp.llama_token * len(chunk))(*chunk)
            batch = llama_cpp.llama_batch_get_one(array, len(chunk))
            status = llama_cpp.llama_decode(self._ctx, batch)
            if status != 0:
                raise DecodeFailed(f"llama_decode failed with status {status} on a batch of {len(chunk)} tokens")

    def _last_logits(self) -> np.ndarray:
        """A read-only view of the logits of the last decoded token (valid until the next decode)."""
        pointer = llama_cpp.llama_get_logits_ith(self._ctx, -1)
        if not pointer:
            raise DecodeFailed("llama.cpp returned no logits for the last token")
        logits = np.frombuffer(self._logits_type.from_address(ctypes.addressof(pointer.contents)), dtype=np.float32)
        logits.flags.writeable = False
        return logits

    def _generate(self, grammar: _Grammar | None, max_tokens: int) -> tuple[list[int], str, str]:
        """Greedy tokens from the current logits on, until end-of-generation or max_tokens; and the logits' hash."""
        sampler = grammar.fresh() if grammar else None
        generated: list[int] = []
        digest = hashlib.sha256()
        try:
            while True:
                logits = self._last_logits()
                digest.update(logits.data)
                token = int(np.argmax(logits))  # the first maximum, as llama.cpp's greedy sampler picks
                if sampler is not None:
                    token = self._grammar_choice(sampler, logits, token)
                if self.is_eog(token):
                    return generated, STOP_EOG, digest.hexdigest()
                if sampler is not None:
                    llama_cpp.llama_sampler_accept(sampler, token)
                generated.append(token)
                if len(generated) >= max_tokens:
                    return generated, STOP_MAX_TOKENS, digest.hexdigest()
                self._decode([token])
        finally:
            if sampler is not None:
                llama_cpp.llama_sampler_free(sampler)

    def _grammar_choice(self, sampler: Any, logits: np.ndarray, token: int) -> int:
        """The argmax among tokens the grammar allows next.

        The unconstrained argmax is tried first: if the grammar allows it, it is also the argmax of the
        masked logits (every lower-id token has a strictly smaller logit), so masking the whole
        vocabulary, which is slow on large vocabularies, is only needed when it is refused.
        """
        self._one[0].id = token
        self._one[0].logit = logits[token]
        self._one[0].p = 0.0
        one = llama_cpp.llama_token_data_array(self._one, 1, -1, False)
        llama_cpp.llama_sampler_apply(sampler, ctypes.byref(one))
        if self._one[0].logit != NEG_INF:
            return token
        self._candidates_np["logit"] = logits
        self._candidates_np["p"] = 0.0
        full = llama_cpp.llama_token_data_array(self._candidates, self.n_vocab, -1, False)
        llama_cpp.llama_sampler_apply(sampler, ctypes.byref(full))
        masked = self._candidates_np["logit"]
        best = int(np.argmax(masked))
        if masked[best] == NEG_INF:
            raise BadGrammar("the grammar allows no next token here (not even end of generation): fix the grammar")
        return int(self._candidates_np["id"][best])

    # --- helpers

    def _grammar(self, text: str) -> _Grammar:
        """The compiled grammar for `text`, from the cache or compiled now."""
        grammar = self._grammars.get(text)
        if grammar is not None:
            self._grammars.move_to_end(text)
            return grammar
        grammar = _Grammar(self._vocab, text)
        self._grammars[text] = grammar
        while len(self._grammars) > GRAMMAR_CACHE_MAX_ENTRIES:
            _, old = self._grammars.popitem(last=False)
            old.close()
        return grammar

    def _tokenize_text(self, text: str, *, special: bool) -> list[int]:
        """Token ids of one text (no BOS/EOS added here)."""
        data = text.encode("utf-8")
        if not data:
            return []
        capacity = len(data) + 8
        for _ in range(2):
            buf = (llama_cpp.llama_token * capacity)()
            n = llama_cpp.llama_tokenize(self._vocab, data, len(data), buf, capacity, False, special)
            if n >= 0:
                return list(buf[:n])
            capacity = -n
        raise DecodeFailed(f"llama.cpp could not tokenize a text of {len(data)} bytes")

    def _token_bytes(self, token: int) -> bytes:
        """The bytes a token stands for."""
        n = llama_cpp.llama_token_to_piece(self._vocab, token, self._piece, TOKEN_PIECE_BYTES, 0, DETOKENIZE_SPECIAL)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, -n, 0, DETOKENIZE_SPECIAL)
            return buf.raw[:n]
        return self._piece.raw[:n]

    def _check_open(self) -> None:
        if not self._ctx:
            raise HostUnavailable("this engine was closed while in use; the message is retried with a new one")


class EnginePool:
    """A worker's loaded engines by model sha256: each loaded once, the least recently used freed beyond a bound."""

    def __init__(self, *, max_engines: int = POOL_MAX_ENGINES, n_ctx: int = 4096, n_threads: int = 1,
                 n_batch: int = 2048, state_dir: Path | None = None) -> None:
        self.max_engines = max_engines
        self.state_dir = state_dir
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.n_batch = n_batch
        self._engines: OrderedDict[str, LlamaEngine] = OrderedDict()
        self._lock = threading.Lock()

    def engine_for(self, path: Path, sha256: str) -> LlamaEngine:
        """The engine for the model with this sha256, loading it from `path` (hash checked) if needed."""
        key = sha256.strip().lower()
        with self._lock:
            engine = self._engines.get(key)
            if engine is not None:
                self._engines.move_to_end(key)
                return engine
            engine = LlamaEngine(Path(path), expected_sha256=key, n_ctx=self.n_ctx, n_threads=self.n_threads,
                                 n_batch=self.n_batch, state_dir=self.state_dir)
            self._engines[key] = engine
            while len(self._engines) > self.max_engines:
                _, old = self._engines.popitem(last=False)
                old.close()
            return engine

    def loaded(self) -> list[str]:
        """The sha256 of each loaded model, least recently used first."""
        return list(self._engines)

    def close(self) -> None:
        """Free every engine."""
        with self._lock:
            for engine in self._engines.values():
                engine.close()
            self._engines.clear()
