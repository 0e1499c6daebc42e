"""The vision→language projector (``mm_projector``)."""

from __future__ import annotations

import re

from torch import nn


class IdentityMap(nn.Module):
    def forward(self, x, *args, **kwargs):
        return x


def build_vision_projector(config) -> nn.Module:
    """``linear``, ``mlpNx_gelu`` (Linear, then N-1 × (GELU, Linear)) or ``identity``;
    indices match the original weight names (``mm_projector.0``, ``.2``, …)."""
    kind = getattr(config, "mm_projector_type", "linear")
    if kind == "linear":
        return nn.Linear(config.mm_hidden_size, config.hidden_size)
    match = re.fullmatch(r"mlp(\d+)x_gelu", kind)
    if match:
        layers: list[nn.Module] = [nn.Linear(config.mm_hidden_size, config.hidden_size)]
        for _ in range(1, int(match.group(1))):
            layers += [nn.GELU(), nn.Linear(config.hidden_size, config.hidden_size)]
        return nn.Sequential(*layers)
    if kind == "identity":
        return IdentityMap()
    raise ValueError(f"unknown mm_projector_type {kind!r} (expected linear, mlpNx_gelu or identity)")
