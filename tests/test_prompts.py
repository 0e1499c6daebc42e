"""Prompts and prompt ids exactly as the original tree builds them (templates text for text,
ids of the slow SentencePiece tokenizer around ``<image>``)."""

from __future__ import annotations

import json

import pytest

from llava.constants import IMAGE_TOKEN_INDEX
from llava.conversation import build_chat_prompt, conv_templates, default_conv_mode, get_conv_template
from llava.mm_utils import tokenizer_image_token

Q = "<image>\nWhat is shown?"
HUMAN = ("A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, "
         "detailed, and polite answers to the human's questions.")
USER = HUMAN.replace("human", "user")
LLAVA_L2_SYS = ("You are a helpful language and vision assistant. You are able to understand the visual content that "
                "the user provides, and assist the user with a variety of tasks using natural language.")

# One user turn + the open assistant turn, rendered by the original tree (written out by hand).
RENDERED = {
    "llava_v1": f"{HUMAN} USER: {Q} ASSISTANT:",
    "vicuna_v1": f"{USER} USER: {Q} ASSISTANT:",
    "v1": f"{USER} USER: {Q} ASSISTANT:",
    "mistral_instruct": f"[INST] {Q} [/INST]",
    "chatml_direct": f"<|im_start|>system\nAnswer the questions.<|im_end|><|im_start|>user\n{Q}<|im_end|>"
                     "<|im_start|>assistant\n",
    "mistral_direct": f"<|im_start|>system\nAnswer the questions.<|im_end|><|im_start|>user\n{Q}<|im_end|>"
                      "<|im_start|>assistant\n",
    "llava_llama_2": f"[INST] <<SYS>>\n{LLAVA_L2_SYS}\n<</SYS>>\n\n{Q} [/INST]",
    "llava_v0": f"{HUMAN}###Human: {Q}###Assistant:",
    "plain": "<image>\nWhat is shown?\n",
    "mpt": "<|im_start|>system\nA conversation between a user and an LLM-based AI assistant. The assistant gives "
           f"helpful and honest answers.<|im_end|><|im_start|>user\n{Q}<|im_end|><|im_start|>assistant\n",
}


@pytest.mark.parametrize("mode", sorted(RENDERED))
def test_each_template_renders_the_original_prompt(mode):
    conv = get_conv_template(mode)
    conv.append_message(conv.roles[0], Q)
    conv.append_message(conv.roles[1], None)
    assert conv.get_prompt() == RENDERED[mode]


def test_template_table_is_the_originals():
    assert set(conv_templates) == {
        "default", "v0", "v1", "vicuna_v1", "llama_2", "mistral_instruct", "chatml_direct", "mistral_direct",
        "plain", "v0_plain", "llava_v0", "v0_mmtag", "llava_v1", "v1_mmtag", "llava_llama_2", "mpt",
    }
    assert conv_templates["default"] is conv_templates["v0"]  # the original's "default" is v0, not v1
    # The v0 template carries the original's few-shot exchange.
    assert get_conv_template("v0").get_prompt().startswith(HUMAN + "###Human: What are the key differences")


def test_multi_turn_and_ui_tuple_render_like_the_original():
    conv = get_conv_template("llava_v1")
    conv.append_message(conv.roles[0], ("What is it?<image>", None, "Default"))
    conv.append_message(conv.roles[1], "A cat.")
    conv.append_message(conv.roles[0], "Colour?")
    conv.append_message(conv.roles[1], None)
    assert conv.get_prompt() == f"{HUMAN} USER: <image>\nWhat is it? ASSISTANT: A cat.</s>USER: Colour? ASSISTANT:"
    conv = get_conv_template("mistral_instruct")
    conv.append_message(conv.roles[0], "Hi")
    conv.append_message(conv.roles[1], "Hello")
    assert conv.get_prompt() == "[INST] Hi [/INST] Hello </s>"


@pytest.mark.parametrize("name,mode", [
    ("llava-v1.6-vicuna-7b", "llava_v1"), ("llava-v1.6-vicuna-13b", "llava_v1"),
    ("llava-v1.6-mistral-7b", "mistral_instruct"), ("llava-v1.6-34b", "chatml_direct"),
    ("llava-llama-2-13b-chat-lightning-preview", "llava_llama_2"), ("llava-v1.5-7b", "llava_v1"),
    ("LLaVA-Lightning-MPT-7B-preview", "mpt"), ("tiny-llava", "llava_v0"),
])
def test_default_conv_mode_is_the_original_run_llavas(name, mode):
    assert default_conv_mode(name) == mode


