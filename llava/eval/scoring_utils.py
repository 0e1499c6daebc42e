"""Shared plumbing for the offline scorers in ``llava.eval``.

* Input loading with clear errors: a missing file is reported as
  ``error: <what> not found: <path> (see playground/data/eval/README.md)`` and a malformed
  JSON-lines record as ``error: <path>:<line>: malformed JSON line (...)``.
* The **score record** convention used by :mod:`llava.eval.summarize`.

Score records
-------------
Every scorer accepts ``--score-file PATH``.  When given, it writes one JSON object::

    {
      "benchmark": "textvqa",            # one of BENCHMARKS below
      "metric": "accuracy",              # what "score" is (see BENCHMARKS)
      "score": 59.21,                    # the number that goes in the paper's table
      "method": "globalcom2",            # compression method ("uncompressed" for none)
      "retention_ratio": 0.25,           # base retention ratio R (1.0 when uncompressed)
      "model": "llava-v1.6-vicuna-7b",   # model name, or null
      "num_samples": 5000,               # samples the score is computed over
      "result_file": "answers/x.jsonl",  # the answers that were scored (or null)
      "created": "2025-01-01T12:00:00",  # local time of scoring
      "details": {...},                  # benchmark-specific extras (sub-scores)
      "partial": false,                  # true: scored with --allow-partial from an incomplete file
      "lenient": false,                  # true: scored with --lenient (not the original tool's rules)
      "coverage": {...}                  # counts: questions, answered, error_entries, duplicates, ...
    }

Only a record with ``partial`` and ``lenient`` false holds the number the original tool gives
(records written before these fields existed read as false).

``method`` / ``retention_ratio`` / ``model`` come, in order of precedence, from the scorer's
``--method`` / ``--retention-ratio`` / ``--model-name`` options, then from a ``config.json``
next to the scored result file (``{"compression": {"name": ..., "retention_ratio": ...},
"model": ...}``; also accepted: ``model_name``, ``model_path``, ``model_id``).  A config with no
``compression`` entry, a null one, or a name in ``none``/``uncompressed``/``baseline`` means the
uncompressed model (method ``"uncompressed"``, ratio 1.0). An option that contradicts that
``config.json`` (another model name, method or ratio) is refused: a score is never recorded under
another run's name. The run's checkpoint identity (``checkpoint``: path + fingerprint) and its
full compression config (``compression``: every option, so that :mod:`llava.eval.summarize`
keeps runs of one method with different options apart) are copied into the record.  When nothing is known the fields are
null and :mod:`llava.eval.summarize` tries again with a ``config.json`` next to the score file.

Server-scored benchmarks (VQAv2, VizWiz) and hand-graded numbers can be recorded with::

    python -m llava.eval.scoring_utils --benchmark vqav2 --score 81.3 \\
        --method globalcom2 --retention-ratio 0.25 --score-file out/score_vqav2.json
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llava.eval.answer_coverage import Coverage

README_HINT = "see playground/data/eval/README.md"

# benchmark key -> (column name in the paper's table, metric name)
BENCHMARKS: dict[str, tuple[str, str]] = {
    "vqav2": ("VQAv2", "accuracy"),
    "gqa": ("GQA", "accuracy"),
    "vizwiz": ("VizWiz", "accuracy"),
    "sqa": ("SQA", "img_accuracy"),
    "textvqa": ("TextVQA", "accuracy"),
    "pope": ("POPE", "f1_mean"),
    "mme": ("MME", "perception"),
    "mmbench": ("MMB", "circular_accuracy"),
    "mmbench_cn": ("MMB-CN", "circular_accuracy"),
    "mmvet": ("MM-Vet", "gpt_score"),
}

UNCOMPRESSED_NAMES = {"", "none", "uncompressed", "baseline", "full", "vanilla"}


class ScorerInputError(Exception):
    """An input file is missing or malformed; the message is meant for the user."""


def require_file(path: str | os.PathLike, what: str = "file") -> str:
    """Return ``path`` as str, or raise :class:`ScorerInputError` naming it if it is missing."""
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise ScorerInputError(f"{what} not found: {p} ({README_HINT})")
    return p


def require_dir(path: str | os.PathLike, what: str = "directory") -> str:
    p = os.fspath(path)
    if not os.path.isdir(p):
        raise ScorerInputError(f"{what} not found: {p} ({README_HINT})")
    return p


def iter_jsonl(path: str | os.PathLike, what: str = "file") -> Iterator[dict]:
    """Yield the JSON objects of a JSON-lines file, skipping blank lines.

    A line that is not a JSON object raises :class:`ScorerInputError` with ``path:line``.
    """
    p = require_file(path, what)
    with open(p, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ScorerInputError(f"{p}:{lineno}: malformed JSON line ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise ScorerInputError(f"{p}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            yield obj


def load_jsonl(path: str | os.PathLike, what: str = "file") -> list[dict]:
    return list(iter_jsonl(path, what))


def load_json(path: str | os.PathLike, what: str = "file") -> Any:
    p = require_file(path, what)
    with open(p, encoding="utf-8") as fh:
        try:
            return json.load(fh)
        except json.JSONDecodeError as exc:
            raise ScorerInputError(f"{p}:{exc.lineno}: malformed JSON ({exc.msg})") from None


# ----------------------------------------------------------------------------- score records


def read_run_config(result_file: str | os.PathLike | None) -> dict:
    """Read ``config.json`` next to ``result_file`` (or in it, if it is a directory).

    Returns ``{"method", "retention_ratio", "model", "checkpoint", "compression"}`` with None for
    unknown fields (``checkpoint``: the generation run's ``{path, fingerprint}`` record;
    ``compression``: the run's resolved compression config, every option).
    """
    out: dict[str, Any] = {"method": None, "retention_ratio": None, "model": None, "checkpoint": None,
                           "compression": None}
    if not result_file:
        return out
    d = os.fspath(result_file)
    if not os.path.isdir(d):
        d = os.path.dirname(os.path.abspath(d))
    cfg_path = os.path.join(d, "config.json")
    if not os.path.isfile(cfg_path):
        return out
    try:
        with open(cfg_path, encoding="utf-8") as fh:
            cfg = json.load(fh)
    except (OSError, json.JSONDecodeError):
        return out
    if not isinstance(cfg, dict):
        return out
    return config_to_fields(cfg)


def config_to_fields(cfg: dict) -> dict:
    """Map a run ``config.json`` dict onto ``method`` / ``retention_ratio`` / ``model`` /
    ``checkpoint`` / ``compression``."""
    out: dict[str, Any] = {"method": None, "retention_ratio": None, "model": None,
                           "checkpoint": cfg.get("checkpoint") if isinstance(cfg.get("checkpoint"), dict) else None,
                           "compression": cfg.get("compression") if isinstance(cfg.get("compression"), dict) else None}
    for key in ("model", "model_name", "model_id", "model_path"):
        val = cfg.get(key)
        if isinstance(val, str) and val:
            out["model"] = os.path.basename(val.rstrip("/")) if key == "model_path" else val
            break
    comp = cfg.get("compression", None)
    if isinstance(comp, str):
        comp = {"name": comp}
    if comp is None or (isinstance(comp, dict) and str(comp.get("name") or "").lower() in UNCOMPRESSED_NAMES):
        out["method"] = "uncompressed"
        out["retention_ratio"] = 1.0
    elif isinstance(comp, dict):
        out["method"] = str(comp.get("name"))
        ratio = comp.get("retention_ratio")
        out["retention_ratio"] = float(ratio) if ratio is not None else None
    return out


def normalise_method(method: Any, ratio: Any) -> tuple[str | None, float | None]:
    """Uncompressed aliases become ``("uncompressed", 1.0)``; ratios become floats."""
    r = float(ratio) if ratio is not None else None
    if method is None:
        return None, r
    m = str(method)
    if m.lower() in UNCOMPRESSED_NAMES:
        return "uncompressed", 1.0
    return m, r


def add_score_args(parser: argparse.ArgumentParser) -> None:
    """Add ``--score-file``, ``--method``, ``--retention-ratio``, ``--model-name`` to a parser."""
    g = parser.add_argument_group("score record (for llava.eval.summarize)")
    g.add_argument("--score-file", default=None,
                   help="write a JSON score record here (see llava/eval/scoring_utils.py)")
    g.add_argument("--method", default=None,
                   help="compression method for the record (default: from config.json next to the results)")
    g.add_argument("--retention-ratio", type=float, default=None,
                   help="retention ratio R for the record (default: from config.json)")
    g.add_argument("--model-name", default=None, help="model name for the record (default: from config.json)")


def add_coverage_args(parser: argparse.ArgumentParser, lenient: str | None = None) -> None:
    """``--allow-partial`` and, when ``lenient`` (its help text) is given, ``--lenient``."""
    parser.add_argument("--allow-partial", action="store_true",
                        help="score an incomplete file (missing answers, error entries, duplicates, unknown ids) "
                             "instead of refusing it; the score record is marked partial")
    if lenient:
        parser.add_argument("--lenient", action="store_true",
                            help=lenient + " Not the original tool's number; the score record is marked lenient.")


def add_scorer_args(parser: argparse.ArgumentParser, lenient: str | None = None) -> None:
    """The flags every scorer shares: coverage (:func:`add_coverage_args`) and the score record."""
    add_coverage_args(parser, lenient)
    add_score_args(parser)


def make_score_record(
    benchmark: str,
    score: float,
    *,
    metric: str | None = None,
    result_file: str | None = None,
    num_samples: int | None = None,
    details: dict | None = None,
    method: str | None = None,
    retention_ratio: float | None = None,
    model: str | None = None,
    partial: bool = False,
    lenient: bool = False,
    coverage: dict | None = None,
) -> dict:
    if benchmark not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {benchmark!r}; expected one of {sorted(BENCHMARKS)}")
    cfg = read_run_config(result_file)
    _check_same_run(cfg, method, retention_ratio, model, result_file)
    m = method if method is not None else cfg["method"]
    r = retention_ratio if retention_ratio is not None else cfg["retention_ratio"]
    m, r = normalise_method(m, r)
    rec = {
        "benchmark": benchmark,
        "metric": metric or BENCHMARKS[benchmark][1],
        "score": float(score),
        "method": m,
        "retention_ratio": r,
        "model": model if model is not None else cfg["model"],
        "num_samples": num_samples,
        "result_file": os.fspath(result_file) if result_file else None,
        "created": _dt.datetime.now().isoformat(timespec="seconds"),
        "details": details or {},
        "partial": bool(partial),
        "lenient": bool(lenient),
    }
    if cfg["checkpoint"] is not None:
        rec["checkpoint"] = cfg["checkpoint"]
    if cfg["compression"] is not None and m != "uncompressed":
        rec["compression"] = cfg["compression"]  # every option, so runs of one method with other options never mix
    if coverage is not None:
        rec["coverage"] = coverage
    return rec


def _check_same_run(cfg: dict, method: Any, ratio: Any, model: str | None, result_file: Any) -> None:
    """Refuse to label a score with a model / method / ratio other than the ones that produced
    the answers (as recorded in the ``config.json`` next to them): a score is never attributed
    to another run."""
    where = os.path.join(os.path.dirname(os.path.abspath(os.fspath(result_file))), "config.json") if result_file else ""
    clashes = []
    if model is not None and cfg["model"] is not None and model != cfg["model"]:
        clashes.append(f"model {cfg['model']!r} (--model-name says {model!r})")
    if method is not None and cfg["method"] is not None:
        given_m, given_r = normalise_method(method, ratio)
        if given_m != cfg["method"]:
            clashes.append(f"method {cfg['method']!r} (--method says {given_m!r})")
        elif given_r is not None and cfg["retention_ratio"] is not None and abs(given_r - cfg["retention_ratio"]) > 1e-9:
            clashes.append(f"retention ratio {cfg['retention_ratio']} (--retention-ratio says {given_r})")
    if clashes:
        raise ScorerInputError(
            f"the answers in {result_file} were generated with {'; '.join(clashes)} according to {where}; "
            "refusing to record their score under another run's name")


def dump_json(path: str | os.PathLike, obj: Any, indent: int | None = None) -> None:
    """``json.dump`` with its default formatting (as the original converters write), parents created."""
    p = os.fspath(path)
    parent = os.path.dirname(p)
    if parent:
        os.makedirs(parent, exist_ok=True)
    with open(p, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=indent)


def write_score_record(path: str | os.PathLike, record: dict) -> None:
    p = os.fspath(path)
    parent = os.path.dirname(p)
    if parent:
        os.makedirs(parent, exist_ok=True)
    with open(p, "w", encoding="utf-8") as fh:
        json.dump(record, fh, indent=2, ensure_ascii=False)
        fh.write("\n")


def maybe_write_score(args: argparse.Namespace, benchmark: str, score: float, **kw: Any) -> dict | None:
    """Write a score record if ``args.score_file`` is set (options from :func:`add_score_args`)."""
    path = getattr(args, "score_file", None)
    if not path:
        return None
    rec = make_score_record(
        benchmark,
        score,
        method=getattr(args, "method", None),
        retention_ratio=getattr(args, "retention_ratio", None),
        model=getattr(args, "model_name", None),
        **kw,
    )
    write_score_record(path, rec)
    return rec


def finish(args: argparse.Namespace, benchmark: str, score: float, headline: str, *,
           coverage: Coverage | None, result_file: str | None, num_samples: int | None = None,
           details: dict | None = None, metric: str | None = None) -> dict | None:
    """The scorers' common tail: write the score record (``--score-file``), then print the headline.

    The record is marked ``partial`` when the coverage is incomplete and ``lenient`` when
    ``--lenient`` was given. The headline is always the last line printed.
    """
    partial = coverage is not None and not coverage.complete
    rec = maybe_write_score(args, benchmark, score, metric=metric, result_file=result_file,
                            num_samples=num_samples, details=details, partial=partial,
                            lenient=bool(getattr(args, "lenient", False)),
                            coverage=coverage.as_record() if coverage is not None else None)
    print(headline + headline_marks(args, coverage))
    return rec


def headline_marks(args: argparse.Namespace, coverage: Coverage | None) -> str:
    """`` (partial)`` / `` (lenient)`` after a headline that is not the original tool's number."""
    marks = ""
    if coverage is not None and not coverage.complete:
        marks += " (partial)"
    if getattr(args, "lenient", False):
        marks += " (lenient)"
    return marks


def run_cli(fn, argv=None):
    """Run ``fn(argv)``; turn :class:`ScorerInputError` into ``error: ...`` on stderr + exit 2."""
    import sys

    try:
        return fn(argv)
    except ScorerInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _record_main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m llava.eval.scoring_utils",
        description="Write a score record by hand (e.g. a VQAv2/VizWiz number from the evaluation server).",
    )
    parser.add_argument("--benchmark", required=True, choices=sorted(BENCHMARKS))
    parser.add_argument("--score", required=True, type=float)
    parser.add_argument("--result-file", default=None,
                        help="the answers that were scored (its folder's config.json supplies method/ratio)")
    parser.add_argument("--num-samples", type=int, default=None)
    add_score_args(parser)
    args = parser.parse_args(argv)
    if not args.score_file:
        parser.error("--score-file is required")
    rec = maybe_write_score(args, args.benchmark, args.score, result_file=args.result_file,
                            num_samples=args.num_samples, details={"source": "manual"})
    print(f"wrote {args.score_file}: {args.benchmark} = {args.score:.2f}")
    return rec


def main(argv=None) -> dict:
    return run_cli(_record_main, argv)


if __name__ == "__main__":
    main()
