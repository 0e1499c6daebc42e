"""Collect benchmark scores into the paper's results table (Table II layout).

One row per (model, method and its non-default options, retention ratio), in Table II's order
(per model: uncompressed, then each ratio from the largest, GlobalCom² last); columns VQAv2 GQA
VizWiz SQA TextVQA POPE MME MMB MMB-CN MM-Vet, then ``Average`` = mean over the row's available benchmarks of
score / uncompressed score x 100 (raw MME perception), as in the paper.  ``Average`` is marked
``*`` with the number of benchmarks used when fewer than ten are available.

Where the scores come from
--------------------------
Score records: JSON files named ``score*.json`` anywhere under ``--results-dir`` (searched
recursively; default ``playground/data/eval``).  Every scorer writes one with ``--score-file``
(recommended: ``<answers dir>/score_<benchmark>.json`` next to the answers), and
``python -m llava.eval.scoring_utils`` writes one by hand for server-scored numbers (VQAv2,
VizWiz).  A record is a JSON object with the keys::

    benchmark        vqav2 | gqa | vizwiz | sqa | textvqa | pope | mme | mmbench | mmbench_cn | mmvet
    score            the table's number (percent; MME perception score)
    metric           name of the metric (informational)
    method           compression method, "uncompressed" for the full model   (may be null)
    retention_ratio  R, 1.0 for uncompressed                                  (may be null)
    model            model name                                               (may be null)
    created          ISO time; the newest record wins when a cell has several
    partial          true: scored with --allow-partial from an incomplete answers file
    lenient          true: scored with --lenient, not by the original tool's rules
    num_samples, result_file, details, coverage   (informational)

A null ``method``/``retention_ratio``/``model`` is filled from a ``config.json`` next to the score
file, then next to its ``result_file``: ``{"compression": {"name": "globalcom2",
"retention_ratio": 0.25}, "model": "llava-v1.6-vicuna-7b"}`` (no/null ``compression`` or the name
``none`` means uncompressed).  A file holding a JSON list is read as several records.

A partial or lenient score is shown as such (``59.2 (partial)``) and left out of the Average (so
its ``*(n)`` mark shows how many benchmarks were averaged); a footnote says which cells these are.

Average baseline (``--baseline``): ``auto`` uses the uncompressed row of the same model found in
the results; ``paper-7b`` / ``paper-13b`` use the paper's uncompressed figures.

Options: a record's ``compression`` (copied from the run's ``config.json`` by the scorers, or
read from a ``config.json`` next to the score file) names every option of the run; those that
differ from the method's defaults label the row (``visionzip (merge=mean)``), so runs of one
method with different options never share a row.

``--paper`` prints the paper's own Table II (7B) with the Averages recomputed from its
per-benchmark figures next to the published ones — for FastV, SparseVLM and FasterVLM only the
published Averages are recorded here — plus the 13B uncompressed row.
"""

from __future__ import annotations

import argparse
import csv
import glob
import io
import json
import os
from collections.abc import Iterable

from llava.eval.paper_results import (
    AVERAGES_7B,
    AVERAGES_13B,
    BENCHMARK_ORDER,
    COLUMN_NAMES,
    PAPER_PEERS_7B,
    paper_baseline,
    paper_rows,
    relative_average,
)
from llava.eval.scoring_utils import BENCHMARKS, normalise_method, read_run_config, run_cli

_FILLED = ("method", "retention_ratio", "model", "compression")


def _fill_from_config(rec: dict, score_path: str) -> dict:
    rec = dict(rec)
    for source in (score_path, rec.get("result_file")):
        if all(rec.get(k) is not None for k in _FILLED):
            break
        if not source:
            continue
        cfg = read_run_config(source)
        for k in _FILLED:
            if rec.get(k) is None and cfg.get(k) is not None:
                rec[k] = cfg[k]
    rec["method"], rec["retention_ratio"] = normalise_method(rec.get("method"), rec.get("retention_ratio"))
    rec["options"] = method_options(rec["method"], rec.get("compression"))
    return rec


def method_options(method: str | None, compression: dict | None) -> str:
    """The options of a run's compression config that differ from the method's defaults, as
    ``"merge=mean, newlines=all"`` (empty for the defaults, or when the method or its config is
    unknown here). Rows of one method with different options are kept apart."""
    if not method or method == "uncompressed" or not isinstance(compression, dict):
        return ""
    if str(compression.get("name")) != method:
        return ""
    import dataclasses

    from llava.compression import COMPRESSORS  # imports torch: only when configs are found

    cls = COMPRESSORS.get(method)
    if cls is None:
        return ""
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    changed = [f"{k}={compression[k]}" for k in defaults
               if k != "retention_ratio" and k in compression and compression[k] != defaults[k]]
    return ", ".join(changed)


