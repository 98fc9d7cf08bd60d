"""Put what gpu_bench.py needs into one folder (default .whl/, carried to the GPU
machine): the real config.json and a voice from the model cache, the text set and its
misaki phonemes, and wheels for the pure-Python packages the GPU image lacks."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(HERE)]

from texts import LONG, PARAGRAPH, TEXT_SET  # noqa: E402


def main(dest: Path = REPO / ".whl") -> None:
    from kokoro_server.text.chunking import split_sentences
    from kokoro_server.text.g2p import Phonemizer

    cache = REPO / ".cache" / "models" / "kokoro"
    assets = dest / "assets"
    (assets / "voices").mkdir(parents=True, exist_ok=True)
    shutil.copy(cache / "config.json", assets)
    shutil.copy(cache / "voices" / "af_heart.pt", assets / "voices")
    g2p = Phonemizer()
    texts = {**TEXT_SET, "long": LONG}
    pieces = {s for t in texts.values() for s in split_sentences(t)} | set(texts.values())
    (assets / "phonemes.json").write_text(json.dumps({p: g2p(p, "a") for p in pieces},
                                                     ensure_ascii=False, indent=1))
    (assets / "texts.json").write_text(json.dumps(texts, indent=1))
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                    "--only-binary=:all:", "-d", str(dest), "kokoro==0.9.4", "loguru",
                    "prometheus_client"],
                   check=True)
    _ = PARAGRAPH


if __name__ == "__main__":
    main()
