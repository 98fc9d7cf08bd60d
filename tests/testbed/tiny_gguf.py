"""Write a tiny but valid llama-architecture GGUF model for the LLM service's tests.

Real LLM weights are out of reach on the test machines (no Hugging Face), and a real
model would make every test slow. This file is a complete llama model that llama.cpp's
`llama-server` loads and serves like any other: 2 layers, n_embd 64, grouped-query
attention, random F32 weights from a fixed seed, a SentencePiece-style ("llama") vocab
with byte fallback (any UTF-8 text tokenizes), ChatML special tokens and a ChatML chat
template, so /v1/chat/completions works. What it says is gibberish.

The output head favours printable ASCII: the rows of the byte tokens >= 0x80 and of the
special tokens are zero, so generated text is readable and never stops early at an
end-of-generation token (a request for N tokens gets N). Same bytes on every run.

    python tests/testbed/tiny_gguf.py OUT.gguf     # prints size and sha256
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path

import numpy as np

SEED = 20261127
N_EMBD = 64
N_HEAD = 4
N_HEAD_KV = 2
N_FF = 128
N_LAYER = 2
N_CTX_TRAIN = 2048
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# A few whole words so that the SentencePiece merges have something to do.
WORDS = ["the", "and", "hello", "world", "tiny", "model", "test", "llama", "kokoro"]


def vocab() -> tuple[list[str], list[float], list[int], dict[str, int]]:
    """Tokens, scores, token types (gguf.TokenType values) and the special token ids."""
    from gguf import TokenType

    tokens: list[str] = ["<unk>", "<s>", "</s>"]
    types: list[int] = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [TokenType.BYTE] * 256
    pieces = ["\u2581"] + [chr(c) for c in range(0x21, 0x7F)]
    pieces += ["\u2581" + w for w in WORDS]
    tokens += pieces
    types += [TokenType.NORMAL] * len(pieces)
    tokens += ["<|im_start|>", "<|im_end|>"]
    types += [TokenType.CONTROL, TokenType.CONTROL]
    # SentencePiece merges prefer the higher score: longer pieces win.
    scores = [0.0 if t != TokenType.NORMAL else float(len(tok)) - 100.0
              for tok, t in zip(tokens, types, strict=True)]
    special = {"unk": 0, "bos": 1, "eos": tokens.index("<|im_end|>"),
               "im_start": tokens.index("<|im_start|>")}
    return tokens, scores, [int(t) for t in types], special


def tensors(n_vocab: int, quiet_rows: list[int]) -> dict[str, np.ndarray]:
    """Random weights, numpy shapes (rows, cols) = ggml's (ne1, ne0)."""
    rng = np.random.default_rng(SEED)
    head_dim = N_EMBD // N_HEAD
    n_embd_kv = head_dim * N_HEAD_KV

    def w(rows: int, cols: int, scale: float) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) * scale).astype(np.float32)

    out: dict[str, np.ndarray] = {"token_embd.weight": w(n_vocab, N_EMBD, 1.0)}
    for i in range(N_LAYER):
        p = f"blk.{i}."
        s = 1.0 / np.sqrt(N_EMBD)
        out[p + "attn_norm.weight"] = np.ones(N_EMBD, dtype=np.float32)
        out[p + "attn_q.weight"] = w(N_EMBD, N_EMBD, s)
        out[p + "attn_k.weight"] = w(n_embd_kv, N_EMBD, s)
        out[p + "attn_v.weight"] = w(n_embd_kv, N_EMBD, s)
        out[p + "attn_output.weight"] = w(N_EMBD, N_EMBD, s)
        out[p + "ffn_norm.weight"] = np.ones(N_EMBD, dtype=np.float32)
        out[p + "ffn_gate.weight"] = w(N_FF, N_EMBD, s)
        out[p + "ffn_up.weight"] = w(N_FF, N_EMBD, s)
        out[p + "ffn_down.weight"] = w(N_EMBD, N_FF, 1.0 / np.sqrt(N_FF))
    out["output_norm.weight"] = np.ones(N_EMBD, dtype=np.float32)
    head = w(n_vocab, N_EMBD, 1.0)
    head[quiet_rows] = 0.0  # logit 0 against ~N(0, 64) for the others: practically never
    out["output.weight"] = head
    return out


def write(path: Path) -> tuple[int, str]:
    """Write the model to `path` (atomically); return (size, sha256)."""
    import gguf

    tokens, scores, types, special = vocab()
    quiet = [i for i, (tok, t) in enumerate(zip(tokens, types, strict=True))
             if t != gguf.TokenType.NORMAL and not (t == gguf.TokenType.BYTE and
                                                   int(tok[3:5], 16) < 0x80)]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    writer = gguf.GGUFWriter(tmp, "llama")
    writer.add_name("kokoro-deploy tiny test llama")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_vocab_size(len(tokens))
    writer.add_context_length(N_CTX_TRAIN)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYER)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD_KV)
    writer.add_rope_dimension_count(N_EMBD // N_HEAD)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(special["unk"])
    writer.add_bos_token_id(special["bos"])
    writer.add_eos_token_id(special["eos"])
    writer.add_eot_token_id(special["eos"])
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)
    writer.add_add_space_prefix(True)
    writer.add_chat_template(CHATML)
    for name, data in tensors(len(tokens), quiet).items():
        writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, path)
    data = path.read_bytes()
    return len(data), hashlib.sha256(data).hexdigest()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="where to write the .gguf file")
    args = ap.parse_args(argv)
    size, sha = write(args.out)
    print(f"{args.out}: {size} bytes, sha256 {sha}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
