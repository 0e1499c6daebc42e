"""VQA-style answer normalisation and soft accuracy (TextVQA, VQAv2, VizWiz).

The normalisation follows the well-known VQA evaluation rules, applied in this order:

1. lower-case; drop commas and question marks (so ``"1,000"`` -> ``"1000"``); split a
   possessive ``'s`` off its word (``"man's"`` -> ``"man 's"``); newlines/tabs -> spaces.
2. punctuation (``; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? !``): removed outright when the text
   contains it next to a space or contains a ``digit,digit`` pattern, otherwise replaced by a
   space; then every period *not followed by a digit* is removed (``"cat."`` -> ``"cat"``,
   ``"3.5"`` stays).
3. per word: number words ``none, zero … ten`` -> digits, articles ``a an the`` dropped,
   apostrophe-less contractions restored (``"dont"`` -> ``"don't"``).

Soft accuracy (:class:`TextVQAAccuracyEvaluator`): with ``n`` (normally 10) human answers, a
prediction scores the mean over the ``n`` leave-one-out subsets of ``min(1, matches / 3)``,
where ``matches`` counts the subset's answers equal to the prediction after normalisation.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Iterable, Sequence

# Contractions as written with apostrophes.  Forms whose apostrophe-less spelling is an ordinary
# English word (we'll -> well, it's -> its, we're -> were, i'll -> ill, she'll -> shell, ...) are
# deliberately absent, as in the standard VQA evaluation.
_CONTRACTIONS_WITH_APOSTROPHES = """
aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've hasn't haven't
he'd he'd've he's how'd how'll how's i'd've i'm i've isn't it'd it'd've it'll let's ma'am
mightn't mightn't've might've mustn't must've needn't not've o'clock oughtn't 'ow's'at shan't
she'd've she's should've shouldn't shouldn't've somebody'd somebody'd've somebody'll somebody's
someone'd someone'd've someone'll someone's something'd something'd've something'll that's
there'd there'd've there're there's they'd they'd've they'll they're they've 'twas wasn't we'd've
we've weren't what'll what're what's what've when's where'd where's where've who'd who'd've
who'll who's who've why'll why're why's won't would've wouldn't wouldn't've y'all y'all'll
y'all'd've you'd you'd've you'll you're you've
""".split()


def _build_contractions(words: Iterable[str]) -> dict[str, str]:
    """Map every spelling with at least one apostrophe dropped back to the full contraction."""
    table: dict[str, str] = {}
    for word in words:
        positions = [i for i, ch in enumerate(word) if ch == "'"]
        for k in range(1, len(positions) + 1):
            for drop in itertools.combinations(positions, k):
                variant = "".join(ch for i, ch in enumerate(word) if i not in drop)
                table[variant] = word
    return table


CONTRACTIONS: dict[str, str] = _build_contractions(_CONTRACTIONS_WITH_APOSTROPHES)

NUMBER_WORDS: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}

ARTICLES = frozenset({"a", "an", "the"})

PUNCTUATION = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",",
               "?", "!"]

_DIGIT_COMMA_DIGIT = re.compile(r"(\d)(,)(\d)")
# A period that is not followed by a digit.  (The standard tool writes this with a mistyped
# look-behind that in fact never fires, so only the look-ahead matters; we keep that behaviour.)
_PERIOD_NOT_BEFORE_DIGIT = re.compile(r"\.(?!\d)")


class EvalAIAnswerProcessor:
    """Callable normalising one answer string the way the VQA/TextVQA evaluation does."""

    def word_tokenize(self, text: str) -> str:
        text = text.lower()
        text = text.replace(",", "").replace("?", "").replace("'s", " 's")
        return text.strip()

    def process_punctuation(self, text: str) -> str:
        out = text
        drop_all = _DIGIT_COMMA_DIGIT.search(text) is not None
        for p in PUNCTUATION:
            if drop_all or (p + " ") in text or (" " + p) in text:
                out = out.replace(p, "")
            else:
                out = out.replace(p, " ")
        return _PERIOD_NOT_BEFORE_DIGIT.sub("", out)

    def process_digit_article(self, text: str) -> str:
        words = []
        for word in text.lower().split():
            word = NUMBER_WORDS.get(word, word)
            if word in ARTICLES:
                continue
            words.append(CONTRACTIONS.get(word, word))
        return " ".join(words)

    def __call__(self, answer: str) -> str:
        text = self.word_tokenize(str(answer))
        text = text.replace("\n", " ").replace("\t", " ").strip()
        text = self.process_punctuation(text)
        return self.process_digit_article(text)


_DEFAULT_PROCESSOR = EvalAIAnswerProcessor()


def normalize_answer(answer: str) -> str:
    """Normalise one answer with the standard VQA rules (module docstring)."""
    return _DEFAULT_PROCESSOR(answer)


def soft_scores(gt_answers: Sequence[str], processor=None) -> dict[str, float]:
    """Soft accuracy of every distinct (normalised) ground-truth answer.

    Answers not in the returned dict score 0.  With ``n >= 2`` answers each candidate gets the
    mean over the ``n`` leave-one-out subsets of ``min(1, matches/3)``; with a single answer it
    gets ``min(1, matches/3)`` directly.
    """
    proc = processor or _DEFAULT_PROCESSOR
    answers = [proc(a) for a in gt_answers]
    counts = Counter(answers)
    n = len(answers)
    scores: dict[str, float] = {}
    for cand, c in counts.items():
        if n < 2:
            scores[cand] = min(1.0, c / 3.0)
            continue
        # leaving out one of the c matching answers leaves c-1 matches; any other leaves c
        total = c * min(1.0, (c - 1) / 3.0) + (n - c) * min(1.0, c / 3.0)
        scores[cand] = total / n
    return scores


class TextVQAAccuracyEvaluator:
    """VQA soft accuracy over a list of ``{"pred_answer": str, "gt_answers": [str, ...]}``."""

    def __init__(self, processor=None):
        self.answer_processor = processor or EvalAIAnswerProcessor()

    def score_one(self, pred_answer: str, gt_answers: Sequence[str]) -> float:
        if not gt_answers:
            raise ValueError("no ground-truth answers")
        return soft_scores(gt_answers, self.answer_processor).get(self.answer_processor(pred_answer), 0.0)

    def eval_pred_list(self, pred_list: Sequence[dict]) -> float:
        if not pred_list:
            return 0.0
        total = sum(self.score_one(e["pred_answer"], e["gt_answers"]) for e in pred_list)
        return total / len(pred_list)


# Same scorer for VQAv2 / VizWiz-style annotations.
VQAAccuracyEvaluator = TextVQAAccuracyEvaluator
