"""MMBench / MMBench-CN generation from the release TSV.

``python -m llava.eval.model_vqa_mmbench --model-path DIR --question-file mmbench_dev_20230712.tsv
--answers-file A.jsonl --single-pred-prompt [--lang cn] [--all-rounds] [--compression ...]``

TSV columns: ``index, question, hint, A, B, C, D[, E...], answer, category, l2-category, split,
image`` with ``image`` a base64 string (or the ``index`` of the row holding the image). The
question asked is ``[hint\\n]question\\nA. ...\\nB. ...`` (options up to the first missing one:
empty, a pandas NA string such as ``None``/``NA``, or ``nan``, as in the original driver);
with ``--single-pred-prompt`` it ends with "\\nAnswer with the option's letter from the given
choices directly." (``--lang en``, default) or "\\n请直接回答选项字母。" (``--lang cn``).
``--max-new-tokens`` defaults to 1024, the original driver's fixed value.

``--all-rounds`` asks every question once per option with the options rotated (round k shows
the original options rotated left by k under the letters A, B, ...): the circular evaluation.
Each answer records ``question_id`` (the TSV index), ``round_id``, ``options`` (the option texts
in the order shown) and ``option_char``. The dev TSVs of the release already contain rotated
copies as extra rows (index + k·1,000,000), so the benchmark scripts do not pass it.

As in the original driver, the answer's ``prompt`` is the question as shown without the
letter instruction, and ``option_char`` rotates with the options (``option_char[i]`` is the
letter ``options[i]`` has in the TSV).

Answers, resuming, errors, batching and data-parallel runs: see :mod:`llava.eval.runs`.
"""

from __future__ import annotations

from llava.eval.runs.driver import run
from llava.eval.runs.errors import RunError, exit_on_error
from llava.eval.runs.flags import build_parser
from llava.eval.runs.questions import Item, add_text_suffix, number_occurrences, read_text

DRIVER = "model_vqa_mmbench"
OPTION_LETTERS = "ABCDEFGHI"
SUFFIX = {
    "en": "\nAnswer with the option's letter from the given choices directly.",
    "cn": "\n请直接回答选项字母。",
}


def _present(value) -> bool:
    """Not the original driver's ``is_none``: the TSV is read with pandas' default NA strings
    (empty, ``NA``, ``None``, ``null``, ...), and ``nan`` / ``none`` in any case also count as
    missing — so an option ``None`` ends the option list, as in the original."""
    if value is None or (isinstance(value, float) and value != value):
        return False
    return str(value).lower() not in ("nan", "none")


def row_options(row: dict) -> list[str]:
    """Option texts from column A on, up to the first missing one."""
    out = []
    for c in OPTION_LETTERS:
        if not _present(row.get(c)):
            break
        out.append(str(row[c]))
    return out


def build_question(row: dict, options: list[str]) -> str:
    """``[hint\n]question\nA. ...\nB. ...`` — the question as shown, before the instruction."""
    text = str(row.get("question", ""))
    if _present(row.get("hint")):
        text = str(row["hint"]) + "\n" + text
    for letter, opt in zip(OPTION_LETTERS, options):
        text += "\n" + letter + ". " + opt
    return text


def load_questions(path: str, single_pred_prompt: bool = False, lang: str = "en", all_rounds: bool = False) -> list[Item]:
    import io

    import pandas as pd

    text = read_text(path)
    try:
        # dtype=str keeps option texts as written ("3", not 3.0); NA strings become NaN as in
        # the original driver's plain pd.read_table.
        df = pd.read_csv(io.StringIO(text), sep="\t", dtype=str)
    except Exception as e:  # pandas raises several parser error types
        raise RunError(f"{path}: cannot read TSV ({e})") from None
    missing = [c for c in ("index", "question", "image") if c not in df.columns]
    if missing:
        raise RunError(f"{path}: missing column(s) {', '.join(missing)}")
    rows = df.to_dict("records")
    images = {str(r["index"]).strip(): r["image"] for r in rows}
    items: list[Item] = []
    for n, row in enumerate(rows, 2):  # line 1 is the header
        raw_idx = str(row["index"]).strip()
        try:
            qid: int | str = int(float(raw_idx))
        except ValueError:
            items.append(Item(raw_idx or None, error=f"malformed row {n}: bad index {raw_idx!r}", line=n))
            continue
        image = str(row["image"]).strip() if _present(row.get("image")) else ""
        if len(image) < 64 and image in images:  # a reference to another row's image
            image = str(images[image]).strip()
        options = row_options(row)
        letters = list(OPTION_LETTERS[: len(options)])
        rounds = len(options) if all_rounds and options else 1
        for k in range(rounds):
            shown = options[k:] + options[:k]
            fields = {"options": shown, "option_char": letters[k:] + letters[:k]}
            if not image:
                items.append(Item(qid, round_id=k, fields=fields, error=f"row {n} (index {qid}) has no image", line=n))
                continue
            question = build_question(row, shown)
            message = add_text_suffix(question, SUFFIX[lang]) if single_pred_prompt else question
            items.append(Item(qid, message=message, prompt=question, image=image, image_b64=True, round_id=k,
                              fields=fields, line=n))
    return number_occurrences(items)


def main(argv=None) -> dict:
    ap = build_parser(__doc__, max_new_tokens=1024)
    ap.add_argument("--single-pred-prompt", action="store_true", help="append the answer-with-a-letter instruction")
    ap.add_argument("--lang", choices=sorted(SUFFIX), default="en", help="language of that instruction")
    ap.add_argument("--all-rounds", action="store_true", help="ask every rotation of the options (circular eval)")
    args = ap.parse_args(argv)
    with exit_on_error():
        items = load_questions(args.question_file, args.single_pred_prompt, args.lang, args.all_rounds)
        return run(args, items, driver=DRIVER, prompt_options={
            "single_pred_prompt": args.single_pred_prompt, "lang": args.lang, "all_rounds": args.all_rounds})


if __name__ == "__main__":
    main()
