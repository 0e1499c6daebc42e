"""Timing, memory and reporting helpers shared by the benchmarks."""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any

import torch

from llava.analysis.efficiency.cli import ratio_arg  # noqa: F401  (the benchmarks' --ratios type)
from llava.utils import synchronize

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto``: float16 on CUDA; on CPU bfloat16 where the CPU has native bf16 matmuls
    (AVX512-BF16 / AMX), float32 otherwise."""
    if name != "auto":
        return DTYPES[name]
    if device.type == "cuda":
        return torch.float16
    native_bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
    return torch.bfloat16 if native_bf16 else torch.float32




def timed(fn: Callable[[], Any], device: torch.device | str) -> tuple[float, Any]:
    """``(seconds, result)`` of one call, with the device synchronised on both sides."""
    synchronize(device)
    t0 = time.perf_counter()
    out = fn()
    synchronize(device)
    return time.perf_counter() - t0, out


def summary(values_s: Sequence[float]) -> dict[str, Any]:
    """Median / min / max / all of a list of seconds, in milliseconds."""
    ms = [1e3 * v for v in values_s]
    if not ms:
        return {"median": None, "min": None, "max": None, "n": 0, "all": []}
    return {
        "median": statistics.median(ms), "min": min(ms), "max": max(ms), "n": len(ms),
        "all": [round(v, 4) for v in ms],
    }


# ----------------------------------------------------------------------------- memory


class MemoryProbe:
    """Peak memory of a block of work, above what was live when it started.

    CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``. CPU (Linux):
    the process's resident-set high-water mark (``VmHWM`` in ``/proc/self/status``), reset by
    writing ``5`` to ``/proc/self/clear_refs`` after ``malloc_trim(0)`` has handed freed heap
    pages back to the OS, minus the RSS at the start. Elsewhere on CPU: ``ru_maxrss`` growth
    (which cannot be reset, so only the first, largest run shows).
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.method = "unavailable"
        self._libc = None
        if device.type == "cuda":
            self.method = "cuda.max_memory_allocated"
        elif os.path.exists("/proc/self/clear_refs"):
            self.method = "rss_hwm_reset"
            path = ctypes.util.find_library("c")
            try:
                self._libc = ctypes.CDLL(path) if path else None
            except OSError:
                self._libc = None
            if not self._try_reset():
                self.method = "ru_maxrss"
        else:
            self.method = "ru_maxrss"

    def _try_reset(self) -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            return True
        except OSError:
            return False

    @staticmethod
    def _status_mb(key: str) -> float:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024.0
        raise KeyError(key)

    @staticmethod
    def _ru_maxrss_mb() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return r / 2**20 if sys.platform == "darwin" else r / 1024.0

    def start(self) -> None:
        synchronize(self.device)
        if self.method.startswith("cuda"):
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device) / 2**20
        elif self.method == "rss_hwm_reset":
            if self._libc is not None:
                self._libc.malloc_trim(0)
            self._try_reset()
            self._base = self._status_mb("VmRSS")
        else:
            self._base = self._ru_maxrss_mb()

    def stop(self) -> dict[str, float]:
        """``{"peak_mb": absolute peak, "delta_mb": peak − live at start}`` (MiB)."""
        synchronize(self.device)
        if self.method.startswith("cuda"):
            peak = torch.cuda.max_memory_allocated(self.device) / 2**20
        elif self.method == "rss_hwm_reset":
            peak = self._status_mb("VmHWM")
        else:
            peak = self._ru_maxrss_mb()
        return {"peak_mb": peak, "delta_mb": max(peak - self._base, 0.0)}


# ----------------------------------------------------------------------------- reporting


def environment(device: torch.device) -> dict[str, Any]:
    import transformers

    env = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "command": " ".join([os.path.basename(sys.executable), "-m", *sys.argv]) if sys.argv else "",
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    try:
        env["load_average"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    return env


def write_json(path: str, payload: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)
        f.write("\n")


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Plain aligned table; floats get 2 decimals (3 below 10), ``None`` prints as ``-``."""

    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
        return str(v)

    body = [[cell(v) for v in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in body]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in body]
    return "\n".join(lines)
