"""Training-free visual-token compression for LLaVA-NeXT-class models.

>>> from llava.compression import build_compressor
>>> model.compressor = build_compressor("globalcom2", retention_ratio=0.25)

See :mod:`llava.compression.functional` for the method as pure tensor functions, and
:mod:`llava.compression.peers` for its vision-stage peers (VisionZip, HiRED, PruMerge, PruMerge+).
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
    Compressor,
    FasterVLM,
    GlobalCom2,
    NoCompression,
    NonFiniteScoresError,
    TopKCompressor,
    UniformRandom,
    build_compressor,
    option_names,
    register_compressor,
)
from .peers import HiRED, PruMerge, PruMergePlus, VisionStagePeer, VisionZip
from .pipeline import Pipeline, compose
from .records import CompressedImage, LLMRecord, ScoreRequest, Selection
from .scoring import (
    CLS_KINDS,
    SCORE_KINDS,
    TowerScores,
    cls_attention_scores,
    neg_cos_scores,
    patch_keys,
    received_attention,
)
from .video_methods import EVS, VidCom2  # registers the video-only methods

__all__ = [
    "AnyResLayout", "BUDGETS", "CLS_KINDS", "COMPRESSORS", "CompressedImage", "Compressor", "EVS", "FasterVLM",
    "FastV", "GlobalCom2", "HiRED", "InLLMCompressor", "LLMRecord", "LLMStage", "NoCompression", "NonFiniteScoresError",
    "PDrop", "PackPlan", "Pipeline", "PruMerge", "PruMergePlus", "SCORE_KINDS", "ScoreRequest", "Selection",
    "SparseVLM", "TopKCompressor", "TowerScores", "UniformRandom", "VidCom2", "VideoLayout", "VisionStagePeer",
    "VisionZip", "build_compressor", "cls_attention_scores", "compose", "gather_tokens", "llm_stage",
    "neg_cos_scores", "option_names", "pack", "pack_indices", "pack_plan", "patch_keys", "received_attention",
    "reconcile_total", "register_compressor", "scatter_visible", "topk_mask",
]
