"""The kokoro-onnx library (the engine a user would pick instead of our server), as a
worker for bench.py: run by the Python of its own virtual environment (kokoro-onnx needs
the original `phonemizer`, which would replace the server's phonemizer-fork in ours).

    <venv>/bin/python library_baseline.py MODEL.onnx VOICES.npz VOICE

Reads one JSON request per line on stdin, {"text": ..., "first_only": bool}, and answers
each with one line, {"wall": seconds, "audio_seconds": seconds}: the wall time of
`Kokoro.create` (the whole text), or of `create_stream` up to its first chunk of audio
with first_only. Prints {"ready": true, "version": ...} once the model is loaded.
"""
from __future__ import annotations

import asyncio
import json
import sys
import time
from importlib import metadata

from kokoro_onnx import Kokoro


async def first_chunk(kokoro: Kokoro, text: str, voice: str) -> float:
    async for samples, rate in kokoro.create_stream(text, voice=voice, lang="en-us"):
        return len(samples) / rate
    return 0.0


def main() -> None:
    model, voices, voice = sys.argv[1:4]
    kokoro = Kokoro(model, voices)
    print(json.dumps({"ready": True, "version": metadata.version("kokoro-onnx")}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        start = time.perf_counter()
        if request.get("first_only"):
            seconds = asyncio.run(first_chunk(kokoro, request["text"], voice))
        else:
            samples, rate = kokoro.create(request["text"], voice=voice, lang="en-us")
            seconds = len(samples) / rate
        wall = time.perf_counter() - start
        print(json.dumps({"wall": wall, "audio_seconds": seconds}), flush=True)


if __name__ == "__main__":
    main()
