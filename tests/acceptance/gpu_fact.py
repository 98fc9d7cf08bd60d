"""What the acceptance checks share about the GPU facts. The GPU decisions themselves the
checks import from the kit's collection, like the roles' filters do:
`from ansible_collections.kokoro.deploy.plugins.module_utils import gpu_decisions`
(plugins/module_utils/gpu_decisions.py; the root pyproject.toml puts ansible/collections
on pytest's path), so that they judge hosts by the same rules the roles used."""

# Where gpu_facts records its decisions on each host.
GPU_FACT = "/etc/ansible/facts.d/kokoro_gpu.fact"
