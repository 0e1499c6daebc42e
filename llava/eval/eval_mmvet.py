"""MM-Vet grader: GPT-scored correctness (0..1) per answer, total = mean x 100.

Reads
  * ``--mmvet-data DIR`` containing ``mm-vet.json``: ``{"v1_0": {"question": str, "answer": str
    (ground truth; "<AND>" joins parts that are all required, "<OR>" joins alternatives),
    "capability": ["rec", "ocr", ...], "imagename": ...}, ...}``;
  * ``--result-file`` the model answers as ``{"v1_0": "answer", ...}`` (written by
    :mod:`llava.eval.convert_mmvet_for_eval`).

Each answer is graded by a chat model behind any OpenAI-compatible ``/chat/completions``
endpoint, configured by environment variables:

  ``MMVET_API_BASE``  base URL, e.g. ``https://api.openai.com/v1`` (``/chat/completions`` is
                      appended unless already there)          - required
  ``MMVET_API_KEY``   bearer token                             - required
  ``MMVET_MODEL``     grader model, default ``gpt-4-0613``

The grader sees a few-shot prompt (question, ground truth, prediction -> correctness) and must
reply with a number in [0, 1]; an unparsable reply is retried (temperature raised a little each
time) up to ``--max-tries``, then scored 0.  Grades are cached in ``--cache-file`` (default
``<output>.cache.json``), keyed by sample id and re-used while the prediction, ground truth and
grader model are unchanged, so re-runs only grade what is new.

Writes ``--output`` (json: total, per-capability scores, per-sample scores).  The last printed
line is ``MM-Vet total: XX.XX``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
import urllib.error
import urllib.request

from llava.eval.scoring_utils import ScorerInputError, add_score_args, load_json, maybe_write_score, run_cli

DEFAULT_MODEL = "gpt-4-0613"
CAPABILITIES = ["rec", "ocr", "know", "gen", "spat", "math"]

_INSTRUCTIONS = """\
You grade the answers of an AI assistant to questions about images. For each case you get the \
question, the reference (ground-truth) answer and the assistant's answer, and you give a \
correctness score from 0.0 (wrong) to 1.0 (fully right), in steps of 0.1.

Rules:
- Judge meaning, not wording: extra explanation is fine as long as the answer it contains is right.
- In a reference answer, "<AND>" joins parts that are all required: give credit in proportion to \
how many of them the assistant got right. "<OR>" joins alternatives: any one of them is fully right.
- For open-ended references, give partial credit for answers that are partly right or incomplete, \
and 0.0 for answers that contradict the reference.
- Reply with the score only, nothing else.