def discover(results_dir: str) -> list[dict]:
    """All score records under ``results_dir`` (``**/score*.json``), with config.json filled in."""
    records = []
    for path in sorted(glob.glob(os.path.join(results_dir, "**", "score*.json"), recursive=True)):
        try:
            with open(path, encoding="utf-8") as fh:
                obj = json.load(fh)
        except (OSError, json.JSONDecodeError) as exc:
            print(f"warning: skipping unreadable score file {path}: {exc}")
            continue
        for rec in obj if isinstance(obj, list) else [obj]:
            if not isinstance(rec, dict) or rec.get("benchmark") not in BENCHMARKS or rec.get("score") is None:
                print(f"warning: skipping {path}: not a score record (needs 'benchmark' and 'score')")
                continue
            rec = _fill_from_config(rec, path)
            rec.setdefault("created", "")
            rec["_path"] = path
            rec["_mtime"] = os.path.getmtime(path)
            records.append(rec)
    return records


def record_flag(rec: dict) -> str | None:
    """``"partial"`` / ``"lenient"`` for a score that is not the original tool's number, else None."""
    if rec.get("partial"):
        return "partial"
    if rec.get("lenient"):
        return "lenient"
    return None


def comparable_scores(row: dict) -> dict[str, float]:
    """The row's scores without its partial or lenient ones."""
    flags = row.get("flags", {})
    return {b: v for b, v in row["scores"].items() if b not in flags}


#: Row order within a retention ratio: the paper's Table II (FastV, SparseVLM, FasterVLM, then
#: GlobalCom²), the other peers before GlobalCom², methods not listed here in name order.
METHOD_ORDER = ("fastv", "sparsevlm", "pdrop", "fastervlm", "visionzip", "hired", "prumerge", "prumerge_plus")


def method_rank(method: str | None) -> tuple:
    m = str(method or "~")
    if m == "uncompressed":
        return (0, 0, "")
    if m in METHOD_ORDER:
        return (1, METHOD_ORDER.index(m), "")
    return (3 if m == "globalcom2" else 2, 0, m)


def build_rows(records: Iterable[dict]) -> list[dict]:
    """Merge records into rows ``{"model", "method", "options", "retention_ratio", "scores"}``
    (newest wins), ordered like the paper's Table II: per model, the uncompressed row, then each
    retention ratio from the largest with its methods in :data:`METHOD_ORDER`, GlobalCom² last."""
    cells: dict[tuple, dict] = {}
    for rec in records:
        key = (rec.get("model"), rec.get("method"), rec.get("options", ""), rec.get("retention_ratio"), rec["benchmark"])
        stamp = (str(rec.get("created") or ""), rec.get("_mtime", 0.0))
        if key not in cells or stamp >= cells[key][0]:
            cells[key] = (stamp, float(rec["score"]), record_flag(rec))
    rows: dict[tuple, dict] = {}
    for (model, method, options, ratio, bench), (_stamp, score, flag) in cells.items():
        row = rows.setdefault((model, method, options, ratio), {
            "model": model, "method": method, "options": options, "retention_ratio": ratio, "scores": {}, "flags": {}})
        row["scores"][bench] = score
        if flag:
            row["flags"][bench] = flag

    def order(row):
        ratio = row["retention_ratio"] if row["retention_ratio"] is not None else -1
        return (str(row["model"] or ""), row["method"] != "uncompressed", -ratio, method_rank(row["method"]),
                row.get("options", ""))

    return sorted(rows.values(), key=order)


def add_averages(rows: list[dict], baseline: str = "auto") -> list[dict]:
    """Set ``average`` / ``n_average`` on every row relative to the chosen uncompressed baseline."""
    local = {r["model"]: comparable_scores(r) for r in rows if r["method"] == "uncompressed"}
    for r in rows:
        if baseline == "auto":
            base = local.get(r["model"])
        else:
            base = paper_baseline(baseline.split("-", 1)[1])
        r["average"], r["n_average"] = relative_average(comparable_scores(r), base) if base else (None, 0)
    return rows


def _fmt_ratio(r) -> str:
    if r is None:
        return "-"
    return f"{100 * r:g}%"


def _fmt_score(val, flag: str | None = None) -> str:
    if val is None:
        return "-"
    return f"{val:.1f}" + (f" ({flag})" if flag else "")


def _fmt_avg(row) -> str:
    if row.get("average") is None:
        return "-"
    n = row.get("n_average", len(BENCHMARK_ORDER))
    mark = "" if n == len(BENCHMARK_ORDER) else f"*({n})"
    return f"{row['average']:.1f}%{mark}"


def table_cells(rows: list[dict], extra: list[tuple[str, str]] | None = None) -> tuple[list[str], list[list[str]]]:
    header = ["Model", "Method", "R"] + [COLUMN_NAMES[b] for b in BENCHMARK_ORDER] + ["Average"]
    extra = extra or []
    header += [name for name, _ in extra]
    body = []
    for r in rows:
        method = str(r.get("method") or "unknown") + (f" ({r['options']})" if r.get("options") else "")
        cells = [str(r.get("model") or "-"), method, _fmt_ratio(r.get("retention_ratio"))]
        cells += [_fmt_score(r["scores"].get(b), r.get("flags", {}).get(b)) for b in BENCHMARK_ORDER]
        cells.append(_fmt_avg(r))
        cells += [str(r.get(key, "-")) for _, key in extra]
        body.append(cells)
    return header, body


