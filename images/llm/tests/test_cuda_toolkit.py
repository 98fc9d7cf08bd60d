"""The CUDA LLM image's toolkit: NVIDIA's CUDA wheels pinned in manifest.yml
(build_sources.llm_cuda_wheels), laid out by images/llm/cuda-toolkit.sh as nvcc and
CMake expect a toolkit, with a link stub for the driver API.

The layout is checked on small wheels built here in the real format (a zip with the
wheels' nvidia/cu13/ tree): the real ones are 530 MB, and compiling with them takes
the image build itself (docs/benchmarks/llm-cuda-image-*.md). Needs gcc, unzip and nm,
which the image's build stage has too."""
from __future__ import annotations

import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).resolve().parents[1]
REPO = HERE.parents[1]
SCRIPT = HERE / "cuda-toolkit.sh"
WHEELS = yaml.safe_load((REPO / "manifest.yml").read_text())["build_sources"]["llm_cuda_wheels"]

# What nvcc, CMake's FindCUDAToolkit and ggml's link need, one wheel each.
PARTS = {"nvidia-cuda-nvcc", "nvidia-cuda-crt", "nvidia-nvvm", "nvidia-cuda-runtime",
         "nvidia-cublas", "nvidia-cuda-cccl"}


def test_the_manifest_pins_one_cuda_release_wheel_by_wheel():
    assert {w["name"] for w in WHEELS} == PARTS
    for w in WHEELS:
        stem = w["name"].replace("-", "_")
        assert w["file"].startswith(f"{stem}-{w['version']}-py3-none-"), w
        assert w["file"].endswith("x86_64.whl"), w
        assert re.fullmatch(r"[0-9a-f]{64}", w["sha256"]) and w["size"] > 0, w
        assert w["version"].split(".")[0] == "13", w


def test_the_image_asks_the_driver_for_the_cuda_release_it_was_compiled_with():
    """NVIDIA's container toolkit refuses a host driver too old for NVIDIA_REQUIRE_CUDA
    before the container starts; it must name the release of the pinned compiler."""
    nvcc = next(w for w in WHEELS if w["name"] == "nvidia-cuda-nvcc")
    major_minor = ".".join(nvcc["version"].split(".")[:2])
    dockerfile = (HERE / "Dockerfile").read_text()
    cuda_stage = dockerfile[dockerfile.index("AS cuda\n"):dockerfile.index("AS cpu\n")]
    assert f'ARG NVIDIA_REQUIRE_CUDA="cuda>={major_minor}"' in cuda_stage
    assert "NVIDIA_REQUIRE_CUDA=${NVIDIA_REQUIRE_CUDA}" in cuda_stage


def _wheel(path: Path, files: dict[str, tuple[bytes, int]]) -> None:
    with zipfile.ZipFile(path, "w") as z:
        for name, (data, mode) in files.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o100000 | mode) << 16  # a regular file with its mode
            z.writestr(info, data)
        z.writestr("fake-1.0.dist-info/METADATA", "Name: fake\n")


CUDA_H = b"""\
#define CUDAAPI
typedef int CUresult;
typedef unsigned long long CUdeviceptr;
#define cuMemAlloc cuMemAlloc_v2
CUresult CUDAAPI cuInit(unsigned int Flags);
CUresult CUDAAPI cuMemAlloc(CUdeviceptr *dptr, unsigned long bytesize);
CUresult CUDAAPI
    cuDeviceGet(int *device, int ordinal);
"""
NVCC = b"#!/bin/sh\necho 'Cuda compilation tools, release 13.0, V13.0.88'\n"


