"""A description of the machine a benchmark ran on, so its speed figures can be read in context."""
from __future__ import annotations

import importlib.util
import os
import platform
import sys
from pathlib import Path


def cpu_model() -> str:
    """The CPU's marketing name (Linux: /proc/cpuinfo; elsewhere what ``platform`` knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def usable_cpus() -> int | None:
    """CPUs this process may run on: the affinity mask, narrowed by a cgroup v2 quota if any.

    Containers often show the host's core count in ``os.cpu_count()`` while a quota lets them
    use far fewer, which is what the timings actually got.
    """
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            count = min(count or 1 << 30, max(1, round(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return count


def describe_machine() -> dict:
    """CPU, cores, RAM, OS, Python, and torch / GPU details when torch is installed."""
    import psutil

    info: dict = {
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "usable_cpus": usable_cpus(),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": sys.version.split()[0],
    }
    if importlib.util.find_spec("torch") is not None:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu_count"] = torch.cuda.device_count()
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        else:
            info["gpu_count"] = 0
    return info


def machine_line(info: dict | None = None) -> str:
    """One line for model cards: CPU, the CPUs actually usable, and the GPUs (or none)."""
    info = info or describe_machine()
    gpus = ", ".join(info.get("gpus") or []) or "no GPU"
    return f"{info['cpu']} ({info['usable_cpus']} usable CPUs), {gpus}"


_LABELS = {
    "cpu": "CPU", "logical_cores": "logical cores", "physical_cores": "physical cores",
    "usable_cpus": "CPUs usable by this process", "ram_gb": "RAM (GB)", "os": "OS", "python": "Python",
    "torch": "torch", "torch_threads": "torch threads", "gpu_count": "GPUs", "gpus": "GPU models",
}


def machine_markdown(info: dict) -> str:
    """A two-column markdown table of :func:`describe_machine`'s answer."""
    rows = ["| | |", "|---|---|"]
    for key, value in info.items():
        if isinstance(value, list):
            value = ", ".join(map(str, value)) or "none"
        rows.append(f"| {_LABELS.get(key, key)} | {value} |")
    return "\n".join(rows)