Question | Reference | Assistant | Score
How many cups are on the table? | 3 | There are three cups on the table. | 1.0
How many cups are on the table? | 3 | 4 | 0.0
What colours does the flag have? | red <AND> white | It is red. | 0.5
What colours does the flag have? | red <AND> white | white and red | 1.0
Which city is shown? | Rome <OR> Roma | This looks like Rome, Italy. | 1.0
What is the sum shown on the board? | 42 | The board shows 40 + 2. | 0.0
Why is the man holding an umbrella? | It is raining and he wants to stay dry. | Because it is raining. | 0.8
Why is the man holding an umbrella? | It is raining and he wants to stay dry. | He is selling umbrellas. | 0.0
"""


def build_prompt(question: str, reference: str, prediction: str) -> str:
    def clean(s: str) -> str:
        return " ".join(str(s).replace("|", "/").split())

    return f"{_INSTRUCTIONS}{clean(question)} | {clean(reference)} | {clean(prediction)} |"


_NUMBER = re.compile(r"(?<![\d.])(\d*\.\d+|\d+)(?![\d.])")


def parse_score(reply: str) -> float | None:
    """The first number of ``reply`` if it lies in [0, 1], else None."""
    m = _NUMBER.search(str(reply))
    if not m:
        return None
    val = float(m.group(1))
    return val if 0.0 <= val <= 1.0 else None


def api_config(env=None) -> dict:
    env = os.environ if env is None else env
    base = env.get("MMVET_API_BASE", "").strip()
    key = env.get("MMVET_API_KEY", "").strip()
    missing = [name for name, val in (("MMVET_API_BASE", base), ("MMVET_API_KEY", key)) if not val]
    if missing:
        raise ScorerInputError(
            f"MM-Vet grading needs an OpenAI-compatible chat endpoint, but {' and '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not set. Set MMVET_API_BASE (e.g. https://api.openai.com/v1), "
            f"MMVET_API_KEY and optionally MMVET_MODEL (default {DEFAULT_MODEL}).")
    url = base.rstrip("/")
    if not url.endswith("/chat/completions"):
        url += "/chat/completions"
    return {"url": url, "key": key, "model": env.get("MMVET_MODEL", "").strip() or DEFAULT_MODEL}


def chat_completion(cfg: dict, prompt: str, temperature: float, timeout: float = 60.0) -> str:
    body = json.dumps({
        "model": cfg["model"],
        "messages": [{"role": "user", "content": prompt}],
        "temperature": temperature,
        "max_tokens": 8,
    }).encode("utf-8")
    req = urllib.request.Request(cfg["url"], data=body, method="POST", headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {cfg['key']}"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        payload = json.loads(resp.read().decode("utf-8"))
    return str(payload["choices"][0]["message"]["content"])


def grade_one(cfg: dict, question: str, reference: str, prediction: str, max_tries: int = 5,
              timeout: float = 60.0, retry_sleep: float = 2.0) -> tuple[float, str, int]:
    """Returns (score, last raw reply, tries used); score 0.0 if no valid reply was obtained."""
    prompt = build_prompt(question, reference, prediction)
    reply = ""
    for attempt in range(max_tries):
        temperature = 0.0 if attempt == 0 else min(1.0, 0.2 * attempt)
        try:
            reply = chat_completion(cfg, prompt, temperature, timeout)
        except (urllib.error.URLError, TimeoutError, OSError, KeyError, IndexError, ValueError) as exc:
            reply = f"<request failed: {exc}>"
            if attempt + 1 < max_tries and retry_sleep:
                time.sleep(retry_sleep * (attempt + 1))
            continue
        score = parse_score(reply)
        if score is not None:
            return score, reply, attempt + 1
    return 0.0, reply, max_tries


def _atomic_json(path: str, obj) -> None:
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=2, ensure_ascii=False)
    os.replace(tmp, path)


def evaluate(mmvet_data: str, result_file: str, cache_file: str, max_tries: int = 5, timeout: float = 60.0,
             retry_sleep: float = 2.0, env=None, log=print) -> dict:
    data_path = mmvet_data if mmvet_data.endswith(".json") else os.path.join(mmvet_data, "mm-vet.json")
    gt = load_json(data_path, "MM-Vet data file (mm-vet.json)")
    results = load_json(result_file, "MM-Vet result file")
    if not isinstance(results, dict):
        raise ScorerInputError(f"{result_file}: expected a JSON object {{\"v1_0\": answer, ...}}")
    cache = {}
    if os.path.isfile(cache_file):
        cache = load_json(cache_file, "MM-Vet cache file")
    model = (env if env is not None else os.environ).get("MMVET_MODEL", "").strip() or DEFAULT_MODEL

    todo = [k for k in gt if k in results and not (
        k in cache and cache[k].get("prediction") == results[k]
        and cache[k].get("reference") == gt[k]["answer"] and cache[k].get("model") == model)]
    cfg = api_config(env) if todo else None
    for i, key in enumerate(todo, start=1):
        item = gt[key]
        score, reply, tries = grade_one(cfg, item["question"], item["answer"], results[key], max_tries,
                                        timeout, retry_sleep)
        cache[key] = {"score": score, "raw": reply, "tries": tries, "model": model,
                      "prediction": results[key], "reference": item["answer"]}
        _atomic_json(cache_file, cache)
        log(f"graded {i}/{len(todo)} {key}: {score:.1f}")

    scores = {k: float(cache[k]["score"]) for k in gt if k in results}
    per_cap: dict[str, list[float]] = {}
    for k, s in scores.items():
        for cap in gt[k].get("capability", []):
            per_cap.setdefault(cap, []).append(s)
    total = 100.0 * sum(scores.values()) / len(scores) if scores else 0.0
    return {
        "benchmark": "mmvet",
        "total": total,
        "per_capability": {c: 100.0 * sum(v) / len(v) for c, v in sorted(
            per_cap.items(), key=lambda kv: CAPABILITIES.index(kv[0]) if kv[0] in CAPABILITIES else 99)},
        "num_samples": len(scores),
        "num_missing": sum(k not in results for k in gt),
        "num_graded_now": len(todo),
        "grader_model": model,
        "scores": scores,
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m llava.eval.eval_mmvet",
        description="Grade MM-Vet answers with a GPT model behind an OpenAI-compatible endpoint "
                    "(env MMVET_API_BASE, MMVET_API_KEY, MMVET_MODEL).")
    p.add_argument("--mmvet-data", required=True, help="folder with mm-vet.json (or the file itself)")
    p.add_argument("--result-file", required=True, help='answers json {"v1_0": answer, ...}')
    p.add_argument("--output", required=True, help="json with the total and per-capability scores to write")
    p.add_argument("--cache-file", default=None, help="grading cache (default: <output>.cache.json)")
    p.add_argument("--max-tries", type=int, default=5)
    p.add_argument("--request-timeout", type=float, default=60.0)
    p.add_argument("--retry-sleep", type=float, default=2.0, help="seconds to back off after a failed request")
    add_score_args(p)
    return p


def _main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    cache_file = args.cache_file or (os.path.splitext(args.output)[0] + ".cache.json")
    res = evaluate(args.mmvet_data, args.result_file, cache_file, args.max_tries, args.request_timeout,
                   args.retry_sleep)
    _atomic_json(args.output, res)
    if res["num_missing"]:
        print(f"note: {res['num_missing']} MM-Vet sample(s) have no answer (not scored)")
    print(f"grader: {res['grader_model']}; newly graded: {res['num_graded_now']}; cache: {cache_file}")
    for cap, val in res["per_capability"].items():
        print(f"  {cap}: {val:.1f}")
    maybe_write_score(args, "mmvet", res["total"], result_file=args.result_file, num_samples=res["num_samples"],
                      details={"per_capability": res["per_capability"], "grader_model": res["grader_model"]})
    print(f"MM-Vet total: {res['total']:.2f}")
    return res


def main(argv=None) -> dict:
    return run_cli(_main, argv)


if __name__ == "__main__":
    main()
