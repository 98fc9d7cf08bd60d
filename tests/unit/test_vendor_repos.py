"""The NVIDIA repository URLs each role renders, for every supported distribution, against
the layouts NVIDIA documents, and the driver source "auto" picks.

Documented layouts (the expected strings below are written out from them, not computed):
  CUDA repository: NVIDIA Driver Installation Guide, "Network Repository Installation":
    https://developer.download.nvidia.com/compute/cuda/repos/$distro/$arch/ with
    $distro in debian12, debian13, ubuntu2204, ubuntu2404 and $arch x86_64 or sbsa;
    the signing key 3bf863cc.pub in that directory.
  Container toolkit: NVIDIA Container Toolkit install guide, "With apt":
    https://nvidia.github.io/libnvidia-container/gpgkey and the source
    https://nvidia.github.io/libnvidia-container/stable/deb/$(ARCH) /
The role templates come from the roles' defaults/main.yml, rendered as Ansible would
(nested Jinja references resolved), then filled by the filter the tasks use.
"""

from pathlib import Path
from urllib.parse import urlsplit

import jinja2
import pytest
import yaml
from ansible.errors import AnsibleFilterError
from ansible_collections.kokoro.deploy.plugins.module_utils import vendor_urls as vu

REPO = Path(__file__).resolve().parents[2]

# Ansible's facts for each supported host: distribution, major version, version.
HOSTS = {
    "debian12": ("Debian", "12", "12.8"),
    "debian13": ("Debian", "13", "13.1"),
    "ubuntu2204": ("Ubuntu", "22", "22.04"),
    "ubuntu2404": ("Ubuntu", "24", "24.04"),
}
CUDA = "https://developer.download.nvidia.com/compute/cuda/repos"
TOOLKIT = "https://nvidia.github.io/libnvidia-container"
MIRROR = "http://127.0.0.1:18082"


def role_defaults(role: str, **overrides) -> dict:
    """defaults/main.yml with its Jinja references to other defaults resolved (and the
    magic variables some of them name)."""
    values = {**yaml.safe_load((REPO / "roles" / role / "defaults" / "main.yml").read_text()),
              "inventory_dir": "/inventory", "playbook_dir": "/playbooks", **overrides}
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    for _ in range(5):
        values = {k: env.from_string(v).render(values) if isinstance(v, str) and "{{" in v else v
                  for k, v in values.items()}
    return values


def render(role: str, key: str, host: str, machine: str = "x86_64", **overrides) -> str:
    segments = vu.host_segments(*HOSTS[host], machine)
    return vu.vendor_url(role_defaults(role, **overrides)[key], segments)


def repo_and_key(role: str, prefix: str, host: str, machine: str) -> tuple[str, str]:
    """The role's <prefix>_url and <prefix>_key_url as rendered for this host."""
    return (render(role, f"{prefix}_url", host, machine),
            render(role, f"{prefix}_key_url", host, machine))


@pytest.mark.parametrize("host", HOSTS)
@pytest.mark.parametrize("machine,arch", [("x86_64", "x86_64"), ("aarch64", "sbsa")])
def test_the_cuda_repository_and_key_follow_nvidias_layout(host, machine, arch):
    assert repo_and_key("nvidia_driver", "nvidia_driver_nvidia_repo", host, machine) == (
        f"{CUDA}/{host}/{arch}/", f"{CUDA}/{host}/{arch}/3bf863cc.pub")


@pytest.mark.parametrize("host", HOSTS)
@pytest.mark.parametrize("machine,deb_arch", [("x86_64", "amd64"), ("aarch64", "arm64")])
def test_the_toolkit_repository_and_key_follow_nvidias_layout(host, machine, deb_arch):
    assert repo_and_key("nvidia_container_toolkit", "nvidia_container_toolkit_repo", host,
                        machine) == (f"{TOOLKIT}/stable/deb/{deb_arch}", f"{TOOLKIT}/gpgkey")


