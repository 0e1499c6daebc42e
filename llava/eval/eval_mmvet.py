"""MM-Vet grader, as MM-Vet's own ``mm-vet_evaluator.py`` grades: a GPT model scores each answer
0.0-1.0 against the ground truth; the total is the mean x 100, rounded to one decimal.

Reads
  * ``--mmvet-data DIR`` with ``mm-vet.json`` (``{"v1_0": {"question", "answer",
    "capability": [...]}, ...}``; in an answer ``<AND>`` joins parts that are all required,
    ``<OR>`` alternatives);
  * ``--result-file``: ``{"v1_0": answer, ...}`` (written by :mod:`llava.eval.convert_mmvet_for_eval`).

Requests, as MM-Vet's evaluator makes them: one user message = MM-Vet's instruction and few-shot
table (:data:`MMVET_PROMPT`), a newline, and ``question | ground truth | prediction | `` (with
``<AND>``/``<OR>`` padded by spaces); ``max_tokens=3``, temperature 0. A reply is read from its
first space-separated piece with ``float()`` and must lie in [0, 1]. Otherwise the question is
asked again with ``"\\nPredict the correctness of the answer (digit): "`` appended — first at the
same temperature, then 0.5 higher each time — and after five re-asks the sample scores 0.0
(the sixth reply is not read). A rate-limited request (HTTP 429) waits ``--rate-limit-sleep``
seconds (30) and asks again, as MM-Vet does. ``--num-run N`` grades every sample N times and
reports the mean over runs (MM-Vet's paper uses 5; LLaVA and the default, 1).

Endpoint: any OpenAI-compatible ``/chat/completions``, configured by ``MMVET_API_BASE`` (e.g.
``https://api.openai.com/v1``), ``MMVET_API_KEY`` and ``MMVET_MODEL`` (default ``gpt-4-0613``,
MM-Vet's). Other request failures are retried ``--request-retries`` times, then grading stops
with an error; grades are kept in ``--cache-file`` (MM-Vet's grade-file format, plus the graded
prediction, ground truth and grader so that a changed one is graded again), so a re-run resumes.

Every sample needs an answer (coverage rules: :mod:`llava.eval.answer_coverage`). Writes
``--output`` (json: total, per-capability scores, per-sample scores); the last line printed is
``MM-Vet total: XX.X``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable

from llava.eval.answer_coverage import Tally, check_coverage
from llava.eval.runs.answers_io import write_atomic
from llava.eval.scoring_utils import ScorerInputError, add_scorer_args, finish, load_json, run_cli

DEFAULT_MODEL = "gpt-4-0613"
MAX_TOKENS = 3
MAX_TRIES = 5  # MM-Vet gives up when its try counter exceeds 5
TEMPERATURE_STEP = 0.5
REASK = "\nPredict the correctness of the answer (digit): "

# MM-Vet's grading instruction and few-shot examples (yuweihao/MM-Vet, mm-vet_evaluator.py,
# Apache-2.0), verbatim: the grades depend on the exact text.
MMVET_PROMPT = """Compare the ground truth and prediction from AI models, to give a correctness score for the prediction. <AND> in the ground truth means it is totally right only when all elements in the ground truth are present in the prediction, and <OR> means it is totally right when any one element in the ground truth is present in the prediction. The correctness score is 0.0 (totally wrong), 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, or 1.0 (totally right). Just complete the last space of the correctness score.

Question | Ground truth | Prediction | Correctness
--- | --- | --- | ---
What is x in the equation? | -1 <AND> -5 | x = 3 | 0.0
What is x in the equation? | -1 <AND> -5 | x = -1 | 0.5
What is x in the equation? | -1 <AND> -5 | x = -5 | 0.5
What is x in the equation? | -1 <AND> -5 | x = -5 or 5 | 0.5
What is x in the equation? | -1 <AND> -5 | x = -1 or x = -5 | 1.0
Can you explain this meme? | This meme is poking fun at the fact that the names of the countries Iceland and Greenland are misleading. Despite its name, Iceland is known for its beautiful green landscapes, while Greenland is mostly covered in ice and snow. The meme is saying that the person has trust issues because the names of these countries do not accurately represent their landscapes. | The meme talks about Iceland and Greenland. It's pointing out that despite their names, Iceland is not very icy and Greenland isn't very green. | 0.4
Can you explain this meme? | This meme is poking fun at the fact that the names of the countries Iceland and Greenland are misleading. Despite its name, Iceland is known for its beautiful green landscapes, while Greenland is mostly covered in ice and snow. The meme is saying that the person has trust issues because the names of these countries do not accurately represent their landscapes. | The meme is using humor to point out the misleading nature of Iceland's and Greenland's names. Iceland, despite its name, has lush green landscapes while Greenland is mostly covered in ice and snow. The text 'This is why I have trust issues' is a playful way to suggest that these contradictions can lead to distrust or confusion. The humor in this meme is derived from the unexpected contrast between the names of the countries and their actual physical characteristics. | 1.0
"""


class RateLimited(Exception):
    """The endpoint answered HTTP 429."""


def build_prompt(question: str, answer: str, prediction: str) -> str:
    """MM-Vet's request text for one sample."""
    gt = answer.replace("<AND>", " <AND> ").replace("<OR>", " <OR> ")
    return MMVET_PROMPT + "\n" + " | ".join([question, gt, prediction, ""])


