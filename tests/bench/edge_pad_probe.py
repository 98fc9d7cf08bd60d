"""Would capping the pad tokens' durations make a pass cheaper without changing speech?

    KOKORO_DEPLOY_MIRROR=http://127.0.0.1:18080/ .venv/bin/python tests/bench/edge_pad_probe.py

Every Kokoro pass opens with 0.3-0.4 s of silence (the start pad token's predicted
frames) that the decoder renders at full cost and the stitcher then trims at joins.
This probe inserts Min(durations, cap) after the duration predictor of the real int8
export (the rest of the graph untouched), caps the start pad at a few frame counts and
prints, per text: the pass time (best of 3), the audio length, and the first word's
energy against the uncapped pass with the audio aligned on the tokens (1.00 = the same
loudness). Run on 2026-12-08 (docs/benchmarks/kokoro-cpu-first-audio.md) it showed the
model fades its output in over the first ~15 frames of a pass, whatever the tokens:
a shorter pad starts the first word inside that fade, quieter or gone. So the pads stay.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[1] / "images" / "kokoro" / "tests")]

from bench import onnx_models  # noqa: E402

TEXTS = ["The old lighthouse", "Hello there.", "Quick, run!", "Apples are red.",
         "The old lighthouse stood at the edge of the cliff,"]
CAPS = [None, 14, 12, 10, 8, 4, 1]
CAP_INPUT = "probe_duration_cap"
FRAME = 600


def capped_model(model: bytes) -> tuple[bytes, str]:
    """The export with its durations passed through Min(durations, CAP_INPUT), and the
    name of the (capped) duration tensor, also made a graph output."""
    from kokoro_server.engines import onnx_graph as g

    buf = memoryview(model)
    _, (g0, g1), m0, m1 = next(f for f in g._fields(buf) if f[0] == 7)
    name, _ = g.duration_tensor(model)
    raw = name + "_uncapped"
    nodes = [f for f in g._fields(buf, g0, g1) if f[0] == 1]
    cast = next(f for f in nodes if any(
        n == 2 and g._str(buf, v) == name for n, v, _, _ in g._fields(buf, *f[1])))
    body = b"".join(g._ld(2, raw.encode()) if n == 2 and g._str(buf, v) == name
                    else bytes(buf[s:e]) for n, v, s, e in g._fields(buf, *cast[1]))
    cap = (g._ld(1, raw.encode()) + g._ld(1, CAP_INPUT.encode()) + g._ld(2, name.encode())
           + g._ld(4, b"Min"))

    def int64(n: str, dims: bytes = b"") -> bytes:
        tensor = g._enc_varint(8) + g._enc_varint(7) + dims  # elem_type INT64
        return g._ld(1, n.encode()) + g._ld(2, g._ld(1, tensor))

    dims = g._ld(2, g._ld(1, g._ld(2, b"tokens")))  # shape [tokens]
    graph = (bytes(buf[g0:cast[2]]) + g._ld(1, body) + g._ld(1, cap) +
             bytes(buf[cast[3]:g1]) + g._ld(11, int64(CAP_INPUT, dims)) +
             g._ld(12, int64(name)))
    return bytes(buf[:m0]) + g._ld(7, graph) + bytes(buf[m1:]), name


def frame_rms(audio: np.ndarray, start: int, count: int) -> float:
    part = audio[start * FRAME:(start + count) * FRAME]
    return float(np.sqrt(np.mean(part ** 2))) if part.size else 0.0


def main() -> None:
    import onnxruntime as ort
    from kokoro_server.pt_reader import load_voice_pack
    from kokoro_server.text.g2p import Phonemizer

    models = onnx_models("edge_pad_probe")
    vocab = json.loads((models / "kokoro/config.json").read_text())["vocab"]
    pack = load_voice_pack(models / "kokoro/voices/af_heart.pt")
    model, durations = capped_model((models / "kokoro/onnx/kokoro-v1.0.int8.onnx").read_bytes())
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 2, 1
    session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    g2p = Phonemizer()
    print("| text | start pad cap (frames) | pass | audio | first word's energy vs uncapped |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for text in TEXTS:
        ids = [vocab[c] for c in g2p(text, "a") if c in vocab]
        feed = {"tokens": np.array([[0, *ids, 0]], np.int64),
                "style": pack[len(ids) - 1].reshape(1, -1).astype(np.float32),
                "speed": np.array([1.0], np.float32)}
        reference = None
        for cap in CAPS:
            limit = np.full(len(ids) + 2, 1 << 20, np.int64)
            if cap is not None:
                limit[0] = cap
            times = []
            for _ in range(3):
                start = time.perf_counter()
                audio, dur = session.run(["audio", durations], {**feed, CAP_INPUT: limit})
                times.append(time.perf_counter() - start)
            audio, dur = audio.reshape(-1), dur.reshape(-1)
            # the first word: from the first token's frame to the first space's end
            word = int(np.cumsum(dur[1:])[ids.index(vocab[" "])] if vocab[" "] in ids
                       else dur[1:].sum())
            energy = frame_rms(audio, int(dur[0]), word)
            if reference is None:
                reference = energy
            print(f"| {text} | {'none (' + str(int(dur[0])) + ')' if cap is None else cap} "
                  f"| {min(times) * 1000:.0f} ms | {len(audio) / 24000:.2f} s "
                  f"| {energy / reference:.2f} |", flush=True)


if __name__ == "__main__":
    main()