@pytest.mark.parametrize("role,root,keys", [
    ("nvidia_driver", "nvidia_driver_nvidia_repo_root",
     ["nvidia_driver_nvidia_repo_url", "nvidia_driver_nvidia_repo_key_url"]),
    ("nvidia_container_toolkit", "nvidia_container_toolkit_repo_root",
     ["nvidia_container_toolkit_repo_url", "nvidia_container_toolkit_repo_key_url"]),
])
@pytest.mark.parametrize("host", HOSTS)
def test_a_mirror_differs_from_the_vendor_only_in_scheme_and_host(role, root, keys, host):
    for key in keys:
        vendor = urlsplit(render(role, key, host))
        mirror = urlsplit(render(role, key, host, **{root: MIRROR}))
        assert mirror.netloc == "127.0.0.1:18082" and mirror.scheme == "http"
        assert (mirror.path, mirror.query) == (vendor.path, vendor.query)


def test_an_unsupported_distribution_is_named_with_the_supported_ones():
    with pytest.raises(AnsibleFilterError, match=r"Ubuntu 20\.04.*Debian 12.*Ubuntu 24\.04"):
        vu.host_segments("Ubuntu", "20", "20.04", "x86_64")
    with pytest.raises(AnsibleFilterError, match="ppc64le"):
        vu.host_segments("Debian", "12", "12.8", "ppc64le")


def test_a_placeholder_the_role_does_not_fill_is_an_error_not_a_404():
    segments = vu.host_segments("Debian", "12", "12.8", "x86_64")
    with pytest.raises(AnsibleFilterError, match=r"\{distribution\}.*\{arch\}"):
        vu.vendor_url("https://mirror/cuda/{distribution}/", segments)


BLACKWELL, ADA = True, False


@pytest.mark.parametrize("distribution,branch,blackwell,source,why", [
    ("Ubuntu", None, BLACKWELL, "distro", "Ubuntu's archive"),
    ("Ubuntu", None, ADA, "distro", "Ubuntu's archive"),
    ("Debian", 535, BLACKWELL, "nvidia", "cannot drive Blackwell"),
    ("Debian", 550, BLACKWELL, "nvidia", "550 cannot drive Blackwell"),
    ("Debian", 535, ADA, "nvidia", "older than the CUDA 12.8"),
])
def test_auto_takes_ubuntus_archive_and_nvidias_repository_on_debian(
        distribution, branch, blackwell, source, why):
    plan = vu.driver_source("auto", distribution, branch, blackwell)
    assert plan["source"] == source
    assert why in plan["reason"]


def test_an_explicit_source_is_kept_and_said_to_come_from_the_inventory():
    plan = vu.driver_source("distro", "Debian", 535, BLACKWELL)
    assert plan == {"source": "distro", "reason": "nvidia_driver_source: distro (inventory)"}


def test_ubuntus_archive_gives_the_open_server_driver_of_the_branch():
    ubuntu = yaml.safe_load((REPO / "roles/nvidia_driver/vars/Ubuntu.yml").read_text())
    packages = ubuntu["__nvidia_driver_distro_packages"]["open"]
    open_pkgs = [p.replace("{branch}", "580") for p in packages]
    assert open_pkgs[0] == "nvidia-driver-580-server-open"
    assert ubuntu["__nvidia_driver_distro_branch"] is None  # any branch: auto takes 580
    assert ubuntu["__nvidia_driver_nvidia_default_branch"] == 580


def test_the_role_filters_are_these_functions():
    """roles/gpu_facts/filter_plugins/kokoro_vendor_urls.py, as Ansible loads it, names
    vendor_urls' functions (the roles' defaults and tasks use these names)."""
    from ansible.plugins.loader import filter_loader

    filter_loader.add_directory(str(REPO / "roles" / "gpu_facts" / "filter_plugins"))
    expected = {
        "kokoro_vendor_segments": vu.host_segments,
        "kokoro_vendor_url": vu.vendor_url,
        "kokoro_driver_source": vu.driver_source,
    }
    for name, function in expected.items():
        assert filter_loader.get(name).j2_function is function, name