def parse_score(content) -> float | None:
    """MM-Vet's reading of a reply: ``float`` of its first space-separated piece, in [0, 1]; else None."""
    try:
        score = float(content.split(" ")[0].strip())
    except (AttributeError, ValueError):
        return None
    return None if score > 1.0 or score < 0.0 else score


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


def chat_completion(cfg: dict, prompt: str, temperature: float, timeout: float = 60.0) -> tuple[str, str]:
    """One request as MM-Vet makes it; returns (reply content, model named in the response)."""
    body = json.dumps({"model": cfg["model"], "max_tokens": MAX_TOKENS, "temperature": temperature,
                       "messages": [{"role": "user", "content": prompt}]}).encode("utf-8")
    req = urllib.request.Request(cfg["url"], data=body, method="POST", headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {cfg['key']}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            payload = json.loads(resp.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        if exc.code == 429:
            raise RateLimited(str(exc)) from None
        raise
    return payload["choices"][0]["message"]["content"], payload.get("model", cfg["model"])


Request = Callable[[str, float], tuple[str, str]]


def grade_sample(request: Request, prompt: str, *, rate_limit_sleep: float = 30.0) -> tuple[float, str, str]:
    """MM-Vet's grading loop for one sample and run: (score, content kept, responding model)."""
    temperature = 0.0
    current = prompt
    while True:
        try:
            content, model = request(current, temperature)
            tries = 1
            while True:
                score = parse_score(content)
                if score is not None:
                    return score, content.split(" ")[0].strip(), model
                current = prompt + REASK
                content, model = request(current, temperature)
                tries += 1
                temperature += TEMPERATURE_STEP
                if tries > MAX_TRIES:
                    return 0.0, content, model
        except RateLimited:
            time.sleep(rate_limit_sleep)


def _with_retries(request: Request, retries: int, sleep: float) -> Request:
    """Retry transport failures (not rate limits) ``retries`` times, then stop with a clear error."""

    def call(prompt: str, temperature: float) -> tuple[str, str]:
        for attempt in range(retries + 1):
            try:
                return request(prompt, temperature)
            except RateLimited:
                raise
            except (urllib.error.URLError, TimeoutError, OSError, KeyError, IndexError, ValueError) as exc:
                if attempt == retries:
                    raise ScorerInputError(f"grading request failed {retries + 1} times ({exc}); the grades so far "
                                           f"are kept in the cache, re-run to resume") from None
                time.sleep(sleep * (attempt + 1))
        raise AssertionError("unreachable")

    return call


def _atomic_json(path: str, obj) -> None:
    """``obj`` as indented JSON at ``path``, replaced atomically (the grade cache survives a crash)."""
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    write_atomic(path, json.dumps(obj, indent=4, ensure_ascii=False))


def _round(value: float, places: int = 1) -> float:
    """MM-Vet rounds numpy floats: ``round(np.float64(x), 1)`` (0.15 -> 0.2, unlike Python's 0.1)."""
    import numpy as np

    return float(round(np.float64(value), places))


def evaluate(mmvet_data: str, result_file: str, cache_file: str, *, num_run: int = 1, allow_partial: bool = False,
             request: Request | None = None, rate_limit_sleep: float = 30.0, env=None, log=print) -> dict:
    import numpy as np

    data_path = mmvet_data if mmvet_data.endswith(".json") else os.path.join(mmvet_data, "mm-vet.json")
    data = load_json(data_path, "MM-Vet data file (mm-vet.json)")
    results = load_json(result_file, "MM-Vet result file")
    if not isinstance(results, dict):
        raise ScorerInputError(f"{result_file}: expected a JSON object {{\"v1_0\": answer, ...}}")
    tally = Tally(data)
    for key, pred in results.items():
        tally.add(key, error=not isinstance(pred, str))
    coverage = tally.finish()
    check_coverage(coverage, result_file, allow_partial)
    ids = [k for k in data if isinstance(results.get(k), str)]

    grader = (env if env is not None else os.environ).get("MMVET_MODEL", "").strip() or DEFAULT_MODEL
    grades = load_json(cache_file, "MM-Vet grade cache") if os.path.isfile(cache_file) else {}
    for k in ids:
        g = grades.get(k)
        if g is not None and (g.get("prediction"), g.get("reference"), g.get("grader")) != (
                results[k], data[k]["answer"], grader):
            del grades[k]  # graded for another prediction, ground truth or grader
    todo = [(j, k) for j in range(num_run) for k in ids if len(grades.get(k, {}).get("score", [])) <= j]
    if todo and request is None:
        cfg = api_config(env)
        request = lambda p, t: chat_completion(cfg, p, t)  # noqa: E731
    for n, (j, k) in enumerate(todo, start=1):
        score, content, model = grade_sample(request, build_prompt(data[k]["question"], data[k]["answer"], results[k]),
                                             rate_limit_sleep=rate_limit_sleep)
        g = grades.setdefault(k, {"model": [], "content": [], "score": []})
        g["model"].append(model)
        g["content"].append(content)
        g["score"].append(score)
        g.update(prediction=results[k], reference=data[k]["answer"], grader=grader)
        _atomic_json(cache_file, grades)
        log(f"run {j} graded {n}/{len(todo)} {k}: {score}")

    counter = Counter(c for k in ids for c in set(data[k]["capability"]))
    sums = {c: [0.0] * num_run for c in [*counter, "total"]}
    for k in ids:
        for j in range(num_run):
            score = grades[k]["score"][j]
            for c in set(data[k]["capability"]):
                sums[c][j] += score
            sums["total"][j] += score
    counter["total"] = len(ids)
    per_run = {c: np.array(v) / counter[c] * 100 for c, v in sums.items()}
    order = [c for c, _ in Counter({c: n for c, n in counter.items() if c != "total"}).most_common()]
    return {"benchmark": "mmvet", "total": _round(per_run["total"].mean()),
            "total_unrounded": float(per_run["total"].mean()), "std": _round(per_run["total"].std()),
            "runs": [_round(x) for x in per_run["total"]],
            "per_capability": {c: _round(per_run[c].mean()) for c in order},
            "num_samples": len(ids), "num_graded_now": len(todo), "grader_model": grader,
            "scores": {k: grades[k]["score"][:num_run] for k in ids}, "coverage": coverage}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m llava.eval.eval_mmvet",
        description="Grade MM-Vet answers as MM-Vet's evaluator does, with a GPT model behind an OpenAI-compatible "
                    "endpoint (env MMVET_API_BASE, MMVET_API_KEY, MMVET_MODEL).")
    p.add_argument("--mmvet-data", required=True, help="folder with mm-vet.json (or the file itself)")
    p.add_argument("--result-file", required=True, help='answers json {"v1_0": answer, ...}')
    p.add_argument("--output", required=True, help="json with the total and per-capability scores to write")
    p.add_argument("--cache-file", default=None, help="grades (MM-Vet's grade-file format; default: <output>.cache.json)")
    p.add_argument("--num-run", type=int, default=1, help="grading runs per sample, averaged (default: 1)")
    p.add_argument("--request-timeout", type=float, default=60.0)
    p.add_argument("--request-retries", type=int, default=4, help="retries of a failed request before stopping")
    p.add_argument("--retry-sleep", type=float, default=2.0, help="seconds to back off after a failed request")
    p.add_argument("--rate-limit-sleep", type=float, default=30.0, help="seconds to wait after HTTP 429 (MM-Vet: 30)")
    add_scorer_args(p)
    return p


def _main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    if args.num_run < 1:
        raise ScorerInputError("--num-run must be >= 1")
    cache_file = args.cache_file or (os.path.splitext(args.output)[0] + ".cache.json")
    request = None
    if os.environ.get("MMVET_API_BASE") or os.environ.get("MMVET_API_KEY"):
        cfg = api_config()
        request = _with_retries(lambda p, t: chat_completion(cfg, p, t, args.request_timeout),
                                args.request_retries, args.retry_sleep)
    res = evaluate(args.mmvet_data, args.result_file, cache_file, num_run=args.num_run,
                   allow_partial=args.allow_partial, request=request, rate_limit_sleep=args.rate_limit_sleep)
    _atomic_json(args.output, {k: v for k, v in res.items() if k != "coverage"})
    print(f"grader: {res['grader_model']}; newly graded: {res['num_graded_now']}; cache: {cache_file}")
    for cap, val in res["per_capability"].items():
        print(f"  {cap}: {val}")
    if args.num_run > 1:
        print(f"  std over runs: {res['std']}; runs: {res['runs']}")
    finish(args, "mmvet", res["total"], f"MM-Vet total: {res['total']:.1f}", coverage=res["coverage"],
           result_file=args.result_file, num_samples=res["num_samples"],
           details={"per_capability": res["per_capability"], "grader_model": res["grader_model"],
                    "num_run": args.num_run, "total_unrounded": res["total_unrounded"]})
    return res


def main(argv=None) -> dict:
    return run_cli(_main, argv)


if __name__ == "__main__":
    main()
