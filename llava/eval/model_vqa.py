"""Free-form VQA generation (MM-Vet, LLaVA-Bench).

``python -m llava.eval.model_vqa --model-path DIR --question-file llava-mm-vet.jsonl
--image-folder mm-vet/images --answers-file A.jsonl [--compression ...]``

Question file: JSON lines ``{"question_id", "image", "text"}``; ``text`` is asked as is after the
image (no instruction appended) and answers may be long (``--max-new-tokens`` defaults to 1024).
The answer's ``prompt`` is the question's ``text`` as given, as in the original driver.
Answers, resuming, errors, batching and data-parallel runs: see :mod:`llava.eval.runs`.
"""

from __future__ import annotations

from llava.eval.model_vqa_loader import parse_question
from llava.eval.runs.driver import run
from llava.eval.runs.errors import exit_on_error
from llava.eval.runs.flags import build_parser
from llava.eval.runs.questions import read_jsonl_questions

DRIVER = "model_vqa"


def main(argv=None) -> dict:
    args = build_parser(__doc__, max_new_tokens=1024).parse_args(argv)
    with exit_on_error():
        items = read_jsonl_questions(args.question_file, parse_question)
        return run(args, items, driver=DRIVER)


if __name__ == "__main__":
    main()
