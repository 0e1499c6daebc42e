"""lmms-eval ``--model_args`` → a compressor, with the checks of our command lines.

``compression=globalcom2,retention_ratio=0.25,tau=10,alpha=0.5,layout=reference`` is the
``key=value`` spelling of ``--compression globalcom2 --retention-ratio 0.25 --tau 10 --alpha 0.5
--layout reference``: the same names (``tau``, alias ``compression_temperature``, is the budget
softmax temperature τ), the same defaults, and the same refusals — an unknown method, an option
the method does not take, a value out of range. Nothing here imports lmms-eval.
"""

from __future__ import annotations

from typing import Any

from llava.compression import COMPRESSORS, Compressor, build_compressor, option_names
from llava.compression.cli import option_args, option_value
from llava.compression.methods import is_pipeline_name
from llava.compression.pipeline import split_name

#: model argument → the method option it sets (the flags' names; ``compression_temperature``
#: is the flags' alias of ``tau``).
COMPRESSION_ARGS: dict[str, str] = {**option_args(), "compression_temperature": "temperature"}
_ARG_OF = {option: arg for arg, option in option_args().items()}


def _arg_names(option: str) -> str:
    """How a method option is spelled as a model argument (``temperature`` → ``tau``)."""
    return _ARG_OF.get(option, option)


def compressor_from_model_args(compression: str, args: dict[str, Any]) -> Compressor | None:
    """The compressor ``compression=NAME`` plus the option arguments in ``args`` describe
    (``None`` for ``none``). ``args`` holds only compression arguments (see
    :func:`split_model_args`); ``None`` values mean "the method's default"."""
    name = str(compression)
    if is_pipeline_name(name):
        split_name(name)  # a known vision method + a known in-LLM method, or a ValueError saying so
    elif name not in COMPRESSORS:
        raise ValueError(f"unknown compression method {name!r}; valid: {', '.join(COMPRESSORS)}, "
                         "or a pipeline VISION+LLM such as globalcom2+fastv")
    given: dict[str, Any] = {}
    for arg, value in args.items():
        if value is None:
            continue
        option = COMPRESSION_ARGS[arg]
        if option in given:
            raise ValueError(f"tau and compression_temperature are the same option; give one (got {arg}={value!r})")
        given[option] = value
    bad = sorted(set(given) - set(option_names(name)))
    if bad:
        takes = ", ".join(_arg_names(o) for o in option_names(name))
        raise ValueError(f"compression={name} does not take {', '.join(_arg_names(b) for b in bad)} "
                         f"(it takes: {takes})")
    compressor = build_compressor(name, **{k: option_value(k, v) for k, v in given.items()})
    return None if name == "none" else compressor


def split_model_args(kwargs: dict[str, Any], model: str, known: tuple[str, ...]) -> dict[str, Any]:
    """Pop the compression arguments out of ``kwargs`` and return them; anything left that is
    not in ``known`` is an error (lmms-eval's convention: unknown model arguments raise)."""
    comp = {k: kwargs.pop(k) for k in list(kwargs) if k in COMPRESSION_ARGS}
    if kwargs:
        unknown = ", ".join(sorted(kwargs))
        valid = ", ".join([*known, "compression", *COMPRESSION_ARGS])
        raise TypeError(f"{model}: unknown model argument(s) {unknown}; valid: {valid}")
    return comp
