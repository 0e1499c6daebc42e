"""Short-answer VQA generation: VQAv2, GQA, VizWiz, TextVQA, POPE, MME.

``python -m llava.eval.model_vqa_loader --model-path DIR --question-file Q.jsonl
--image-folder IMGS --answers-file A.jsonl [--compression globalcom2 --retention-ratio 0.25]``

Question file: JSON lines ``{"question_id", "image", "text"[, "category"]}``. ``text`` is asked
as is after the image: LLaVA's question files already end with the benchmark's instruction
("\\nAnswer the question using a single word or phrase.", VizWiz's "unanswerable" line, TextVQA's
"Reference OCR token: ..." line), so nothing is appended here.

``--drop-ocr-line`` reproduces the released GlobalCom² evaluation, which asks without the third
line of the prompt (``<image>`` / question / OCR line / instruction → the OCR line is dropped);
like the release it needs that line to exist: a question of fewer than three text lines is
recorded as an error.

The answer's ``prompt`` is the question's ``text`` as given (also with ``--drop-ocr-line``), as
in the original LLaVA driver and the GlobalCom² release. Answers, resuming, errors, batching,
chunking and data-parallel runs: see :mod:`llava.eval.runs`.
"""

from __future__ import annotations

from llava.eval.runs.driver import run
from llava.eval.runs.errors import exit_on_error
from llava.eval.runs.flags import build_parser
from llava.eval.runs.questions import Item, read_jsonl_questions

DRIVER = "model_vqa_loader"


def drop_ocr_line(text: str) -> str:
    """The question without its second text line (the prompt's third line after ``<image>``)."""
    lines = text.split("\n")
    if len(lines) < 3:
        raise ValueError(f"--drop-ocr-line needs a question of at least 3 lines, got {len(lines)}")
    return "\n".join(lines[:1] + lines[2:])


def parse_question(obj: dict, line: int, drop_ocr: bool = False) -> Item:
    text = obj["text"]
    image = obj["image"]
    if not isinstance(text, str):
        raise ValueError("'text' is not a string")
    if not isinstance(image, str) or not image:
        raise ValueError("'image' is not a file name")
    if "question_id" not in obj:
        raise KeyError("question_id")
    message = text.replace("<image>", "").strip()
    if drop_ocr:
        message = drop_ocr_line(message)
    return Item(obj["question_id"], message=message, prompt=text, image=image, line=line)


def load_questions(path: str, drop_ocr: bool = False) -> list[Item]:
    return read_jsonl_questions(path, lambda obj, n: parse_question(obj, n, drop_ocr))


def build_arg_parser():
    ap = build_parser(__doc__, max_new_tokens=128)
    ap.add_argument("--drop-ocr-line", action="store_true",
                    help="drop the prompt's third line (TextVQA's OCR tokens), as the released GlobalCom² code does")
    return ap


def main(argv=None) -> dict:
    args = build_arg_parser().parse_args(argv)
    with exit_on_error():
        items = load_questions(args.question_file, args.drop_ocr_line)
        return run(args, items, driver=DRIVER, prompt_options={"drop_ocr_line": args.drop_ocr_line})


if __name__ == "__main__":
    main()
