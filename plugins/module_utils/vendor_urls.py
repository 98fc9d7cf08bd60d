"""Render the NVIDIA vendor repository URLs for a host, and decide the driver source.

The URL templates live in the roles' defaults (the vendor's public host, or a mirror's
with the same path layout); this module fills the host-dependent segments, so that a
mirror only ever differs from the vendor in the scheme and host part:

  {distro}    NVIDIA's CUDA repository directory for the distribution: debian12,
              debian13, ubuntu2204, ubuntu2404 (driver installation guide, "Network
              Repository Installation": .../compute/cuda/repos/$distro/$arch/).
  {arch}      that guide's $arch: x86_64, or sbsa for 64-bit Arm servers.
  {deb_arch}  Debian's architecture name (amd64, arm64), which the container toolkit's
              repository uses (install guide: .../libnvidia-container/stable/deb/$(ARCH)).

An unknown placeholder, or a host the vendors publish nothing for, fails with the
supported values named: a half-substituted URL would only surface as an apt 404.

Role `gpu_facts` exposes these as Ansible filters (`kokoro_vendor_*`,
`kokoro_driver_source`) in roles/gpu_facts/filter_plugins/kokoro_vendor_urls.py.
"""

from __future__ import annotations

import re

from ansible.errors import AnsibleFilterError

# (distribution, version as Ansible reports it) -> NVIDIA's $distro. Debian is keyed by
# its major version, Ubuntu by its full release (22.04, 24.04).
NVIDIA_DISTROS = {
    ("Debian", "12"): "debian12",
    ("Debian", "13"): "debian13",
    ("Ubuntu", "22.04"): "ubuntu2204",
    ("Ubuntu", "24.04"): "ubuntu2404",
}
CUDA_REPO_ARCH = {"x86_64": "x86_64", "aarch64": "sbsa"}
DEB_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}
PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


def nvidia_distro(distribution: str, major_version: str, version: str) -> str:
    key = (distribution, str(major_version) if distribution == "Debian" else str(version))
    try:
        return NVIDIA_DISTROS[key]
    except KeyError:
        known = ", ".join(f"{d} {v}" for d, v in NVIDIA_DISTROS)
        raise AnsibleFilterError(
            f"NVIDIA publishes no CUDA repository this kit knows for {distribution} {version}; "
            f"supported: {known}"
        ) from None


def host_segments(distribution: str, major_version: str, version: str, machine: str) -> dict:
    """Every placeholder value for one host (Ansible's distribution facts and architecture)."""
    if machine not in CUDA_REPO_ARCH:
        raise AnsibleFilterError(
            f"NVIDIA's repositories have no packages for architecture {machine!r}; "
            f"supported: {', '.join(CUDA_REPO_ARCH)}"
        )
    return {
        "distro": nvidia_distro(distribution, major_version, version),
        "arch": CUDA_REPO_ARCH[machine],
        "deb_arch": DEB_ARCH[machine],
    }


def vendor_url(template: str, segments: dict) -> str:
    """Fill a URL template's placeholders; any placeholder not in segments is an error."""
    unknown = sorted(set(PLACEHOLDER.findall(template)) - set(segments))
    if unknown:
        raise AnsibleFilterError(
            f"URL {template!r} has unknown placeholder(s) {', '.join(unknown)}; "
            f"the ones filled in are {', '.join('{' + k + '}' for k in sorted(segments))}"
        )
    return PLACEHOLDER.sub(lambda m: str(segments[m.group(1)]), template)


def driver_source(source: str, distribution: str, distro_branch: int | None,
                  blackwell: bool) -> dict:
    """Where the driver comes from when the inventory says "auto".

    Ubuntu's archive carries every current branch in both module flavours
    (nvidia-driver-580-server-open), signed and kept for its kernels: use it.
    Debian's non-free carries one old branch (535 on 12, 550 on 13) that cannot drive
    Blackwell (570+) and predates the CUDA 12.8 the kit's GPU images are built with,
    so NVIDIA's own repository is the default there.
    """
    if source != "auto":
        return {"source": source, "reason": f"nvidia_driver_source: {source} (inventory)"}
    if distribution == "Ubuntu":
        return {"source": "distro",
                "reason": "Ubuntu's archive packages every current branch and the open modules"}
    why = (f"Debian's own branch {distro_branch} cannot drive Blackwell (needs 570+)"
           if blackwell else
           f"Debian's own branch {distro_branch} is older than the CUDA 12.8 the GPU images use")
    return {"source": "nvidia", "reason": why}

