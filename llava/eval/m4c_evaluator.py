"""VQA answer normalisation and soft accuracy, as LLaVA's ``llava/eval/m4c_evaluator.py`` (MMF's
EvalAI answer processor) computes them — used by TextVQA, VQAv2 and VizWiz.

:class:`EvalAIAnswerProcessor` applies, in this order:

1. ``word_tokenize``: lower-case; drop ``,`` and ``?``; ``'s`` -> ``" 's"``; strip; then newlines
   and tabs become spaces.
2. ``process_punctuation``: each of ``; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? !`` is removed
   if the text has it next to a space (or has a ``digit,digit`` pattern, which step 1 already
   made impossible), else replaced by a space. Then periods not followed by a digit are removed —
   **at most 32 of them**: the original passes ``re.UNICODE`` (= 32) as ``re.sub``'s ``count``.
   (Its pattern also starts with a mistyped look-behind, ``(?!<=\\d)``, which never fires.)
3. ``process_digit_article``: per word, number words ``none zero … ten`` -> digits, articles
   ``a an the`` dropped, then the **fixed contraction table** below. The table is the original's,
   oddities included: ``aint`` -> ``ain't``; ``im``/``ive``/``id've`` are absent (their keys are
   capitalised, ``Im``/``Ive``/``Id've``, and never match lower-cased text); ``somebody'd`` maps to
   ``somebodyd``; ``couldntve`` and the like are not keys.

Soft accuracy (:class:`TextVQAAccuracyEvaluator`, TextVQA): every ground-truth answer list must
have 10 answers; a prediction scores the mean over the 10 leave-one-out subsets of
``min(1, matches / 3)``, summed in the original's order so the float result is bit-identical.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# The original table as data, "key value" per entry (keys with an apostrophe-less spelling first).
_CONTRACTION_TABLE = """
aint ain't | arent aren't | cant can't | couldve could've | couldnt couldn't | couldn'tve couldn't've
couldnt've couldn't've | didnt didn't | doesnt doesn't | dont don't | hadnt hadn't | hadnt've hadn't've
hadn'tve hadn't've | hasnt hasn't | havent haven't | hed he'd | hed've he'd've | he'dve he'd've | hes he's
howd how'd | howll how'll | hows how's | Id've I'd've | I'dve I'd've | Im I'm | Ive I've | isnt isn't
itd it'd | itd've it'd've | it'dve it'd've | itll it'll | let's let's | maam ma'am | mightnt mightn't
mightnt've mightn't've | mightn'tve mightn't've | mightve might've | mustnt mustn't | mustve must've
neednt needn't | notve not've | oclock o'clock | oughtnt oughtn't | ow's'at 'ow's'at | 'ows'at 'ow's'at
'ow'sat 'ow's'at | shant shan't | shed've she'd've | she'dve she'd've | she's she's | shouldve should've
shouldnt shouldn't | shouldnt've shouldn't've | shouldn'tve shouldn't've | somebody'd somebodyd
somebodyd've somebody'd've | somebody'dve somebody'd've | somebodyll somebody'll | somebodys somebody's
someoned someone'd | someoned've someone'd've | someone'dve someone'd've | someonell someone'll
someones someone's | somethingd something'd | somethingd've something'd've | something'dve something'd've
somethingll something'll | thats that's | thered there'd | thered've there'd've | there'dve there'd've
therere there're | theres there's | theyd they'd | theyd've they'd've | they'dve they'd've | theyll they'll
theyre they're | theyve they've | twas 'twas | wasnt wasn't | wed've we'd've | we'dve we'd've | weve we've
werent weren't | whatll what'll | whatre what're | whats what's | whatve what've | whens when's
whered where'd | wheres where's | whereve where've | whod who'd | whod've who'd've | who'dve who'd've
wholl who'll | whos who's | whove who've | whyll why'll | whyre why're | whys why's | wont won't
wouldve would've | wouldnt wouldn't | wouldnt've wouldn't've | wouldn'tve wouldn't've | yall y'all
yall'll y'all'll | y'allll y'all'll | yall'd've y'all'd've | y'alld've y'all'd've | y'all'dve y'all'd've
youd you'd | youd've you'd've | you'dve you'd've | youll you'll | youre you're | youve you've
"""
CONTRACTIONS: dict[str, str] = dict(
    entry.split() for entry in _CONTRACTION_TABLE.replace("\n", " | ").split("|") if entry.strip())

NUMBER_MAP: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
ARTICLES = ("a", "an", "the")
PUNCTUATIONS = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`",
                ",", "?", "!")
PERIOD_STRIP_MAX = re.UNICODE  # the original's re.sub(..., in_text, re.UNICODE): count = 32
_PERIOD_STRIP = re.compile(r"\.(?!\d)")
_COMMA_STRIP = re.compile(r"(?<=\d),+(?=\d)")


class EvalAIAnswerProcessor:
    """Callable normalising one answer string exactly as LLaVA's VQA/TextVQA evaluation does."""

    def word_tokenize(self, word: str) -> str:
        word = word.lower().replace(",", "").replace("?", "").replace("'s", " 's")
        return word.strip()

    def process_punctuation(self, in_text: str) -> str:
        out = in_text
        digit_comma = _COMMA_STRIP.search(in_text) is not None
        for p in PUNCTUATIONS:
            if (p + " ") in in_text or (" " + p) in in_text or digit_comma:
                out = out.replace(p, "")
            else:
                out = out.replace(p, " ")
        return _PERIOD_STRIP.sub("", out, count=PERIOD_STRIP_MAX)

    def process_digit_article(self, in_text: str) -> str:
        words = [NUMBER_MAP.get(w, w) for w in in_text.lower().split()]
        words = [w for w in words if w not in ARTICLES]
        return " ".join(CONTRACTIONS.get(w, w) for w in words)

    def __call__(self, item: str) -> str:
        item = self.word_tokenize(item)
        item = item.replace("\n", " ").replace("\t", " ").strip()
        item = self.process_punctuation(item)
        return self.process_digit_article(item)


_PROCESSOR = EvalAIAnswerProcessor()


def normalize_answer(answer: str) -> str:
    """Normalise one answer with :class:`EvalAIAnswerProcessor`."""
    return _PROCESSOR(answer)


class TextVQAAccuracyEvaluator:
    """VQA soft accuracy over ``[{"pred_answer": str, "gt_answers": [10 str]}, ...]`` (a fraction)."""

    def __init__(self):
        self.answer_processor = EvalAIAnswerProcessor()

    def answer_scores(self, raw_answers: Sequence[str]) -> dict[str, float]:
        """Soft score of every distinct normalised ground-truth answer (others score 0)."""
        answers = [self.answer_processor(a) for a in raw_answers]
        if len(answers) != 10:
            raise ValueError(f"expected 10 ground-truth answers, got {len(answers)}")
        scores = {}
        for cand in set(answers):
            # leave answer i out; count the other nine that equal the candidate
            accs = [min(1, (sum(a == cand for a in answers) - (answers[i] == cand)) / 3) for i in range(10)]
            scores[cand] = sum(accs) / len(accs)
        return scores

    def score_one(self, pred_answer: str, gt_answers: Sequence[str]) -> float:
        return self.answer_scores(gt_answers).get(self.answer_processor(pred_answer), 0.0)

    def eval_pred_list(self, pred_list: Sequence[dict]) -> float:
        scores = [self.score_one(e["pred_answer"], e["gt_answers"]) for e in pred_list]
        return sum(scores) / len(scores)