def render_text(header: list[str], body: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *body)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in body]
    return "\n".join(lines)


def render_markdown(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def render_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["model", "method", "options", "retention_ratio"] + BENCHMARK_ORDER
               + ["average", "n_average", "not_comparable"])
    for r in rows:
        flags = r.get("flags", {})
        w.writerow([r.get("model") or "", r.get("method") or "", r.get("options", ""),
                    "" if r.get("retention_ratio") is None else r["retention_ratio"]]
                   + ["" if r["scores"].get(b) is None else r["scores"][b] for b in BENCHMARK_ORDER]
                   + ["" if r.get("average") is None else round(r["average"], 4), r.get("n_average", 0),
                      ";".join(f"{b}:{flags[b]}" for b in BENCHMARK_ORDER if b in flags)])
    return buf.getvalue()


def paper_table_rows() -> list[dict]:
    """The paper's 7B rows (Table II: GlobalCom² with per-benchmark figures and recomputed
    Averages; FastV, SparseVLM and FasterVLM with their published Averages only) and the 13B
    uncompressed row, in Table II's order."""
    rows = []
    for model in ("7b", "13b"):
        for r in paper_rows(model):
            avg, n = relative_average(r["scores"], paper_baseline(model))
            rows.append({**r, "average": avg, "n_average": n,
                         "published": f"{r['published_average']:.1f}%"})
    name = rows[0]["model"]
    for method in PAPER_PEERS_7B:
        for ratio, published in AVERAGES_7B[method].items():
            rows.append({"model": name, "method": method, "retention_ratio": ratio, "scores": {}, "average": None,
                         "n_average": 0, "published_average": published, "published": f"{published:.1f}%"})
    return build_order(rows)


def build_order(rows: list[dict]) -> list[dict]:
    """``rows`` in Table II's order (see :func:`build_rows`)."""
    return sorted(rows, key=lambda r: ("13b" in str(r["model"]), r["method"] != "uncompressed",
                                       -r["retention_ratio"], method_rank(r["method"])))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m llava.eval.summarize",
                                description="Summarise benchmark score records into the paper's table.")
    p.add_argument("--results-dir", default="playground/data/eval",
                   help="folder searched recursively for score*.json records (default: %(default)s)")
    p.add_argument("--paper", action="store_true", help="print the paper's own Table II (7B: GlobalCom² per "
                   "benchmark, FastV/SparseVLM/FasterVLM published Averages) and 13B baseline")
    p.add_argument("--baseline", choices=["auto", "paper-7b", "paper-13b"], default="auto",
                   help="uncompressed scores the Average is relative to (default: %(default)s)")
    p.add_argument("--csv", default=None, metavar="OUT", help="also write the table as CSV")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table instead of plain text")
    return p


def _main(argv=None) -> list[dict]:
    args = build_parser().parse_args(argv)
    render = render_markdown if args.markdown else render_text
    if args.paper:
        rows = paper_table_rows()
        header, body = table_cells(rows, extra=[("Published", "published")])
        print("Paper, Table II (LLaVA-NeXT-7B) and Table III uncompressed 13B; Average recomputed:")
        print(render(header, body))
        print(f"{', '.join(PAPER_PEERS_7B)}: only the published Averages are recorded here (their per-benchmark "
              "figures are in the paper's Table II), so their cells and recomputed Average are '-'.")
        print("Published 13B Averages at R = 75/50/25/10%: " + ", ".join(
            f"{m} " + "/".join(f"{v:.1f}" for v in AVERAGES_13B[m].values()) for m in ("globalcom2", "fastervlm")))
    else:
        rows = add_averages(build_rows(discover(args.results_dir)), args.baseline)
        if not rows:
            print(f"no score records (score*.json) found under {args.results_dir}; "
                  f"run the scorers with --score-file (see llava/eval/summarize.py)")
            return rows
        header, body = table_cells(rows)
        print(render(header, body))
        flagged = [f"{r.get('model')} {r.get('method')} {_fmt_ratio(r.get('retention_ratio'))} {COLUMN_NAMES[b]}"
                   for r in rows for b in BENCHMARK_ORDER if b in r.get("flags", {})]
        if flagged:
            print(f"(partial) = scored from an incomplete answers file (--allow-partial), (lenient) = not by the "
                  f"original tool's rules (--lenient): not the paper-comparable number, left out of the Average "
                  f"({len(flagged)}: {', '.join(flagged)})")
    if args.csv:
        parent = os.path.dirname(args.csv)
        if parent:
            os.makedirs(parent, exist_ok=True)
        with open(args.csv, "w", encoding="utf-8", newline="") as fh:
            fh.write(render_csv(rows))
        print(f"wrote {args.csv}")
    return rows


def main(argv=None) -> list[dict]:
    return run_cli(_main, argv)


if __name__ == "__main__":
    main()
