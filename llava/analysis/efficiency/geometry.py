"""What the cost model is computed for: an LLM's shape and an accelerator's peak figures."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class LLMGeometry:
    """Shape of a decoder-only (Llama-style, gated-MLP) language model.

    ``head_dim`` defaults to ``hidden_size // num_attention_heads``; ``num_key_value_heads``
    defaults to ``num_attention_heads`` (multi-head attention).
    """

    name: str
    num_hidden_layers: int
    hidden_size: int
    intermediate_size: int
    num_attention_heads: int
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    vocab_size: int = 32000

    def __post_init__(self) -> None:
        if self.num_key_value_heads is None:
            object.__setattr__(self, "num_key_value_heads", self.num_attention_heads)
        if self.head_dim is None:
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_attention_heads)
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "name" and (not isinstance(value, int) or value <= 0):
                raise ValueError(f"LLMGeometry.{f.name} must be a positive int, got {value!r}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) is not a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})"
            )

    @property
    def q_dim(self) -> int:
        """Width of the concatenated query (and attention output) heads, ``heads · head_dim``."""
        return self.num_attention_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        """Width of the concatenated key (or value) heads, ``kv_heads · head_dim`` (``d_kv``)."""
        return self.num_key_value_heads * self.head_dim

    def shape_key(self) -> tuple[int, ...]:
        """Every size field except the name (two geometries with equal keys cost the same)."""
        return tuple(getattr(self, f.name) for f in fields(self) if f.name != "name")

    @classmethod
    def llava_next_7b(cls) -> LLMGeometry:
        """LLaVA-NeXT-7B's LLM (Vicuna-7B, Llama-2 shape)."""
        return cls("llava-next-7b", 32, 4096, 11008, 32, 32, 128, 32000)

    @classmethod
    def llava_next_13b(cls) -> LLMGeometry:
        """LLaVA-NeXT-13B's LLM (Vicuna-13B, Llama-2 shape)."""
        return cls("llava-next-13b", 40, 5120, 13824, 40, 40, 128, 32000)

    @classmethod
    def from_config(
        cls, path_or_dict: str | Path | Mapping[str, Any], name: str | None = None
    ) -> LLMGeometry:
        """Read a LLaVA / Llama ``config.json`` (a path to the file or its directory, or a dict).

        Reads ``num_hidden_layers``, ``hidden_size``, ``intermediate_size``,
        ``num_attention_heads`` and, when present, ``num_key_value_heads``, ``head_dim`` and
        ``vocab_size``. The original LLaVA format keeps them at the top level; the
        transformers ``Llava(Next)ForConditionalGeneration`` format nests them under
        ``text_config``, where (as transformers does) missing fields take ``LlamaConfig``'s
        defaults (Llama-2-7B's shape).
        """
        if isinstance(path_or_dict, Mapping):
            cfg: Mapping[str, Any] = path_or_dict
            default_name = str(cfg.get("_name_or_path") or "config")
        else:
            path = Path(path_or_dict)
            if path.is_dir():
                path = path / "config.json"
            with open(path, encoding="utf-8") as fh:
                cfg = json.load(fh)
            default_name = str(cfg.get("_name_or_path") or path.parent.name or path.stem)
        llama_defaults = {
            "num_hidden_layers": 32,
            "hidden_size": 4096,
            "intermediate_size": 11008,
            "num_attention_heads": 32,
        }
        source: Mapping[str, Any] = cfg
        defaults: Mapping[str, Any] = {}
        if "hidden_size" not in cfg and isinstance(cfg.get("text_config"), Mapping):
            source, defaults = cfg["text_config"], llama_defaults
        values: dict[str, Any] = {}
        for key in ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads"):
            if key in source:
                values[key] = int(source[key])
            elif key in defaults:
                values[key] = defaults[key]
            else:
                raise KeyError(f"config has no {key!r} (neither at the top level nor in text_config)")
        for key in ("num_key_value_heads", "head_dim", "vocab_size"):
            if source.get(key) is not None:
                values[key] = int(source[key])
        return cls(name=name or default_name.rstrip("/").split("/")[-1], **values)


@dataclass(frozen=True)
class Accelerator:
    """Peak dense fp16 tensor throughput (TFLOP/s) and HBM bandwidth (TB/s, decimal)."""

    name: str
    peak_tflops: float
    bandwidth_tbps: float

    @property
    def peak_flops(self) -> float:
        """FLOP/s."""
        return self.peak_tflops * 1e12

    @property
    def bandwidth(self) -> float:
        """Bytes/s."""
        return self.bandwidth_tbps * 1e12

    @classmethod
    def parse(cls, spec: str) -> Accelerator:
        """A built-in name (case-insensitive) or ``NAME:TFLOPS:TBPS``."""
        for key, accel in ACCELERATORS.items():
            if spec.lower() == key.lower():
                return accel
        parts = spec.split(":")
        if len(parts) != 3:
            raise ValueError(
                f"unknown accelerator {spec!r}: use one of {', '.join(ACCELERATORS)} or NAME:TFLOPS:TBPS"
            )
        name, tflops, tbps = parts
        try:
            accel = cls(name, float(tflops), float(tbps))
        except ValueError as exc:
            raise ValueError(f"bad accelerator spec {spec!r}: TFLOPS and TBPS must be numbers") from exc
        if not name or accel.peak_tflops <= 0 or accel.bandwidth_tbps <= 0:
            raise ValueError(f"bad accelerator spec {spec!r}: need a name and positive numbers")
        return accel


# Published datasheet figures (dense fp16/bf16 tensor-core peak, without sparsity).
ACCELERATORS: dict[str, Accelerator] = {
    "A100-80GB": Accelerator("A100-80GB", 312.0, 2.039),
    "A100-40GB": Accelerator("A100-40GB", 312.0, 1.555),
    "H100-SXM": Accelerator("H100-SXM", 989.0, 3.35),
    "H200": Accelerator("H200", 989.0, 4.8),
}
DEFAULT_ACCELERATOR = "A100-80GB"

BUILTIN_GEOMETRIES: dict[str, Callable[[], LLMGeometry]] = {
    "7b": LLMGeometry.llava_next_7b,
    "13b": LLMGeometry.llava_next_13b,
}
"""The ``--model`` choices: the paper's two LLaVA-NeXT LLMs."""
