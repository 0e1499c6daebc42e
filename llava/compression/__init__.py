"""Training-free visual-token compression for LLaVA-NeXT-class models.

>>> from llava.compression import build_compressor
>>> model.compressor = build_compressor("globalcom2", retention_ratio=0.25)

See :mod:`llava.compression.functional` for the method as pure tensor functions.
"""

from .functional import AnyResLayout, gather_tokens, pack, pack_indices, topk_mask
from .methods import (
    COMPRESSORS,
    CompressedImage,
    Compressor,
    FasterVLM,
    GlobalCom2,
    NoCompression,
    NonFiniteScoresError,
    ScoreRequest,
    Selection,
    TopKCompressor,
    UniformRandom,
    build_compressor,
    option_names,
)
from .scoring import SCORE_KINDS, cls_attention_scores, neg_cos_scores

__all__ = [
    "AnyResLayout", "COMPRESSORS", "CompressedImage", "Compressor", "FasterVLM", "GlobalCom2",
    "NoCompression", "NonFiniteScoresError", "SCORE_KINDS", "ScoreRequest", "Selection", "TopKCompressor", "UniformRandom", "build_compressor",
    "cls_attention_scores", "gather_tokens", "neg_cos_scores", "option_names", "pack", "pack_indices", "topk_mask",
]
