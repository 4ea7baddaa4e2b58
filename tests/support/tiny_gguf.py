"""A tiny llama-architecture GGUF with seeded random weights: loads in milliseconds, for engine tests and benchmarks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf import GGUFWriter, TokenType

ARCH = "llama"
N_LAYERS = 2
N_EMBD = 64
N_HEAD = 4
N_HEAD_KV = 2  # grouped-query attention, like the production models
N_FF = 128
CONTEXT_LENGTH = 4096
RMS_EPS = 1e-5
WEIGHT_SCALE = 0.5  # large enough that random logits differ clearly between tokens
OUTPUT_GAIN = 4.0  # sharpens the output distribution so greedy choices are not near-ties
FILE_NAME = "tiny-llama.gguf"

UNK, BOS, EOS = "<unk>", "<s>", "</s>"
CONTROL_TOKENS = ("<|im_start|>", "<|im_end|>", "<|endoftext|>")
SPACE = "\u2581"  # SentencePiece's visible space
WORDS = ("the", "grade", "is", "data", "user", "spam", "and", "of", "to", "in")
PUNCTUATION = tuple('{}":,.!?-') + tuple("0123456789")


def vocabulary() -> tuple[list[str], list[int], list[float]]:
    """Tokens, token types and SentencePiece scores: specials, control markup, 256 byte tokens, word pieces."""
    tokens: list[str] = [UNK, BOS, EOS]
    types: list[int] = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL]
    tokens += CONTROL_TOKENS
    types += [TokenType.CONTROL] * len(CONTROL_TOKENS)
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [TokenType.BYTE] * 256
    # Every prefix of a word piece is a piece too: SentencePiece only merges into pieces that exist.
    words = dict.fromkeys(SPACE + w[:i] for w in WORDS for i in range(1, len(w) + 1))
    pieces = [SPACE, *PUNCTUATION, *"abcdefghijklmnopqrstuvwxyz", *words]
    tokens += pieces
    types += [TokenType.NORMAL] * len(pieces)
    # Longer pieces score higher so the SentencePiece merge prefers whole words over letters.
    scores = [0.0] * (len(tokens) - len(pieces)) + [float(len(p)) - 10.0 for p in pieces]
    return tokens, types, scores


def write_tiny_gguf(path: Path, *, seed: int = 0) -> Path:
    """Write the tiny model to `path` (float32 weights drawn from `seed`) and return the path."""
    tokens, types, scores = vocabulary()
    n_vocab = len(tokens)
    rng = np.random.default_rng(seed)
    head_dim = N_EMBD // N_HEAD

    def weights(*shape: int, gain: float = 1.0) -> np.ndarray:
        return (rng.standard_normal(shape) * (gain * WEIGHT_SCALE / np.sqrt(shape[-1]))).astype(np.float32)

    def norm() -> np.ndarray:
        return np.ones(N_EMBD, dtype=np.float32)

    path = Path(path)
    writer = GGUFWriter(str(path), ARCH)
    writer.add_name("tiny-test-llama")
    writer.add_context_length(CONTEXT_LENGTH)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYERS)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD_KV)
    writer.add_rope_dimension_count(head_dim)
    writer.add_layer_norm_rms_eps(RMS_EPS)
    writer.add_file_type(0)  # all float32
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_scores(scores)
    writer.add_bos_token_id(tokens.index(BOS))
    writer.add_eos_token_id(tokens.index(EOS))
    writer.add_unk_token_id(tokens.index(UNK))
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)
    writer.add_add_space_prefix(False)

    # numpy shapes are ggml's dimensions reversed: (rows = outputs, columns = inputs).
    writer.add_tensor("token_embd.weight", weights(n_vocab, N_EMBD, gain=float(np.sqrt(N_EMBD))))
    for i in range(N_LAYERS):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", norm())
        writer.add_tensor(f"blk.{i}.attn_q.weight", weights(N_EMBD, N_EMBD))
        writer.add_tensor(f"blk.{i}.attn_k.weight", weights(N_HEAD_KV * head_dim, N_EMBD))
        writer.add_tensor(f"blk.{i}.attn_v.weight", weights(N_HEAD_KV * head_dim, N_EMBD))
        writer.add_tensor(f"blk.{i}.attn_output.weight", weights(N_EMBD, N_EMBD))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", norm())
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", weights(N_FF, N_EMBD))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", weights(N_FF, N_EMBD))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", weights(N_EMBD, N_FF))
    writer.add_tensor("output_norm.weight", norm())
    writer.add_tensor("output.weight", weights(n_vocab, N_EMBD, gain=OUTPUT_GAIN))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def tiny_gguf_path(tmp_dir: Path, *, seed: int = 0) -> Path:
    """The tiny model written into `tmp_dir` (reused if already there), for pytest fixtures."""
    path = Path(tmp_dir) / (FILE_NAME if seed == 0 else f"tiny-llama-{seed}.gguf")
    if not path.exists():
        write_tiny_gguf(path, seed=seed)
    return path
