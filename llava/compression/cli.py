"""Command-line flags for choosing a compressor, shared by every entry point.

``add_compression_args(parser)`` adds ``--compression {none,globalcom2,fastervlm,...}`` (every
registered method, or a pipeline ``VISION+LLM``, e.g. ``globalcom2+fastv``), ``--retention-ratio``,
``--tau`` (the budget softmax temperature; ``--temperature`` stays the sampling temperature of the
LLaVA CLIs), ``--alpha``, ``--allocation``, ``--score``, ``--score-layer``, ``--layout``,
``--crop-order``, ``--budget``, ``--seed``, the vision-stage peers' ``--newlines``, ``--merge``,
``--contextual-ratio``, ``--early-layer``, ``--regions``, ``--neighbours``, ``--spatial-share`` and
the in-LLM methods' ``--fastv-k``, ``--prune-layers``, ``--pdrop-ratios``, ``--sparsevlm-scale``,
``--sparsevlm-bias``, ``--sparsevlm-recycle``, ``--vision-ratio``; ``compressor_from_args(args)``
builds the compressor (``None`` for ``none``). Options a method does not take are rejected by name.
"""

from __future__ import annotations

import argparse
from typing import Any

from . import in_llm  # noqa: F401  (registers the in-LLM methods)
from .functional import NEWLINE_POLICIES
from .methods import (
    BUDGETS,
    COMPRESSORS,
    CROP_ORDERS,
    Compressor,
    GlobalCom2,
    build_compressor,
    is_pipeline_name,
    option_names,
)
from .peer_functional import MERGES, REGIONS
from .pipeline import split_name
from .scoring import SCORE_KINDS


