"""Training-free visual-token compression for LLaVA-NeXT-class models.

>>> from llava.compression import build_compressor
>>> model.compressor = build_compressor("globalcom2", retention_ratio=0.25)

See :mod:`llava.compression.functional` for the method as pure tensor functions.
"""

from .functional import (
    AnyResLayout,
    PackPlan,
    gather_tokens,
    pack,
    pack_indices,
    pack_plan,
    reconcile_total,
    scatter_visible,
    topk_mask,
)
from .in_llm import FastV, InLLMCompressor, LLMStage, PDrop, SparseVLM, llm_stage
from .layout import VideoLayout
from .methods import (
    BUDGETS,
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
    register_compressor,
)
from .pipeline import Pipeline, compose
from .scoring import CLS_KINDS, SCORE_KINDS, cls_attention_scores, neg_cos_scores, received_attention
from .video_methods import EVS, VidCom2  # registers the video-only methods

__all__ = [
    "AnyResLayout", "BUDGETS", "CLS_KINDS", "COMPRESSORS", "CompressedImage", "Compressor", "EVS", "FasterVLM",
    "FastV", "InLLMCompressor", "LLMStage", "PDrop", "Pipeline", "SparseVLM", "compose", "llm_stage",
    "GlobalCom2", "NoCompression", "NonFiniteScoresError", "PackPlan", "SCORE_KINDS", "ScoreRequest", "Selection",
    "TopKCompressor", "UniformRandom", "build_compressor", "cls_attention_scores", "gather_tokens", "neg_cos_scores",
    "option_names", "pack", "pack_indices", "pack_plan", "received_attention", "reconcile_total",
    "register_compressor", "scatter_visible", "topk_mask", "VidCom2", "VideoLayout",
]
