"""Kokoro-82M text-to-speech server: OpenAI-compatible HTTP API over an onnx or torch engine."""

__version__ = "0.1.0"
