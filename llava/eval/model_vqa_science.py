"""ScienceQA generation (``llava_test_CQM-A.json``).

``python -m llava.eval.model_vqa_science --model-path DIR --question-file llava_test_CQM-A.json
--image-folder scienceqa/images/test --answers-file A.jsonl --single-pred-prompt [--compression ...]``

Question file: a JSON list of ``{"id", "image" (optional), "conversations": [{"from": "human",
"value": "<image>\\nContext: ...\\nQuestion ...\\nOptions: ..."}, ...]}``. The first human turn is
asked (its ``<image>`` placeholder removed and the image put first); questions without an image
are asked as text only, with no image passed. ``--single-pred-prompt`` appends
"\\nAnswer with the option's letter from the given choices directly.". ``question_id`` of the
answers is the problem id; ``--max-new-tokens`` defaults to 1024, the original driver's fixed value.

The answer's ``prompt`` is what the original driver writes: the question (with the letter
instruction), preceded by ``<image>\\n`` when the problem has an image — the original scorer
counts a problem in the IMG subset by that ``<image>``.

Answers, resuming, errors, batching and data-parallel runs: see :mod:`llava.eval.runs`.
"""

from __future__ import annotations

import json

from llava.eval.runs.driver import run
from llava.eval.runs.errors import RunError, exit_on_error
from llava.eval.runs.flags import build_parser
from llava.eval.runs.questions import Item, add_text_suffix, number_occurrences, read_text

DRIVER = "model_vqa_science"
LETTER_SUFFIX = "\nAnswer with the option's letter from the given choices directly."


def parse_problem(obj, n: int, single_pred_prompt: bool) -> Item:
    if not isinstance(obj, dict):
        return Item(None, error=f"malformed question {n}: not a JSON object", line=n)
    qid = obj.get("id", obj.get("question_id"))
    if qid is None:
        return Item(None, error=f"malformed question {n}: no 'id'", line=n)
    conv = obj.get("conversations")
    first = conv[0] if isinstance(conv, list) and conv and isinstance(conv[0], dict) else None
    if first is None or not isinstance(first.get("value"), str):
        return Item(qid, error=f"malformed question {n}: no 'conversations[0].value'", line=n)
    text = first["value"].replace("<image>", "").strip()
    if single_pred_prompt:
        text = add_text_suffix(text, LETTER_SUFFIX)
    image = obj.get("image") or None
    if image is not None and not isinstance(image, str):
        return Item(qid, error=f"malformed question {n}: 'image' is not a file name", line=n)
    prompt = "<image>\n" + text if image is not None else text
    return Item(qid, message=text, prompt=prompt, image=image, line=n)


def load_questions(path: str, single_pred_prompt: bool = False) -> list[Item]:
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise RunError(f"{path}:{e.lineno}: malformed JSON ({e.msg})") from None
    if isinstance(data, dict):  # {id: problem} is accepted too
        data = [{"id": k, **v} if isinstance(v, dict) else v for k, v in data.items()]
    if not isinstance(data, list):
        raise RunError(f"{path}: expected a JSON list of questions")
    return number_occurrences([parse_problem(obj, n, single_pred_prompt) for n, obj in enumerate(data, 1)])


def main(argv=None) -> dict:
    ap = build_parser(__doc__, max_new_tokens=1024)
    ap.add_argument("--single-pred-prompt", action="store_true",
                    help="append \"Answer with the option's letter from the given choices directly.\"")
    args = ap.parse_args(argv)
    with exit_on_error():
        items = load_questions(args.question_file, args.single_pred_prompt)
        return run(args, items, driver=DRIVER, prompt_options={"single_pred_prompt": args.single_pred_prompt})


if __name__ == "__main__":
    main()
