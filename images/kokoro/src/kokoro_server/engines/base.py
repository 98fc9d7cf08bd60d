"""The engine interface: phonemes + voice pack + speed in, 24 kHz float32 audio out."""
from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from ..settings import SAMPLE_RATE

MAX_TOKENS = 510


class Engine(ABC):
    name: str = "base"
    device: str = "cpu"
    sample_rate: int = SAMPLE_RATE

    def __init__(self, config_path: Path):
        config = json.loads(Path(config_path).read_text())
        self.vocab: dict[str, int] = config["vocab"]

    def token_ids(self, phonemes: str) -> list[int]:
        """Kokoro's vocabulary maps single phoneme characters; others are dropped."""
        ids = [self.vocab[c] for c in phonemes if c in self.vocab]
        return ids[:MAX_TOKENS]

    @staticmethod
    def style_for(pack: np.ndarray, n_tokens: int) -> np.ndarray:
        """A voice pack holds one style vector per input length; pick this one's."""
        return pack[max(0, min(n_tokens, len(pack)) - 1)].reshape(1, -1).astype(np.float32)

    @abstractmethod
    def synthesize_ids(self, ids: list[int], style: np.ndarray, speed: float) -> np.ndarray:
        """Run the model on token ids (without the pad tokens) -> float32 mono audio."""

    def synthesize(self, phonemes: str, pack: np.ndarray, speed: float = 1.0) -> np.ndarray:
        ids = self.token_ids(phonemes)
        if not ids:
            return np.zeros(0, np.float32)
        return self.synthesize_ids(ids, self.style_for(pack, len(ids)), speed)

    def describe(self) -> dict:
        return {"engine": self.name, "device": self.device}