def test_build_chat_prompt_puts_the_image_first():
    class Cfg:
        mm_use_im_start_end = False

    assert build_chat_prompt("What is shown?", Cfg(), "llava_v1") == RENDERED["llava_v1"]


# ----------------------------------------------------------------------------- token ids


@pytest.fixture(scope="module")
def sp_folder(tmp_path_factory):
    """A SentencePiece tokenizer folder like liuhaotian/llava-v1.6-* (legacy=False)."""
    from llava.testing.tiny_checkpoint import write_tokenizer

    return write_tokenizer(str(tmp_path_factory.mktemp("sp")))


def _reference_ids(sp_bytes: bytes, prompt: str) -> list[int]:
    """The original ``tokenizer_image_token`` with the slow tokenizer, re-derived on the
    SentencePiece library: each piece is ``[BOS] + sp.encode(piece)`` (dummy prefix included),
    BOS kept on the first piece only, -200 between pieces."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_proto=sp_bytes)
    out: list[int] = [1]
    for i, piece in enumerate(prompt.split("<image>")):
        if i:
            out.append(IMAGE_TOKEN_INDEX)
        out += sp.encode(piece)
    return out


PROMPTS = [RENDERED[m] for m in ("llava_v1", "vicuna_v1", "mistral_instruct", "llava_llama_2", "llava_v0")] + [
    f"{HUMAN} USER: What is <image> here? ASSISTANT:",  # mid-sentence: the piece after starts with a space
    f"{USER} USER: <image>  two spaces ASSISTANT:",
]


@pytest.mark.parametrize("prompt", PROMPTS)
def test_slow_and_fast_tokenizers_give_the_original_ids(sp_folder, prompt, tmp_path):
    from transformers import AutoTokenizer

    from llava.model.tokenizer import SentencePieceLlamaTokenizer, load_tokenizer

    with open(f"{sp_folder}/tokenizer.model", "rb") as f:
        ref = _reference_ids(f.read(), prompt)
    slow = load_tokenizer(sp_folder)
    assert isinstance(slow, SentencePieceLlamaTokenizer)
    assert tokenizer_image_token(prompt, slow) == ref
    # transformers' own conversion to a fast tokenizer (what a llava-hf folder ships), loaded
    # from its tokenizer.json as it is: the same ids.
    AutoTokenizer.from_pretrained(sp_folder).save_pretrained(tmp_path)
    (tmp_path / "tokenizer.model").unlink(missing_ok=True)
    fast = load_tokenizer(str(tmp_path))
    assert not isinstance(fast, SentencePieceLlamaTokenizer)
    assert tokenizer_image_token(prompt, fast) == ref


def test_mid_sentence_image_keeps_the_leading_underline(sp_folder):
    """The bug this guards against: the piece after a mid-sentence <image> lost its ``▁``."""
    from llava.model.tokenizer import load_tokenizer

    tok = load_tokenizer(sp_folder)
    ids = tokenizer_image_token("USER: What is <image> here?", tok)
    after = ids[ids.index(IMAGE_TOKEN_INDEX) + 1 :]
    assert tok.convert_ids_to_tokens(after[:1]) == ["▁"]


def test_legacy_flag_is_honoured_after_special_tokens(sp_folder, tmp_path):
    import shutil

    from llava.model.tokenizer import load_tokenizer

    for legacy in (True, False):
        d = tmp_path / str(legacy)
        shutil.copytree(sp_folder, d)
        cfg = json.loads((d / "tokenizer_config.json").read_text())
        (d / "tokenizer_config.json").write_text(json.dumps({**cfg, "legacy": legacy}))
        tok = load_tokenizer(str(d))
        toks = tok.convert_ids_to_tokens(tok("Hi</s>USER: x").input_ids)
        after = toks[toks.index("</s>") + 1]
        # legacy: SentencePiece's dummy prefix again after a special token; not so otherwise.
        assert after.startswith("▁") == legacy


def test_sentencepiece_folder_special_ids(sp_folder):
    from llava.model.tokenizer import load_tokenizer

    tok = load_tokenizer(sp_folder)
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.unk_token_id) == (1, 2, 0, 0)
    assert tok.padding_side == "right" and tok.model_max_length == 4096
    with pytest.raises(FileNotFoundError, match="no tokenizer"):
        load_tokenizer(f"{sp_folder}/no-such-folder")
