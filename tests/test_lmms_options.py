"""lmms-eval model arguments → compressor: the CLIs' names, defaults and refusals."""

from __future__ import annotations

import pytest

from llava.compression import FasterVLM, GlobalCom2, UniformRandom, build_compressor
from llava.compression.cli import option_value
from llava.lmms.options import COMPRESSION_ARGS, compressor_from_model_args, split_model_args


def parse(arg_string: str):
    """``key=value,...`` as lmms-eval's ``simple_parse_args_string`` types it (numbers become
    int when all digits, float otherwise; ``-1`` is not all digits)."""
    def typed(v: str):
        if v.lower() in ("true", "false"):
            return v.lower() == "true"
        if v.isnumeric():
            return int(v)
        try:
            return float(v)
        except ValueError:
            return v

    args = dict(kv.split("=", 1) for kv in arg_string.split(","))
    return {k: typed(v) for k, v in args.items()}


def build(arg_string: str):
    args = parse(arg_string)
    name = args.pop("compression")
    return compressor_from_model_args(name, split_model_args(args, "Model", ()))


def test_model_args_build_what_the_cli_flags_build():
    c = build("compression=globalcom2,retention_ratio=0.1,tau=5,alpha=0.3,allocation=ntopk,layout=reference,"
              "score=cls_softmax,score_layer=-2")
    assert c == GlobalCom2(retention_ratio=0.1, temperature=5.0, alpha=0.3, allocation="ntopk", layout="reference",
                           score="cls_softmax", score_layer=-2)
    assert isinstance(c.score_layer, int) and isinstance(c.temperature, float)
    assert build("compression=globalcom2,compression_temperature=20").temperature == 20.0
    assert build("compression=fastervlm,retention_ratio=0.5") == FasterVLM(retention_ratio=0.5)
    assert build("compression=uniform_random,seed=3") == UniformRandom(seed=3)
    assert build("compression=none") is None


def test_defaults_are_the_methods_defaults():
    c = build("compression=globalcom2")
    assert c == build_compressor("globalcom2")
    assert (c.retention_ratio, c.temperature, c.alpha, c.allocation, c.score, c.score_layer, c.layout) == (
        0.25, 10.0, 0.5, "softmax_sum", "cls_logits", -1, "faithful")


def test_refusals_name_the_argument():
    with pytest.raises(ValueError, match=r"unknown compression method 'gc2'; valid: none, globalcom2"):
        build("compression=gc2")
    with pytest.raises(ValueError, match=r"compression=fastervlm does not take alpha, tau \(it takes: layout, crop_order, "
                                         r"retention_ratio, budget, score, score_layer\)"):
        build("compression=fastervlm,alpha=0.3,tau=4")
    with pytest.raises(ValueError, match="compression=none does not take retention_ratio"):
        build("compression=none,retention_ratio=0.5")
    with pytest.raises(ValueError, match=r"retention_ratio must be in \(0, 1\], got 1.5"):
        build("compression=globalcom2,retention_ratio=1.5")
    with pytest.raises(ValueError, match="layout must be one of faithful, reference; got 'packed'"):
        build("compression=globalcom2,layout=packed")
    with pytest.raises(ValueError, match="score_layer must be an integer, got 1.5"):
        build("compression=globalcom2,score_layer=1.5")
    with pytest.raises(ValueError, match="retention_ratio must be a number, got 'half'"):
        build("compression=globalcom2,retention_ratio=half")
    with pytest.raises(ValueError, match="same option"):
        build("compression=globalcom2,tau=5,compression_temperature=6")


def test_unknown_model_arguments_raise():
    with pytest.raises(TypeError, match=r"LlavaGC2: unknown model argument\(s\) temperature, typo; valid: pretrained"):
        split_model_args({"temperature": 0.5, "typo": 1, "alpha": 0.5}, "LlavaGC2", ("pretrained",))
    rest = {"alpha": 0.5, "tau": 3}
    assert split_model_args(rest, "M", ()) == {"alpha": 0.5, "tau": 3}
    # every compression flag of our CLIs is a model argument of the same name (and nothing else)
    import argparse

    from llava.compression.cli import add_compression_args

    flags = {opt[2:].replace("-", "_") for a in add_compression_args(argparse.ArgumentParser())._actions
             for opt in a.option_strings if opt.startswith("--") and opt != "--help"}
    assert set(COMPRESSION_ARGS) | {"compression"} == flags
    assert {"retention_ratio", "tau", "compression_temperature", "alpha", "layout"} <= set(COMPRESSION_ARGS)


@pytest.mark.parametrize("option,raw,expected", [
    ("score_layer", -1.0, -1), ("score_layer", "-2", -2), ("seed", 7, 7), ("retention_ratio", 1, 1.0),
    ("alpha", "0.25", 0.25), ("layout", "reference", "reference"),
])
def test_option_values_take_the_flag_types(option, raw, expected):
    value = option_value(option, raw)
    assert value == expected and type(value) is type(expected)


def test_booleans_are_not_numbers():
    with pytest.raises(ValueError, match="alpha must be a number, got True"):
        option_value("alpha", True)
    with pytest.raises(ValueError, match="seed must be an integer, got True"):
        option_value("seed", True)


@pytest.mark.parametrize("raw,expected", [("false", False), ("True", True), (False, False), ("0", False), ("on", True)])
def test_switches_take_true_or_false(raw, expected):
    """``sparsevlm_recycle=false`` from an lmms-eval argument string is the switch, not a string."""
    assert option_value("recycle", raw) is expected
    assert compressor_from_model_args("sparsevlm", {"sparsevlm_recycle": raw}).recycle is expected
    with pytest.raises(ValueError, match="recycle: expected true or false, got 'maybe'"):
        option_value("recycle", "maybe")


def test_pipelines_are_model_arguments_too():
    comp = compressor_from_model_args("globalcom2+fastv", {"retention_ratio": "0.1", "fastv_k": "1"})
    assert comp == build_compressor("globalcom2+fastv", retention_ratio=0.1, k=1)
    with pytest.raises(ValueError, match="unknown pipeline 'globalcom2\\+foo'"):
        compressor_from_model_args("globalcom2+foo", {})
