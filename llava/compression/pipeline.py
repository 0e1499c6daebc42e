"""Pipelines: one vision-stage method, then one in-LLM method — ``"globalcom2+fastv"``.

``build_compressor("globalcom2+fastv", retention_ratio=0.1)`` (or :func:`compose`) gives a
:class:`Pipeline`: the first stage packs the visual tokens before the LLM exactly as it does
alone; the second prunes them inside the LLM's prefill. Each option goes to the stage whose
configuration has it.

**The budget split.** When the in-LLM method takes a retention ratio (FastV, SparseVLM), the
pipeline's ``retention_ratio`` R is the *overall* share of visual tokens that reaches the
layers after the last drop, split evenly in the logarithm: the vision stage keeps
``R_v = √R`` and the in-LLM stage keeps ``R/R_v`` of what it receives (R = 10 %: 31.6 % and
31.6 %). ``vision_ratio`` sets ``R_v`` explicitly (``R ≤ R_v ≤ 1``; ``vision_ratio=R`` makes
the in-LLM stage keep everything, ``1`` leaves the vision stage keeping everything). PDrop
has its own stage ratios, so there ``retention_ratio`` is the vision stage's (``vision_ratio``
is refused) and PDrop's ratios apply to what the vision stage kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from .in_llm import InLLMCompressor
from .methods import COMPRESSORS, Compressor, _check_ratio, option_names

#: Options that belong to the vision stage when both stages have them (packing of the tokens).
_VISION_SIDE = ("layout", "crop_order")


def split_name(name: str) -> tuple[str, str]:
    """``"globalcom2+fastv"`` → ``("globalcom2", "fastv")`` — checked: a known vision-stage
    method, then a known in-LLM method."""
    parts = name.split("+")
    vision = [n for n, c in COMPRESSORS.items() if not issubclass(c, InLLMCompressor)]
    llm = [n for n, c in COMPRESSORS.items() if issubclass(c, InLLMCompressor)]
    if len(parts) != 2 or parts[0] not in vision or parts[1] not in llm:
        raise ValueError(
            f"unknown pipeline {name!r}: write <vision method>+<in-LLM method> with a vision method of "
            f"{', '.join(vision)} and an in-LLM method of {', '.join(llm)}"
        )
    return parts[0], parts[1]


def pipeline_option_names(name: str) -> list[str]:
    """Every option ``build_compressor(name, ...)`` accepts for pipeline ``name``."""
    v, m = split_name(name)
    v_fields, m_fields = option_names(v), option_names(m)
    names = v_fields + [f for f in m_fields if f not in v_fields]
    if COMPRESSORS[m].uses_ratio and "retention_ratio" in v_fields:
        names.append("vision_ratio")
    return names


@dataclass(frozen=True)
class Pipeline(Compressor):
    """``vision`` packs the tokens before the LLM, ``llm`` prunes them in its prefill."""

    vision: Compressor | None = None
    llm: InLLMCompressor | None = None

    pipeline: ClassVar[bool] = True

    def __post_init__(self):
        if not isinstance(self.vision, Compressor) or isinstance(self.vision, (InLLMCompressor, Pipeline)):
            raise TypeError(f"a pipeline's first stage must be a vision-stage compressor, got {self.vision!r}")
        if not isinstance(self.llm, InLLMCompressor):
            raise TypeError(f"a pipeline's second stage must be an in-LLM compressor, got {self.llm!r}")
        # The packing options are the vision stage's: mirror them so adapters reading them see it.
        object.__setattr__(self, "layout", self.vision.layout)
        object.__setattr__(self, "crop_order", getattr(self.vision, "crop_order", "forward"))
        super().__post_init__()

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"{self.vision.name}+{self.llm.name}"

    def score_request(self):
        return self.vision.score_request()

    def check_geometry(self, tokens_per_view: int) -> None:
        self.vision.check_geometry(tokens_per_view)

    def newline_policy(self) -> str:
        return self.vision.newline_policy()

    def token_count(self, layout):
        return self.vision.token_count(layout)

    def select(self, layout, scores, views):
        return self.vision.select(layout, scores, views)

    def compress(self, *args, **kwargs):
        return self.vision.compress(*args, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "vision": self.vision.to_dict(), "llm": self.llm.to_dict()}


def compose(vision: Compressor, llm: InLLMCompressor) -> Pipeline:
    """The pipeline of two configured stages (no budget split: each keeps its own ratio)."""
    return Pipeline(vision=vision, llm=llm)


def split_budget(ratio: float, vision_ratio: float | None = None) -> tuple[float, float]:
    """``(R_v, R_llm)`` with ``R_v·R_llm = R``: ``R_v = √R`` unless ``vision_ratio`` is given."""
    _check_ratio(ratio)
    rv = math.sqrt(ratio) if vision_ratio is None else vision_ratio
    _check_ratio(rv, "vision_ratio")
    if rv < ratio:
        raise ValueError(f"vision_ratio {rv!r} is below the overall retention_ratio {ratio!r}; "
                         "the in-LLM stage cannot keep more than it receives")
    return rv, min(1.0, ratio / rv)


def build_pipeline(name: str, **options: Any) -> Pipeline:
    """``build_pipeline("globalcom2+fastv", retention_ratio=0.1, k=2)``; see the module
    docstring for how ``retention_ratio`` is split. Unknown options raise, listing the valid."""
    v_name, m_name = split_name(name)
    v_cls, m_cls = COMPRESSORS[v_name], COMPRESSORS[m_name]
    options = {k: val for k, val in options.items() if val is not None}
    valid = pipeline_option_names(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise TypeError(f"{name} does not take option(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
    v_fields, m_fields = set(option_names(v_name)), set(option_names(m_name))
    v_opts = {k: val for k, val in options.items() if k in v_fields}
    m_opts = {k: val for k, val in options.items() if k in m_fields - v_fields - set(_VISION_SIDE)}
    if m_cls.uses_ratio and "retention_ratio" in v_fields:
        ratio = options.get("retention_ratio", v_cls.__dataclass_fields__["retention_ratio"].default)
        v_opts["retention_ratio"], m_opts["retention_ratio"] = split_budget(ratio, options.get("vision_ratio"))
    elif m_cls.uses_ratio and "retention_ratio" in options:  # a vision stage without a ratio keeps all
        m_opts["retention_ratio"] = options["retention_ratio"]
    return Pipeline(vision=v_cls(**v_opts), llm=m_cls(**m_opts))

