"""The kit's one copy of its GPU decisions (roles/gpu_facts/filter_plugins/kokoro_gpu.py),
loaded by file path so that the checks judge hosts by the same rules the roles used."""

import importlib.util
from pathlib import Path

_PLUGIN = Path(__file__).resolve().parents[2] / "roles/gpu_facts/filter_plugins/kokoro_gpu.py"
_spec = importlib.util.spec_from_file_location("kokoro_gpu", _PLUGIN)
kokoro_gpu = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(kokoro_gpu)

# Where gpu_facts records its decisions on each host.
GPU_FACT = "/etc/ansible/facts.d/kokoro_gpu.fact"
