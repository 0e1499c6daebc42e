"""Random inputs shaped like what a compressor's score request asks the vision tower for."""

from __future__ import annotations

import torch

from llava.compression import Compressor, TowerScores


def random_scores(comp: Compressor, views: int, tokens: int, key_dim: int = 8, seed: int = 0):
    """``[V, N]`` scores, or a :class:`TowerScores` with keys / extra layers when the request asks."""
    gen = torch.Generator().manual_seed(seed)
    req = comp.score_request()
    scores = torch.rand(views, tokens, generator=gen)
    if req is None or (req.keys is None and not req.extra_layers):
        return scores
    keys = torch.randn(views, tokens, key_dim, generator=gen) if req.keys is not None else None
    extra = torch.rand(views, len(req.extra_layers), tokens, generator=gen) if req.extra_layers else None
    return TowerScores(scores, keys, extra)
