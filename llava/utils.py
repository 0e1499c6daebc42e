"""Small helpers shared by the model, the CLIs and the benchmarks."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import torch


def read_json(path: str) -> Any:
    """A JSON file of a checkpoint or run; unreadable or malformed is a ValueError naming the file."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ValueError(f"cannot read {path}: {e}") from None


def synchronize(device: torch.device | str) -> None:
    """Wait for the device's queued work (a no-op on CPU) — for wall-clock timing only."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def execution_device(module: torch.nn.Module) -> torch.device:
    """Where ``module`` computes: accelerate's execution device when a ``device_map`` dispatched
    it (its weights may then be on ``meta``, offloaded to CPU or disk), else its weights' device."""
    device = getattr(getattr(module, "_hf_hook", None), "execution_device", None)
    if device is not None:
        return torch.device(device)
    return next(module.parameters()).device


def input_device(model: torch.nn.Module) -> torch.device:
    """Where a model's inputs go: the execution device of its input embeddings (``model.device``
    is its first weight's device, ``meta`` when a ``device_map`` offloaded that weight)."""
    return execution_device(model.get_input_embeddings())


@contextlib.contextmanager
def onloaded(module: torch.nn.Module, recurse: bool = True) -> Iterator[None]:
    """The weights of ``module`` (with ``recurse``, also of its submodules) on its execution
    device inside the block, even when a ``device_map`` offloaded them to ``"cpu"``/``"disk"``
    (accelerate then loads them only while the module's own ``forward`` runs): for code that
    reads weights without calling the module. A no-op for a module that is not offloaded."""
    from accelerate.utils import align_module_device, has_offloaded_params

    with contextlib.ExitStack() as stack:
        for m in module.modules() if recurse else [module]:
            if has_offloaded_params(m):
                stack.enter_context(align_module_device(m))
        yield