def _on_off(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")

_FLAGS = {
    "retention_ratio": dict(type=float, help="base retention ratio R in (0, 1] (default: the method's, 0.25; fastv 0.5)"),
    "temperature": dict(type=float, help="softmax temperature τ of the crop / frame budgets (globalcom2: default 10; "
                        "vidcom2: default 0.01). Named --tau because --temperature is the sampling temperature of "
                        "every LLaVA CLI"),
    "alpha": dict(type=float, help="globalcom2: weight of the global score, 0 = local only, 1 = global only; "
                  "hired: the thumbnail's share of the budget (default 0.5 for both)"),
    "allocation": dict(choices=GlobalCom2.ALLOCATIONS, help="crop (video: frame) budget rule (globalcom2; default softmax_sum)"),
    "score": dict(choices=SCORE_KINDS, help="token score: cls_logits (release), cls_softmax (paper Eq. 1), "
                  "neg_cos (CLS-free), attn_received (attention each token receives, CLS-free), "
                  "cls_softmax_onehead (all heads as one, PruMerge's)"),
    "score_layer": dict(type=int, help="vision layer whose attention scores tokens (globalcom2 -1, fastervlm -2, "
                        "visionzip -2, hired -2, prumerge -1)"),
    "layout": dict(choices=("faithful", "reference"), help="token packing: faithful (default) or reference (the release's sequence)"),
    "budget": dict(choices=BUDGETS, help="adaptive (default) or exact: the kept count a function of the image size "
                   "(video: frames × tokens per frame) and R (sizes placeholders before the vision tower runs); "
                   "prumerge: exact (default) or adaptive (its own IQR count)"),
    "seed": dict(type=int, help="random seed (uniform_random)"),
    "crop_order": dict(choices=CROP_ORDERS, help="crops in the sequence: forward (the host's order, default) or "
                       "reverse (reverse raster order; same tokens, for the positional-bias study)"),
    "k": dict(type=int, help="FastV: layers 0..K-1 see every token, the later ones the top R (default 2)"),
    "layers": dict(help="in-LLM drop layers, comma-separated (sparsevlm: 2,6,15,19; pdrop: 8,16,24)"),
    "ratios": dict(help="PDrop's kept share of the visual tokens per stage, comma-separated (default 0.5,0.25,0.125)"),
    "scale": dict(type=float, help="SparseVLM's lambda: keep floor(lambda*rank + bias) tokens (default: R*n/raters)"),
    "bias": dict(type=float, help="SparseVLM's beta in floor(lambda*rank + beta) (default 0)"),
    "recycle": dict(type=_on_off, help="SparseVLM's token recycling, true/false (default true)"),
    "vision_ratio": dict(type=float, help="pipelines: the vision stage's ratio (default sqrt(R); the in-LLM stage "
                         "then keeps R/vision_ratio)"),
    "newlines": dict(choices=NEWLINE_POLICIES, help="vision-stage peers: newline after canvas rows that keep a token "
                     "(kept, default, vanilla), after every row (all) or none (the peers' own LLaVA-NeXT code)"),
    "merge": dict(choices=MERGES, help="visionzip / prumerge: how merged features are formed: release (default, the "
                  "peer's code), mean (a true average) or none (no merging)"),
    "contextual_ratio": dict(type=float, help="visionzip: share of each view's tokens that are contextual "
                             "(default 10/64, its 54 + 10 split)"),
    "early_layer": dict(type=int, help="hired: vision layer whose [CLS] attention splits the crops' budget (default 0)"),
    "regions": dict(choices=REGIONS, help="hired: a crop's share of the thumbnail: release (default, HiRED's code: "
                    "bands of rows) or spatial (the crop's region)"),
    "neighbours": dict(type=int, help="prumerge: tokens merged into each kept token (default 32)"),
    "spatial_share": dict(type=float, help="prumerge_plus, budget exact: share of each view's tokens that are "
                          "spatial samples (default 0.75)"),
}

_ALIASES = {
    "temperature": ("--tau", "--compression-temperature"),
    "k": ("--fastv-k",),
    "layers": ("--prune-layers",),
    "ratios": ("--pdrop-ratios",),
    "scale": ("--sparsevlm-scale",),
    "bias": ("--sparsevlm-bias",),
    "recycle": ("--sparsevlm-recycle",),
}


def method_name(text: str) -> str:
    """``--compression`` values: a registered method or a ``VISION+LLM`` pipeline."""
    if is_pipeline_name(text):
        try:
            split_name(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        return text
    if text not in COMPRESSORS:
        raise argparse.ArgumentTypeError(
            f"invalid choice {text!r} (choose from {', '.join(COMPRESSORS)}, or VISION+LLM such as globalcom2+fastv)"
        )
    return text


def add_compression_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    g = parser.add_argument_group("visual token compression")
    g.add_argument("--compression", default="none", type=method_name, metavar="METHOD",
                   help=f"method: {', '.join(COMPRESSORS)}, or a pipeline VISION+LLM such as globalcom2+fastv "
                   "(default: none)")
    for name, spec in _FLAGS.items():
        g.add_argument(*_flag_names(name), dest=_dest(name), default=None, **spec)
    return parser


def _flag_names(option: str) -> tuple[str, ...]:
    return _ALIASES.get(option, ("--" + option.replace("_", "-"),))


def _dest(option: str) -> str:
    """The argparse destination of an option's flag (``temperature`` → ``tau``)."""
    return _flag_names(option)[0][2:].replace("-", "_")


def flag_name(option: str) -> str:
    """How an option is spelled on the command line (``temperature`` → ``--tau``)."""
    return _flag_names(option)[0]


def given_options(args: argparse.Namespace) -> dict[str, Any]:
    """The method options set on the command line, by option name (``{"temperature": 5.0}``)."""
    return {k: getattr(args, _dest(k)) for k in _FLAGS if getattr(args, _dest(k), None) is not None}


def compressor_from_args(args: argparse.Namespace) -> Compressor | None:
    """Build the compressor the flags describe; flags the method does not take are an error."""
    name = args.compression
    given = given_options(args)
    bad = sorted(set(given) - set(option_names(name)))
    if bad:
        raise SystemExit(f"error: --compression {name} does not take {', '.join(flag_name(b) for b in bad)}")
    comp = build_compressor(name, **given)
    return None if name == "none" else comp


def option_args() -> dict[str, str]:
    """Every method option under its argument name, as the flags spell it without ``--``
    (``tau`` for ``temperature``): for callers that take ``key=value`` options."""
    return {_dest(name): name for name in _FLAGS}


def option_value(option: str, value: Any) -> Any:
    """``value`` as the type the option's flag takes — for callers whose values arrive loosely
    typed (``"0.25"``, or ``-1.0`` for ``score_layer`` from a ``key=value`` string). A value that
    does not fit raises ``ValueError`` naming the option."""
    kind = _FLAGS[option].get("type", str)
    if kind is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            try:
                return int(str(value).strip())
            except ValueError:
                raise ValueError(f"{option} must be an integer, got {value!r}") from None
        return int(value)
    if kind is float:
        if isinstance(value, bool):
            raise ValueError(f"{option} must be a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{option} must be a number, got {value!r}") from None
    if kind is _on_off:
        if isinstance(value, bool):
            return value
        try:
            return _on_off(str(value).strip())
        except argparse.ArgumentTypeError as e:
            raise ValueError(f"{option}: {e}") from None
    return str(value)


def compression_config(compressor: Compressor | None) -> dict:
    """The resolved configuration as a plain dict (what gets written next to results)."""
    return {"name": "none"} if compressor is None else compressor.to_dict()
