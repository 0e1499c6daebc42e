"""Small helpers shared by the model, the CLIs and the benchmarks."""

from __future__ import annotations

import torch


def synchronize(device: torch.device | str) -> None:
    """Wait for the device's queued work (a no-op on CPU) — for wall-clock timing only."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
