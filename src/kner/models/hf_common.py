"""Small helpers shared by the torch families: where to run, in which precision, how many threads, how to load."""
from __future__ import annotations

import functools
import os
from contextlib import contextmanager
from pathlib import Path

import torch

PRECISIONS = ("auto", "fp32", "fp16", "bf16")


def pick_device(wanted: str) -> torch.device:
    """``auto`` is the GPU when there is one (the local rank's GPU under torchrun), else the CPU."""
    if wanted not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be cpu, cuda or auto, not {wanted!r}")
    if wanted == "auto":
        wanted = "cuda" if torch.cuda.is_available() else "cpu"
    if wanted == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device='cuda' but torch sees no GPU; use device='cpu' or 'auto'")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def check_precision(wanted: str) -> None:
    if wanted not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {wanted!r}")


def pick_precision(wanted: str, device: torch.device, cpu_bf16: bool = False) -> str:
    """``auto``: bf16 on GPUs that support it, else fp16 on GPU. On a CPU, bf16 where the family
    measured it faster at the same F1 (``cpu_bf16``) and the CPU has bf16 instructions; else fp32."""
    check_precision(wanted)
    if wanted == "fp16" and device.type != "cuda":
        raise ValueError("precision='fp16' needs a GPU; on a CPU use 'bf16' or 'fp32'")
    if wanted != "auto":
        return wanted
    if device.type != "cuda":
        return "bf16" if cpu_bf16 and cpu_has_bf16() else "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether the CPU has bf16 instructions (AVX512-BF16 or AMX), from Linux's /proc/cpuinfo.
    torch's mkldnn check also says yes on AVX512 CPUs that only emulate bf16, slower than fp32."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    flags = {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split()}
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def autocast(device: torch.device, precision: str):
    """Mixed-precision context for inference (weights stay fp32, matmuls run in half)."""
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def local_only(name_or_path: str | os.PathLike) -> bool:
    """Load from local files only when offline (HF_HUB_OFFLINE) or when the name is a folder,
    so that nothing ever waits on an unreachable hub. A name that can only be a path (absolute,
    ``./``, ``~``, or with more than one ``/``) must be a folder: transformers would call it a bad repo id."""
    name = str(name_or_path)
    if (name.startswith(("/", ".", "~")) or name.count("/") > 1) and not Path(name).is_dir():
        raise ValueError(f"model folder {name} does not exist; give a Hugging Face model folder or a hub id (owner/name)")
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() not in ("", "0", "false", "no")
    return offline or Path(name).is_dir()


@contextmanager
def threads(n: int):
    """torch's thread count is process-wide, so set it only for the call and put it back."""
    old = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
