"""Where the networks run: params.yaml's `device` setting resolved to a torch.device."""

from __future__ import annotations

import torch


def resolve_device(setting: str) -> torch.device:
    """params.yaml's `device`: "auto" is CUDA when torch sees a GPU, else the CPU; "cuda" without one is an error."""
    if setting == "cuda" and not torch.cuda.is_available():
        raise ValueError("device is 'cuda' but torch sees no GPU (torch.cuda.is_available() is False); set "
                           "device: auto or cpu in params.yaml")
    if setting not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {setting!r}")
    return torch.device("cpu" if setting == "cpu" or not torch.cuda.is_available() else "cuda")


def limit_cpu_threads(device: torch.device, threads: int) -> None:
    """Run torch's CPU operators on `threads` threads when `device` is the CPU (CUDA work is left as it is)."""
    if device.type == "cpu":
        torch.set_num_threads(threads)