@pytest.fixture()
def wheels(tmp_path) -> Path:
    for tool in ("gcc", "unzip", "nm", "readelf"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is needed (the image's build stage has it)", pytrace=False)
    d = tmp_path / "wheels"
    d.mkdir()
    _wheel(d / "nvidia_cuda_nvcc-13.0.88-py3-none-x.whl",
           {"nvidia/cu13/bin/nvcc": (NVCC, 0o755), "nvidia/cu13/bin/nvcc.profile": (b"", 0o644)})
    _wheel(d / "nvidia_cuda_runtime-13.0.96-py3-none-x.whl",
           {"nvidia/cu13/include/cuda.h": (CUDA_H, 0o644),
            "nvidia/cu13/lib/libcudart.so.13": (b"not really\n", 0o644)})
    _wheel(d / "nvidia_cublas-13.1.0.3-py3-none-x.whl",
           {"nvidia/cu13/lib/libcublas.so.13": (b"not really\n", 0o644),
            "nvidia/cu13/lib/libcublasLt.so.13": (b"not really\n", 0o644)})
    return d


def run(wheel_dir: Path, prefix: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", str(SCRIPT), str(wheel_dir), str(prefix)],
                          capture_output=True, text=True, timeout=120)


def test_the_wheels_become_a_toolkit_in_the_shape_nvcc_and_cmake_expect(wheels, tmp_path):
    prefix = tmp_path / "usr/local/cuda"
    r = run(wheels, prefix)
    assert r.returncode == 0, r.stderr
    assert "release 13.0" in r.stdout
    assert (prefix / "bin/nvcc").stat().st_mode & 0o111
    # nvcc.profile adds $(TOP)/targets/<arch>/include; FindCUDAToolkit looks in lib64.
    assert (prefix / "targets/x86_64-linux/include/cuda.h").read_bytes() == CUDA_H
    assert (prefix / "lib64/libcudart.so.13").is_file()
    for name in ("libcudart", "libcublas", "libcublasLt"):
        link = prefix / "lib" / f"{name}.so"
        assert link.is_symlink() and link.readlink() == Path(f"{name}.so.13")


def test_the_driver_stub_exports_what_cuda_h_declares_under_its_real_names(wheels, tmp_path):
    prefix = tmp_path / "cuda"
    assert run(wheels, prefix).returncode == 0
    stub = prefix / "lib/stubs/libcuda.so"
    dynamic = subprocess.run(["readelf", "-d", str(stub)], capture_output=True, text=True)
    assert "Library soname: [libcuda.so.1]" in dynamic.stdout
    symbols = subprocess.run(["nm", "-D", "--defined-only", str(stub)],
                             capture_output=True, text=True).stdout
    exported = {line.split()[-1] for line in symbols.splitlines() if " T " in line}
    # cuda.h's macro picks the _v2 entry point; the bare name is not what callers link.
    assert exported == {"cuInit", "cuMemAlloc_v2", "cuDeviceGet"}
    assert not (prefix / "lib/stubs/libcuda.c").exists()
    # A program that calls the driver API links against the stub as it would against
    # the real library, and records the soname the host's driver answers to.
    (tmp_path / "app.c").write_text(
        "#include <cuda.h>\n"
        "int main(void) { CUdeviceptr p; cuInit(0); return cuMemAlloc(&p, 1); }\n")
    app = tmp_path / "app"
    link = subprocess.run(["gcc", "-I", str(prefix / "include"), str(tmp_path / "app.c"),
                           "-L", str(prefix / "lib/stubs"), "-lcuda", "-o", str(app)],
                          capture_output=True, text=True)
    assert link.returncode == 0, link.stderr
    needed = subprocess.run(["readelf", "-d", str(app)], capture_output=True, text=True).stdout
    assert "Shared library: [libcuda.so.1]" in needed


def test_wheels_without_the_compiler_stop_the_build_by_name_and_leave_no_toolkit(wheels, tmp_path):
    (wheels / "nvidia_cuda_nvcc-13.0.88-py3-none-x.whl").unlink()
    prefix = tmp_path / "cuda"
    r = run(wheels, prefix)
    assert r.returncode == 1
    assert "no nvidia/cu13/bin/nvcc" in r.stderr and str(wheels) in r.stderr
    assert not prefix.exists()
