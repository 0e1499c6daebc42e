"""The checkpoints' tokenizers, loaded so that prompt ids equal the original tree's.

The original tree tokenizes with the *slow* ``LlamaTokenizer`` (``use_fast=False``): a
SentencePiece model whose normaliser turns spaces into ``▁`` and adds one ``▁`` in front of
every text ("dummy prefix"). ``tokenizer_image_token`` tokenizes the pieces around
``<image>`` separately, so each piece gets that prefix: ``"\\nWhat"`` becomes ``▁ <0x0A> What``
and a piece that starts with a space, ``" here"``, becomes ``▁▁here`` (two ``▁``).

Fast tokenizers converted for transformers (``Metaspace`` with ``prepend_scheme="first"``)
add the prefix only when the text does not already start with a space, so ``" here"`` loses
one ``▁`` — one token fewer than the original. :func:`load_tokenizer` therefore loads

- ``tokenizer.model`` (what ``liuhaotian/llava-v1.6-*`` ship) with
  :class:`SentencePieceLlamaTokenizer`, the slow tokenizer's behaviour on the SentencePiece
  library itself (``legacy`` as ``tokenizer_config.json`` says);
- a ``tokenizer.json`` (llava-hf folders, our conversions) as it is, with
  :func:`sentencepiece_prefix_fix` telling ``tokenizer_image_token`` how to restore the
  dummy prefix the pipeline drops.
"""

from __future__ import annotations

import os

from transformers import AutoTokenizer, PreTrainedTokenizerFast
from transformers.tokenization_utils_sentencepiece import SentencePieceBackend

from llava.utils import read_json

SPIECE_UNDERLINE = "▁"


class SentencePieceLlamaTokenizer(SentencePieceBackend):
    """LLaMA's slow tokenizer: ``[BOS] + SentencePiece(text)``.

    ``legacy=True``: every text between special tokens gets SentencePiece's dummy prefix.
    ``legacy=False``: the prefix is added once, at the start of the whole text, and not again
    after a special token (what transformers' ``LlamaTokenizer(legacy=False)`` did).
    """

    vocab_files_names = {"vocab_file": "tokenizer.model"}
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(
        self,
        vocab_file: str,
        unk_token: str = "<unk>",
        bos_token: str = "<s>",
        eos_token: str = "</s>",
        pad_token: str | None = None,
        add_bos_token: bool = True,
        add_eos_token: bool = False,
        legacy: bool = True,
        **kwargs,
    ):
        self.add_bos_token, self.add_eos_token = add_bos_token, add_eos_token
        pattern = {(True, False): "bos", (False, True): "eos", (True, True): "bos_eos"}.get(
            (add_bos_token, add_eos_token), "none"
        )
        kwargs.setdefault("special_tokens_pattern", pattern)
        kwargs.setdefault("clean_up_tokenization_spaces", False)
        super().__init__(
            vocab_file=vocab_file, unk_token=unk_token, bos_token=bos_token, eos_token=eos_token,
            pad_token=pad_token, legacy=legacy, add_bos_token=add_bos_token, add_eos_token=add_eos_token, **kwargs,
        )

    def tokenize(self, text: str, **kwargs) -> list[str]:
        if self.legacy or not text:
            return super().tokenize(text, **kwargs)
        tokens = super().tokenize(SPIECE_UNDERLINE + text.replace(SPIECE_UNDERLINE, " "), **kwargs)
        if len(tokens) > 1 and tokens[0] == SPIECE_UNDERLINE and tokens[1] in self.all_special_tokens:
            tokens = tokens[1:]
        return tokens


def _read_json(path: str) -> dict:
    """A tokenizer settings file, ``{}`` when the checkpoint has none."""
    return read_json(path) if os.path.isfile(path) else {}


def _token_str(value) -> str | None:
    """A special token as ``tokenizer_config.json`` writes it (a string or an AddedToken dict)."""
    if isinstance(value, dict):
        return value.get("content")
    return value


def load_tokenizer(model_path: str):
    """The checkpoint's tokenizer (see the module docstring for which file wins and why)."""
    json_file = os.path.join(model_path, "tokenizer.json")
    sp_file = os.path.join(model_path, "tokenizer.model")
    if not (os.path.isfile(json_file) or os.path.isfile(sp_file)):
        raise FileNotFoundError(f"no tokenizer in {model_path}: expected tokenizer.json or tokenizer.model")
    cfg = _read_json(os.path.join(model_path, "tokenizer_config.json"))
    special = _read_json(os.path.join(model_path, "special_tokens_map.json"))
    if os.path.isfile(json_file):
        return _load_tokenizers_json(model_path, json_file)
    names = ("unk_token", "bos_token", "eos_token", "pad_token")
    tokens = {n: _token_str(cfg.get(n, special.get(n))) for n in names if cfg.get(n, special.get(n)) is not None}
    tok = SentencePieceLlamaTokenizer(
        sp_file, legacy=bool(cfg.get("legacy", True)),
        add_bos_token=bool(cfg.get("add_bos_token", True)), add_eos_token=bool(cfg.get("add_eos_token", False)),
        model_max_length=cfg.get("model_max_length", int(1e30)), padding_side=cfg.get("padding_side", "right"),
        **tokens,
    )
    added = cfg.get("added_tokens_decoder") or {}
    extra = [v["content"] for k, v in sorted(added.items(), key=lambda kv: int(kv[0])) if int(k) >= tok.vocab_size]
    if extra:
        tok.add_tokens(extra, special_tokens=True)
    return tok


def _load_tokenizers_json(model_path: str, json_file: str):
    """A ``tokenizer.json`` exactly as written: its normaliser/pre-tokenizer are not rebuilt
    from the class defaults (transformers' ``LlamaTokenizer`` would rebuild them)."""
    tok = AutoTokenizer.from_pretrained(model_path, use_fast=True)
    if tok.backend_tokenizer.to_str() != PreTrainedTokenizerFast(tokenizer_file=json_file).backend_tokenizer.to_str():
        from tokenizers import Tokenizer

        tok._tokenizer = Tokenizer.from_file(json_file)
    return tok


def _drops_dummy_prefix(tokenizer) -> bool:
    """Whether ``tokenizer`` adds no ``▁`` in front of a text that starts with a space, where
    SentencePiece would (``" x"`` → ``▁x`` instead of ``▁▁x``). Probed once per tokenizer."""
    cached = getattr(tokenizer, "_llava_drops_dummy_prefix", None)
    if cached is not None:
        return cached
    drops = False
    if isinstance(tokenizer, PreTrainedTokenizerFast):
        pre = tokenizer.backend_tokenizer.pre_tokenizer
        if pre is not None and "Metaspace" in repr(pre):
            a = tokenizer(" x", add_special_tokens=False).input_ids
            b = tokenizer("x", add_special_tokens=False).input_ids
            drops = a == b
    tokenizer._llava_drops_dummy_prefix = drops
    return drops


def sentencepiece_prefix_fix(tokenizer, chunk: str) -> str:
    """``chunk`` rewritten so that ``tokenizer`` gives SentencePiece's ids for it: a leading
    space gets the explicit ``▁`` the tokenizer would otherwise drop."""
    if chunk.startswith(" ") and _drops_dummy_prefix(tokenizer):
        return SPIECE_UNDERLINE + chunk
    return chunk


__all__ = ["SentencePieceLlamaTokenizer", "load_tokenizer", "sentencepiece_prefix_fix"]
