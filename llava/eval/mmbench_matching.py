"""Reading an MMBench answer as an option letter.

Default: VLMEvalKit's rule-based matching ("exact matching" policy, no GPT extraction), as its
``can_infer`` was from 2023 until its August 2025 revision:

* :func:`can_infer_option`: replace each of ``.()[],:;!*#{}`` by a space and split on
  whitespace; if exactly one option letter is among the pieces, that letter (the first option
  letter, in A, B, ... order, that is a piece). "Z" (no answer) when no option letter but a ``Z``
  piece is there, or when the answer holds one of VLMEvalKit's refusal sentences.
* :func:`can_infer_text`: otherwise, the option whose text (lower-cased) occurs inside the
  lower-cased answer, if exactly one does.

So "B", "(B) dog", "I think B" and "the dog" (option B = "dog") read as B; "A dog" reads as A
(the article is a piece "A"); "答案：B" and full-width "Ｂ" read as nothing.

``--lenient`` (:func:`parse_choice_lenient`) additionally reads Chinese and English cue words
("答案是B", "Option C"), full-width letters and a unique stand-alone letter.
"""

from __future__ import annotations

import re

REFUSALS = ("Sorry, I can't help with images of people yet.", "I can't process this file.",
            "I'm sorry, but without the image provided", "Cannot determine the answer")
_SEPARATORS = ".()[],:;!*#{}"


def can_infer_option(answer: str, choices: dict) -> str | bool:
    """VLMEvalKit's letter rule (module doc); ``False`` when it reads nothing."""
    if "Failed to obtain answer via API" in answer:
        return False
    if any(refusal in answer for refusal in REFUSALS):
        return "Z"
    mod = answer
    for c in _SEPARATORS:
        mod = mod.replace(c, " ")
    pieces = [x.strip() for x in mod.split()]
    letters = [c for c in choices if c in pieces]
    if len(letters) == 1:
        return letters[0]
    if not letters and "Z" in pieces:
        return "Z"
    return False


def can_infer_text(answer: str, choices: dict) -> str | bool:
    """VLMEvalKit's option-text rule (module doc); ``False`` unless exactly one option text occurs."""
    low = answer.lower()
    found = [k for k, v in choices.items() if str(v).lower() in low]
    return found[0] if len(found) == 1 else False


def can_infer(answer, choices: dict) -> str | bool:
    """The letter VLMEvalKit reads from ``answer`` among ``choices`` (letter -> option), or ``False``."""
    answer = str(answer)
    return can_infer_option(answer, choices) or can_infer_text(answer, choices)


_FULLWIDTH = str.maketrans({chr(0xFF21 + i): chr(0x41 + i) for i in range(26)} |
                           {"（": "(", "）": ")", "：": ":", "。": ".", "，": ",", "、": ","})
_PAREN_LEAD = re.compile(r"^\s*\(([A-Z])\)")
_LETTER_LEAD = re.compile(r"^\s*([A-Z])(?:$|[.:,)])")
_EN_CUE = re.compile(r"(?i:answer|option|choice)\s*(?i:is|should be|would be)?\s*:?\s*\(?([A-Z])(?![A-Za-z])")
_CN_CUE = re.compile(r"(?:答案|选项|选择|应选|选)\s*(?:是|为|应该是|应为|应当是)?\s*:?\s*\(?([A-Z])(?![A-Za-z])")
_NOT_AFTER_ARTICLE = {"or", "and", "is", "was", "seems", "should", "would", "because", "since", "as", "if", "then"}
_STANDALONE = re.compile(r"(?<![A-Za-z])([A-Z])(?![A-Za-z])")


def _norm_text(s: str) -> str:
    return " ".join(str(s).strip().rstrip(".").lower().split())


def parse_choice_lenient(text: str, options: dict[str, str]) -> str | bool:
    """``--lenient``: VLMEvalKit's rule, then cue words, full-width letters, a unique stand-alone letter."""
    hit = can_infer(text, options)
    if hit:
        return hit
    valid = set(options)
    s = str(text).translate(_FULLWIDTH).strip()
    bare = s.rstrip(".").strip()
    if bare in valid:
        return bare
    for rx in (_PAREN_LEAD, _LETTER_LEAD):
        m = rx.match(s)
        if m and m.group(1) in valid:
            return m.group(1)
    cued = {x for rx in (_EN_CUE, _CN_CUE) for x in rx.findall(s)} & valid
    if len(cued) == 1:
        return cued.pop()
    by_text = [k for k, v in options.items() if _norm_text(v) and _norm_text(v) == _norm_text(s)]
    if len(by_text) == 1:
        return by_text[0]
    loose = set()
    for m in _STANDALONE.finditer(s):
        letter = m.group(1)
        if letter == "A":
            nxt = re.match(r" ([a-z]+)", s[m.end():])
            if nxt and nxt.group(1) not in _NOT_AFTER_ARTICLE:
                continue  # "A dog ..." - the English article, not option A
        loose.add(letter)
    loose &= valid
    return loose.pop() if len(loose) == 1 else False
