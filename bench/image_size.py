"""The image's size, measured, against what the CUDA-based image it replaced would weigh, computed from
its parts (that image's base cannot be pulled here: no registry answers).

    python -m bench.image_size [--image fewshot:latest]     (after `make image`; ~2 min, downloads ~2 GB)

Measured: the built image and its layers by Dockerfile step (`docker history`). Computed for the old
Dockerfile (FROM nvidia/cuda:12.1.1-cudnn8-runtime-ubuntu22.04, Python 3.11 from the deadsnakes PPA):
- the CUDA 12.1 runtime and cuDNN 8.9 libraries that base ships (NVIDIA's runtime image installs
  cuda-libraries-12-1, libnpp, nvtx, cusparse, cublas and nccl; its cudnn8 variant libcudnn8), sized
  by unpacking NVIDIA's PyPI builds of the same libraries;
- the packages its Dockerfile installs with apt (build-essential, curl, gnupg2, software-properties-
  common, Python 3.11 with headers), sized by apt on this image's Debian base (Ubuntu's archive is not
  reachable here; the same packages);
- Ubuntu 22.04 itself: not measurable here, its published size taken as given;
- uv and the virtualenv: the same as in the new image (its requirements are the same).
Writes bench/results/image-size-<time>.json and .md.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import zipfile
from datetime import UTC, datetime
from pathlib import Path

from bench.report_files import write_report

RESULTS = Path(__file__).resolve().parent / "results"
# The libraries of nvidia/cuda:12.1.1-cudnn8-runtime-ubuntu22.04, as NVIDIA publishes them on PyPI.
CUDA_12_1_RUNTIME = (
    "nvidia-cuda-runtime-cu12==12.1.105", "nvidia-cuda-nvrtc-cu12==12.1.105", "nvidia-cublas-cu12==12.1.3.1",
    "nvidia-cufft-cu12==11.0.2.54", "nvidia-curand-cu12==10.3.2.106", "nvidia-cusolver-cu12==11.4.5.107",
    "nvidia-cusparse-cu12==12.1.0.106", "nvidia-nvjitlink-cu12==12.1.105", "nvidia-npp-cu12==12.1.0.40",
    "nvidia-nvjpeg-cu12==12.2.0.2", "nvidia-nvtx-cu12==12.1.105", "nvidia-nccl-cu12==2.17.1",
    "nvidia-cudnn-cu12==8.9.2.26",
)
# What the old Dockerfile's apt-get steps installed (BentoML's CUDA template and the deadsnakes step).
OLD_APT_PACKAGES = ("gnupg2", "bash", "build-essential", "curl", "ca-certificates", "software-properties-common",
                    "python3-dev")
UBUNTU_22_04_BYTES = 77.9e6  # `docker images ubuntu:22.04`, as Docker Hub lists it: not measurable here


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout


def layers(image: str) -> dict[str, int]:
    """Bytes added by the image's steps, grouped: the base, uv, torch, the other requirements, the rest."""
    rows = docker("history", "--human=false", "--no-trunc", "--format", "{{.Size}}\t{{.CreatedBy}}", image)
    history = [row.split("\t", 1) for row in rows.splitlines()]
    groups = {"base": 0, "uv": 0, "torch": 0, "requirements": 0, "rest": 0}
    user_created = False
    for size, step in reversed(history):  # oldest first: the base's own steps come before groupadd
        user_created = user_created or "groupadd" in step
        group = ("base" if not user_created else "uv" if "uv-requirements" in step else
                 "torch" if "^torch==" in step else "requirements" if "install.sh" in step else "rest")
        groups[group] += int(size)
    return groups


def unpacked_bytes(requirements: tuple[str, ...]) -> dict[str, int]:
    with tempfile.TemporaryDirectory() as directory:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                        "--platform", "manylinux2014_x86_64", "--python-version", "3.11", "--dest", directory,
                        *requirements], check=True)
        return {wheel.name.split("-")[0]: sum(entry.file_size for entry in zipfile.ZipFile(wheel).infolist())
                for wheel in sorted(Path(directory).glob("*.whl"))}


def apt_additions(base: str) -> int:
    """Bytes apt says the old Dockerfile's packages add to `base`."""
    said = subprocess.run(["docker", "run", "--rm", "--user", "root", "--entrypoint", "sh", base, "-c",
                           "apt-get update -qq >/dev/null 2>&1; apt-get install --no-install-recommends --assume-no "
                           + " ".join(OLD_APT_PACKAGES)], capture_output=True, text=True, check=False).stdout
    found = re.search(r"After this operation, ([\d.,]+) ([kMG])B of additional disk space", said)
    if found is None:
        raise RuntimeError(f"apt said no size:\n{said[-2000:]}")
    return int(float(found.group(1).replace(",", "")) * {"k": 1e3, "M": 1e6, "G": 1e9}[found.group(2)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default="fewshot:latest")
    parser.add_argument("--base", default="python:3.11-slim", help="the image's base, for apt's sizes")
    options = parser.parse_args()
    when = datetime.now(UTC)
    image_bytes = int(docker("image", "inspect", "--format", "{{.Size}}", options.image))
    after = layers(options.image)
    cuda = unpacked_bytes(CUDA_12_1_RUNTIME)
    apt = apt_additions(options.base)
    virtualenv = after["uv"] + after["torch"] + after["requirements"] + after["rest"]
    before = {"ubuntu 22.04 (as listed)": int(UBUNTU_22_04_BYTES), "apt packages (on Debian)": apt,
              "CUDA 12.1 + cuDNN 8.9 libraries": sum(cuda.values()), "uv and the virtualenv (as after)": virtualenv}
    report = {"image": options.image, "image_bytes": image_bytes, "after_layers": after, "before_parts": before,
              "before_bytes": sum(before.values()), "cuda_12_1_libraries": cuda}
    gb = 1e9
    markdown = "\n".join([
        f"# Image size ({when:%Y-%m-%d %H:%M} UTC)", "",
        f"After: `{options.image}`, measured: **{image_bytes / gb:.2f} GB**: base {after['base'] / gb:.2f}, "
        f"uv {after['uv'] / gb:.2f}, torch and its CUDA 13 wheels {after['torch'] / gb:.2f}, other requirements "
        f"{after['requirements'] / gb:.2f}, the bento and the rest {after['rest'] / gb:.3f} GB.", "",
        "Before (FROM nvidia/cuda:12.1.1-cudnn8-runtime-ubuntu22.04), computed: "
        f"**{sum(before.values()) / gb:.2f} GB**",
        "", "| part | GB |", "| --- | --- |",
        *(f"| {part} | {size / gb:.2f} |" for part, size in before.items()), "",
        "CUDA 12.1 / cuDNN 8.9 libraries, unpacked from NVIDIA's PyPI builds:", "", "| library | GB |", "| --- | --- |",
        *(f"| {name} | {size / gb:.3f} |" for name, size in cuda.items()), "",
    ])
    stem = write_report(RESULTS, "image-size", when, report, markdown)
    print(markdown)
    print(f"wrote {stem}.json and .md")


if __name__ == "__main__":
    main()
