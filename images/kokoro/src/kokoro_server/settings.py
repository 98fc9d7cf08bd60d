"""One typed settings object, read from the environment (prefix KOKORO_)."""
from __future__ import annotations

import hashlib
import ipaddress
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

from .cpu_budget import cpu_workers, usable_cores

SAMPLE_RATE = 24_000
PRECISIONS = ("fp32", "bf16", "fp16")  # KOKORO_PRECISION; engines/torch_precision.py
MIN_AUDIO_CACHE_BYTES = 65_536  # KOKORO_AUDIO_CACHE_MAX_BYTES: less holds no sentence
# a key's name, in `name:key` entries of KOKORO_API_KEYS (a metric label, never secret)
KEY_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class SettingsError(ValueError):
    """A setting has a value the server cannot run with."""


def _bool(raw: str) -> bool:
    low = raw.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off", ""):
        return False
    raise SettingsError(f"expected a boolean, got {raw!r}")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Settings:
    """Every knob the server has. Each field maps to KOKORO_<FIELD_NAME_UPPER>."""

    engine: str = "onnx"  # onnx | torch
    device: str = "auto"  # auto | cuda | cpu
    model_dir: Path = Path("/models")  # the model cache root (manifest paths are relative)
    manifest: Path = Path("/app/manifest.yml")
    onnx_model: str = "kokoro/onnx/kokoro-v1.0.int8.onnx"  # manifest path of the onnx file
    torch_model: str = "kokoro/kokoro-v1_0.pth"  # manifest path of the torch checkpoint
    config: str = "kokoro/config.json"
    voices_dir: str = "kokoro/voices"
    verify_digests: bool = True
    host: str = "127.0.0.1"
    port: int = 8880
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    auth_disabled: bool = False  # allow a non-loopback bind without API keys
    default_voice: str = "af_heart"
    max_input_chars: int = 20_000
    max_queue: int = 32  # requests admitted beyond those being served -> 503 after
    # seconds a client may stall a speech request (send none of its body, or read none
    # of its audio) before the request is dropped and its place given back
    send_timeout: float = 30.0
    # seconds without progress (requests admitted, nothing spoken or sent; or one engine
    # pass running) after which /health answers 503 "stalled"
    stall_timeout: float = 120.0
    # seconds one request's text may take to read (clean, normalise, blend) -> 422 after
    text_budget: float = 10.0
    # engine calls in flight at once (threads; CUDA streams on GPU); 0 = from the device
    # and the cores (cpu_budget.py: one per 4 cores on the CPU, one on a GPU)
    workers: int = 0
    batch_size: int = 0  # inputs per forward pass; 0 = 16 for torch on CUDA, else 1
    batch_tokens: int = 512  # padded tokens per pass (inputs x longest): bounds its VRAM
    precision: str = "fp32"  # fp32 | bf16 | fp16 (torch engine: autocast, see torch_precision)
    onnx_threads: int = 0  # in all, split between workers; 0 = the cores this process may use
    warmup: bool = True
    english_g2p: str = "auto"  # auto | full (needs en_core_web_sm) | lite
    normalize: bool = True  # English text normalisation (numbers, money, ...) by default
    log_level: str = "info"
    # per API key (quota.py); 0 = unlimited
    quota_requests_per_minute: int = 0
    quota_audio_seconds_per_day: int = 0  # seconds of audio produced per UTC day
    quota_overrides: str = ""  # name:rpm:seconds_per_day,... (per key, over the two above)
    # free the model after this long without speech requests; the next one reloads it
    # (residency.py). 0 = never
    idle_unload_seconds: float = 0.0
    # Home Assistant's Wyoming protocol (wyoming_server.py), beside the HTTP API: the TCP
    # port (0 = off; 10200 is the Wyoming convention for TTS) and its bind address (empty
    # = KOKORO_HOST). Wyoming has no authentication, so a bind that is not loopback needs
    # KOKORO_WYOMING_UNAUTHENTICATED=true: who reaches the port is then decided outside
    # (a firewall, or which ports a container publishes)
    wyoming_port: int = 0
    wyoming_host: str = ""
    wyoming_unauthenticated: bool = False
    # Wyoming connections served at once (one more gets an error event and is closed),
    # and seconds one may wait between its events before it is closed (0 = no limit)
    wyoming_max_connections: int = 64
    wyoming_idle_seconds: float = 120.0
    # whole speech responses kept on disk (audio_cache.py): the folder (empty = off) and
    # the most bytes its entries may take, least recently used out first
    audio_cache_dir: str = ""
    audio_cache_max_bytes: int = 1 << 30

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        kwargs: dict[str, object] = {}
        for f in fields(cls):
            key = "KOKORO_" + f.name.upper()
            if key not in env:
                continue
            raw = env[key]
            try:
                if f.name == "api_keys":
                    kwargs[f.name] = tuple(k.strip() for k in raw.split(",") if k.strip())
                elif f.type in ("bool",):
                    kwargs[f.name] = _bool(raw)
                elif f.type == "int":
                    kwargs[f.name] = int(raw)
                elif f.type == "float":
                    kwargs[f.name] = float(raw)
                elif f.type == "Path":
                    kwargs[f.name] = Path(raw)
                else:
                    kwargs[f.name] = raw.strip()
            except ValueError as exc:
                raise SettingsError(f"{key}: {exc}") from exc
        keys_file = env.get("KOKORO_API_KEYS_FILE")
        if keys_file:
            text = Path(keys_file).read_text()
            extra = tuple(k.strip() for k in text.replace(",", "\n").splitlines() if k.strip())
            kwargs["api_keys"] = tuple(kwargs.get("api_keys", ())) + extra
        settings = cls(**kwargs)
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.engine not in ("onnx", "torch"):
            raise SettingsError(f"KOKORO_ENGINE must be onnx or torch, got {self.engine!r}")
        if self.device not in ("auto", "cuda", "cpu"):
            raise SettingsError(f"KOKORO_DEVICE must be auto, cuda or cpu, got {self.device!r}")
        if self.precision not in PRECISIONS:
            raise SettingsError(
                f"KOKORO_PRECISION must be fp32, bf16 or fp16, got {self.precision!r}")
        if self.precision != "fp32" and self.engine != "torch":
            raise SettingsError(
                f"KOKORO_PRECISION={self.precision} applies to the torch engine only; the onnx "
                "engine runs its model file as it is (unset KOKORO_PRECISION, or use "
                "KOKORO_ENGINE=torch)")
        if self.max_input_chars < 1:
            raise SettingsError("KOKORO_MAX_INPUT_CHARS must be >= 1")
        if self.workers < 0:
            raise SettingsError("KOKORO_WORKERS must be >= 0 (0 picks by device and cores)")
        if self.onnx_threads < 0:
            raise SettingsError("KOKORO_ONNX_THREADS must be >= 0 (0: the cores this process "
                                "may use)")
        if self.english_g2p not in ("auto", "full", "lite"):
            raise SettingsError("KOKORO_ENGLISH_G2P must be auto, full or lite")
        if self.batch_tokens < 0:
            raise SettingsError("KOKORO_BATCH_TOKENS must be >= 0 (0: no bound but the size)")
        if self.batch_size < 0:
            raise SettingsError("KOKORO_BATCH_SIZE must be >= 0 (0 picks by engine and device)")
        if self.max_queue < 0:
            raise SettingsError("KOKORO_MAX_QUEUE must be >= 0")
        if not self.send_timeout > 0:
            raise SettingsError("KOKORO_SEND_TIMEOUT must be > 0 (seconds a client may leave "
                                "audio unread)")
        if not self.text_budget > 0:
            raise SettingsError("KOKORO_TEXT_BUDGET must be > 0 (seconds one request's text "
                                "may take to read)")
        if not self.stall_timeout > self.send_timeout:
            # else a client that merely stops reading would mark the server stalled
            # before its own deadline dropped it
            raise SettingsError(
                f"KOKORO_STALL_TIMEOUT ({self.stall_timeout:g}) must be greater than "
                f"KOKORO_SEND_TIMEOUT ({self.send_timeout:g})")
        self.named_keys()  # raises on a malformed or duplicate name
        self.quota_limits()
        if self.requires_auth and not self.api_keys:
            raise SettingsError(
                f"binding to {self.host} (not loopback) needs API keys: set KOKORO_API_KEYS "
                "(or KOKORO_API_KEYS_FILE), or set KOKORO_AUTH_DISABLED=true to serve "
                "without authentication on purpose")
        self._validate_wyoming()
        self._validate_audio_cache()
        if not self.idle_unload_seconds >= 0:
            raise SettingsError(
                "KOKORO_IDLE_UNLOAD_SECONDS must be >= 0 (seconds without speech requests "
                f"before the model is freed; 0: never), got {self.idle_unload_seconds:g}")

    def _validate_wyoming(self) -> None:
        if self.wyoming_max_connections < 1:
            raise SettingsError(
                "KOKORO_WYOMING_MAX_CONNECTIONS must be >= 1 (Wyoming clients connected at "
                f"once), got {self.wyoming_max_connections}")
        if not self.wyoming_idle_seconds >= 0:
            raise SettingsError(
                "KOKORO_WYOMING_IDLE_SECONDS must be >= 0 (seconds a Wyoming connection may "
                f"send nothing before it is closed; 0: no limit), got "
                f"{self.wyoming_idle_seconds:g}")
        if not 0 <= self.wyoming_port <= 65535:
            raise SettingsError(f"KOKORO_WYOMING_PORT must be a TCP port (1-65535), or 0 "
                                f"to leave the Wyoming server off; got {self.wyoming_port}")
        if not self.wyoming_port:
            return
        if self.wyoming_port == self.port:
            raise SettingsError(
                f"KOKORO_WYOMING_PORT ({self.wyoming_port}) is also KOKORO_PORT, the HTTP "
                "API's; give Wyoming its own port (10200 is its convention for TTS)")
        if not is_loopback(self.wyoming_bind) and not self.wyoming_unauthenticated:
            raise SettingsError(
                f"the Wyoming server would listen on {self.wyoming_bind}:{self.wyoming_port} "
                "(not loopback), and the Wyoming protocol has no authentication: anyone who "
                "reaches that port could synthesize, past KOKORO_API_KEYS and the quotas. "
                "Set KOKORO_WYOMING_HOST=127.0.0.1 to keep it on this machine, or set "
                "KOKORO_WYOMING_UNAUTHENTICATED=true to serve it unauthenticated on purpose "
                "(a firewall, or the ports a container publishes, deciding who reaches it)")

    def _validate_audio_cache(self) -> None:
        if not self.audio_cache_dir:
            return
        if not Path(self.audio_cache_dir).is_absolute():
            raise SettingsError(
                f"KOKORO_AUDIO_CACHE_DIR must be an absolute path (a writable folder, e.g. "
                f"/cache/audio), got {self.audio_cache_dir!r}; leave it empty for no cache")
        if self.audio_cache_max_bytes < MIN_AUDIO_CACHE_BYTES:
            raise SettingsError(
                f"KOKORO_AUDIO_CACHE_MAX_BYTES must be at least {MIN_AUDIO_CACHE_BYTES} "
                f"(bytes the cached audio may take on disk, e.g. 1073741824 for 1 GiB), got "
                f"{self.audio_cache_max_bytes}; or unset KOKORO_AUDIO_CACHE_DIR for no cache")

    def named_keys(self) -> tuple[tuple[str, str], ...]:
        """(name, key) for each KOKORO_API_KEYS entry: `name:key`, or a plain key, whose
        name is `key-` and the first 6 hex digits of its sha256 (a label, not the key)."""
        named, seen = [], set()
        for entry in self.api_keys:
            name, sep, key = entry.partition(":")
            if sep and KEY_NAME.fullmatch(name):
                key = key.strip()
                if not key:
                    raise SettingsError(
                        f"KOKORO_API_KEYS: the entry named {name!r} has no key after "
                        "'name:'; write name:key")
            else:
                key = entry
                name = "key-" + hashlib.sha256(key.encode()).hexdigest()[:6]
            if name in seen:
                raise SettingsError(
                    f"KOKORO_API_KEYS: two keys are named {name!r}; give each key its own "
                    "name (name:key), or drop the repeated key")
            seen.add(name)
            named.append((name, key))
        return tuple(named)

    def quota_limits(self) -> dict[str, tuple[int, int]]:
        """{key name: (requests per minute, audio seconds per day)}, 0 = unlimited: the
        two KOKORO_QUOTA_* settings, then KOKORO_QUOTA_OVERRIDES for the keys it names."""
        for var in ("quota_requests_per_minute", "quota_audio_seconds_per_day"):
            if getattr(self, var) < 0:
                raise SettingsError(f"KOKORO_{var.upper()} must be >= 0 (0: unlimited), "
                                    f"got {getattr(self, var)}")
        names = [name for name, _ in self.named_keys()]
        limits = {name: (self.quota_requests_per_minute, self.quota_audio_seconds_per_day)
                  for name in names}
        for item in (i.strip() for i in self.quota_overrides.split(",")):
            if not item:
                continue
            parts = item.split(":")
            if len(parts) != 3 or not all(p.strip().isdigit() for p in parts[1:]):
                raise SettingsError(
                    f"KOKORO_QUOTA_OVERRIDES: {item!r} is not name:requests_per_minute:"
                    "audio_seconds_per_day (whole numbers, 0 = unlimited), e.g. alice:60:3600")
            name = parts[0].strip()
            if name not in limits:
                raise SettingsError(
                    f"KOKORO_QUOTA_OVERRIDES names {name!r}, which is no key's name; name "
                    "the key in KOKORO_API_KEYS (name:key) or use its key-<sha256 prefix> "
                    f"name (known: {', '.join(names) or 'none, no keys are set'})")
            limits[name] = (int(parts[1]), int(parts[2]))
        if not self.api_keys and (self.quota_requests_per_minute
                                  or self.quota_audio_seconds_per_day):
            raise SettingsError(
                "KOKORO_QUOTA_REQUESTS_PER_MINUTE / KOKORO_QUOTA_AUDIO_SECONDS_PER_DAY are "
                "counted per API key, and no keys are set: set KOKORO_API_KEYS (or "
                "KOKORO_API_KEYS_FILE), or unset the quotas")
        return limits

    def engine_workers(self, device: str) -> int:
        """KOKORO_WORKERS, or when 0 one per CORES_PER_WORKER usable cores on the CPU and
        one on a GPU (cpu_budget.py)."""
        if self.workers:
            return self.workers
        return cpu_workers(usable_cores()) if device == "cpu" else 1

    @property
    def is_loopback(self) -> bool:
        return is_loopback(self.host)

    @property
    def wyoming_bind(self) -> str:
        """The address the Wyoming server listens on: KOKORO_WYOMING_HOST, else KOKORO_HOST."""
        return self.wyoming_host or self.host

    @property
    def requires_auth(self) -> bool:
        return not self.is_loopback and not self.auth_disabled

    def path(self, manifest_path: str) -> Path:
        return self.model_dir / manifest_path

    @property
    def model_file(self) -> str:
        return self.onnx_model if self.engine == "onnx" else self.torch_model
