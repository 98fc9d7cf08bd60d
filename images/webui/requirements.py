"""Print the requirements of an Open WebUI wheel for our slim image, one per line.

Open WebUI's wheel pins every dependency exactly (Requires-Dist: name==version), among
them the ones its local models need: sentence-transformers and accelerate pull PyTorch
(several GB, a CUDA build by default). Its own slim mode (USE_SLIM_DOCKER=true) imports
none of them: chat, the OpenAI-compatible connections and an external TTS work, and the
local embedding, reranking, speech-to-text, text-to-speech, OCR and vector database
answer 503 instead. This script keeps the wheel's own pins minus those, so nothing
else is re-pinned here, and adds what the wheel imports without declaring it.

    python requirements.py open_webui-X-py3-none-any.whl > requirements.txt
"""
from __future__ import annotations

import re
import sys
import zipfile

# What only Open WebUI's local models use (none is imported with USE_SLIM_DOCKER=true).
DROPPED = {
    "sentence-transformers": "local embedding and reranking models (PyTorch)",
    "accelerate": "local models on PyTorch",
    "transformers": "local models (SpeechT5 TTS, ColBERT reranking)",
    "einops": "local ColBERT reranking",
    "faster-whisper": "local speech-to-text (Whisper via CTranslate2)",
    "chromadb": "the local vector database (slim uses an external pgvector, on first use)",
    "onnxruntime": "chromadb's and rapidocr's local models",
    "rapidocr": "local OCR of uploaded documents",
    "opencv-python-headless": "local OCR of uploaded documents",
}
# Imported by Open WebUI's own command line (`open-webui serve`) but declared by none of
# its requirements: it came with transformers' huggingface-hub.
ADDED = ["typer==0.29.2"]


def requirements(wheel: str) -> list[str]:
    with zipfile.ZipFile(wheel) as whl:
        meta = next(n for n in whl.namelist() if n.endswith(".dist-info/METADATA"))
        lines = whl.read(meta).decode().splitlines()
    out = []
    for line in lines:
        if not line.startswith("Requires-Dist:"):
            continue
        req = line.split(":", 1)[1].strip()
        if "extra ==" in req:
            continue
        name = re.split(r"[\[=<>!~; ]", req, maxsplit=1)[0].lower().replace("_", "-")
        if name not in DROPPED:
            out.append(req)
    return out + ADDED


if __name__ == "__main__":
    print("\n".join(requirements(sys.argv[1])))
