"""What every scorer shares: coverage checks and refusals, the score record, the CLI tail, one
question-id canonicaliser; and llava.eval.summarize (partial records shown as such, never averaged)."""

from __future__ import annotations

import json

import pytest
from scorer_files import coverage_line, output_lines, refused, write_json, write_jsonl

from llava.eval import (
    convert_gqa_for_eval,
    convert_mmbench_for_submission,
    convert_mmvet_for_eval,
    convert_vizwiz_for_submission,
    convert_vqav2_for_submission,
    eval_gqa,
    eval_mmbench,
    eval_mme,
    eval_mmvet,
    eval_pope,
    eval_science_qa,
    eval_textvqa,
    ids,
    paper_results,
    scoring_utils,
    summarize,
)
from llava.eval.answer_coverage import Tally, check_coverage, is_error_entry
from llava.eval.scoring_utils import ScorerInputError

SCORERS = (eval_textvqa, eval_pope, eval_science_qa, eval_gqa, eval_mme, eval_mmbench, eval_mmvet)
CONVERTERS = (convert_vqav2_for_submission, convert_vizwiz_for_submission, convert_mmvet_for_eval,
              convert_mmbench_for_submission, convert_gqa_for_eval)


# --------------------------------------------------------------------------- coverage


def test_tally_counts_and_refusals(capsys):
    tally = Tally(["a", "b", "b", "c", "d"])  # "b" is asked twice
    assert [tally.add(k) for k in ("a", "b", "b", "b", "zz")] == [True, True, True, False, False]
    assert tally.add("c", error=True) is False
    cov = tally.finish()
    assert (cov.num_questions, cov.answered, cov.errors, cov.duplicates, cov.unknown, cov.missing) == (
        5, 3, ["c"], ["b"], ["zz"], ["c", "d"])
    assert not cov.complete
    with pytest.raises(ScorerInputError) as exc:
        check_coverage(cov, "answers.jsonl", allow_partial=False)
    msg = str(exc.value)
    assert msg.startswith("refusing to score answers.jsonl: 2 of 5 questions have no answer (first: c, d); "
                          "1 error entry (first: c); 1 duplicate answer (first: b); 1 answer with ids unknown")
    assert "--allow-partial" in msg
    assert output_lines(capsys) == [coverage_line(5, 3, errors=1, duplicates=1, unknown=1, missing=2)]
    check_coverage(cov, "answers.jsonl", allow_partial=True)
    assert output_lines(capsys)[-1].startswith("warning: --allow-partial: scores 3 of 5 questions")

    empty = Tally(["a"]).finish()
    with pytest.raises(ScorerInputError, match="empty answers file"):
        check_coverage(empty, "x.jsonl", allow_partial=True)
    foreign = Tally(["a"])
    foreign.add("q1")
    with pytest.raises(ScorerInputError, match="none of its 1 answers is a usable answer"):
        check_coverage(foreign.finish(), "x.jsonl", allow_partial=True)


def test_error_entries():
    assert is_error_entry({"question_id": 1, "text": "", "error": "image file not found"})
    assert is_error_entry({"question_id": 1, "text": "", "metadata": {"error": "bad image"}})
    assert not is_error_entry({"question_id": 1, "text": "yes", "metadata": {"visual_tokens": 5}})


def test_empty_and_foreign_files_are_refused(tmp_path, capsys):
    ann = write_json(tmp_path / "TextVQA_0.5.1_val.json", {"data": [
        {"question_id": 1, "image_id": "i", "question": "q?", "answers": ["a"] * 10}]})
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert "empty answers file" in refused(
        eval_textvqa.main, ["--annotation-file", ann, "--result-file", str(empty), "--allow-partial"], capsys)
    # POPE answers given to the GQA scorer: no id is a GQA question
    qs = write_json(tmp_path / "testdev_balanced_questions.json",
                    {"20968379": {"answer": "yes", "isBalanced": True, "types": {"structural": "verify"}}})
    pope = write_jsonl(tmp_path / "pope.jsonl", [{"question_id": str(i), "text": "Yes"} for i in (1, 2)])
    err = refused(eval_gqa.main, ["--questions", qs, "--predictions", pope, "--allow-partial"], capsys)
    assert "none of its 2 answers is a usable answer" in err and "(first: 1, 2)" in err


def test_one_canonical_question_id():
    assert ids.qid_key(5) == ids.qid_key("5") == ids.qid_key(5.0) == ids.qid_key(" 5 ") == "5"
    assert ids.qid_key("artwork/10002.jpg") == "artwork/10002.jpg"
    for mod in SCORERS + CONVERTERS + (scoring_utils,):
        assert getattr(mod, "qid_key", ids.qid_key) is ids.qid_key, mod.__name__


def test_every_cli_has_help_and_the_shared_flags(capsys):
    for mod in SCORERS + CONVERTERS + (summarize, scoring_utils):
        with pytest.raises(SystemExit) as exc:
            mod.main(["--help"])
        assert exc.value.code == 0
        out = capsys.readouterr().out
        assert "usage: python -m llava.eval." in out
        if mod in SCORERS or mod in CONVERTERS:
            assert "--allow-partial" in out
        if mod in SCORERS:
            assert "--score-file" in out


def test_missing_file_and_malformed_line(tmp_path, capsys):
    missing = str(tmp_path / "textvqa" / "TextVQA_0.5.1_val.json")
    err = refused(eval_textvqa.main, ["--annotation-file", missing, "--result-file", missing], capsys)
    assert f"error: annotation file not found: {missing}" in err and "playground/data/eval/README.md" in err
    qs = write_json(tmp_path / "q.json", {"1": {"answer": "yes"}})
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question_id": "1", "text": "yes"}\n{"question_id": 2, "text": \n')
    assert f"{bad}:2: malformed JSON line" in refused(eval_gqa.main, ["--questions", qs, "--predictions", str(bad)],
                                                      capsys)


# --------------------------------------------------------------------------- score records + summary


def _record(path, bench, score, **kw):
    scoring_utils.main(["--benchmark", bench, "--score", str(score), "--score-file", str(path),
                        *sum(([f"--{k.replace('_', '-')}", str(v)] for k, v in kw.items()), [])])


def test_score_record_and_summarize_average(tmp_path, capsys):
    # uncompressed run: method/ratio/model from config.json next to the answers
    full = tmp_path / "textvqa" / "answers" / "full"
    write_json(full / "config.json", {"compression": None, "model": "llava-v1.6-vicuna-7b"})
    ann = write_json(tmp_path / "ann.json", {"data": [
        {"question_id": i, "image_id": f"i{i}", "question": f"q{i}", "answers": ["a"] * 10} for i in range(5)]})
    res = write_jsonl(full / "answers.jsonl", [{"question_id": f"i{i}", "prompt": f"q{i}\nAnswer briefly.",
                                                "text": "a" if i < 3 else "b"} for i in range(5)])
    eval_textvqa.main(["--annotation-file", ann, "--result-file", res, "--score-file", str(full / "score_textvqa.json")])
    rec = json.loads((full / "score_textvqa.json").read_text())
    assert {"benchmark", "metric", "score", "method", "retention_ratio", "model", "num_samples", "result_file",
            "created", "details", "partial", "lenient", "coverage"} <= set(rec)
    assert (rec["benchmark"], rec["score"], rec["method"], rec["retention_ratio"], rec["model"], rec["partial"]) == (
        "textvqa", 60.0, "uncompressed", 1.0, "llava-v1.6-vicuna-7b", False)
    assert rec["coverage"] == {"questions": 5, "answered": 5, "error_entries": 0, "duplicates": 0, "unknown_ids": 0,
                               "without_answer": 0}

    _record(full / "score_pope.json", "pope", 80.0)
    _record(full / "score_mme.json", "mme", 1500.0)
    comp = tmp_path / "gc2"
    write_json(comp / "config.json", {"compression": {"name": "globalcom2", "retention_ratio": 0.25},
                                      "model": "llava-v1.6-vicuna-7b"})
    _record(comp / "score_textvqa.json", "textvqa", 54.0)  # 90 %
    _record(comp / "score_pope.json", "pope", 84.0)  # 105 %
    _record(comp / "score_mme.json", "mme", 1350.0)  # 90 %
    capsys.readouterr()
    csv_out = tmp_path / "table.csv"
    rows = summarize.main(["--results-dir", str(tmp_path), "--csv", str(csv_out)])
    by_key = {(r["method"], r["retention_ratio"]): r for r in rows}
    assert by_key[("uncompressed", 1.0)]["average"] == pytest.approx(100.0)
    assert by_key[("globalcom2", 0.25)]["average"] == pytest.approx((90 + 105 + 90) / 3)
    assert by_key[("globalcom2", 0.25)]["n_average"] == 3
    assert "globalcom2" in csv_out.read_text()
    rows = summarize.main(["--results-dir", str(tmp_path), "--baseline", "paper-7b"])
    gc = next(r for r in rows if r["method"] == "globalcom2")
    assert gc["average"] == pytest.approx(100 * (54 / 61.3 + 84 / 86.5 + 1350 / 1519.0) / 3)

    # a partial TextVQA score for the compressed run: shown as partial, left out of the Average
    rec = json.loads((comp / "score_textvqa.json").read_text())
    (comp / "score_textvqa.json").write_text(json.dumps({**rec, "score": 30.0, "partial": True}))
    capsys.readouterr()
    rows = summarize.main(["--results-dir", str(tmp_path), "--csv", str(csv_out)])
    gc = next(r for r in rows if r["method"] == "globalcom2")
    assert gc["flags"] == {"textvqa": "partial"}
    assert (gc["average"], gc["n_average"]) == (pytest.approx((105 + 90) / 2), 2)
    out = capsys.readouterr().out
    assert "30.0 (partial)" in out and "97.5%*(2)" in out
    assert "left out of the Average (1: llava-v1.6-vicuna-7b globalcom2 25% TextVQA)" in out
    assert csv_out.read_text().splitlines()[2].endswith(",textvqa:partial")


def test_paper_averages_reproduce_published():
    base = paper_results.UNCOMPRESSED_7B
    published = paper_results.AVERAGES_7B["globalcom2"]
    assert set(published) == {0.75, 0.50, 0.25, 0.10}
    for ratio, scores in paper_results.GLOBALCOM2_7B.items():
        avg, n = paper_results.relative_average(scores, base)
        assert n == 10
        assert round(avg, 1) == published[ratio]
    assert paper_results.relative_average(base, base) == (100.0, 10)


def test_summarize_paper_cli(capsys):
    rows = summarize.main(["--paper"])
    got = [(r["method"], r["retention_ratio"], round(r["average"], 1)) for r in rows
           if "7b" in r["model"] and r["average"] is not None]
    assert got == [("uncompressed", 1.0, 100.0), ("globalcom2", 0.75, 98.9), ("globalcom2", 0.5, 98.7),
                   ("globalcom2", 0.25, 96.9), ("globalcom2", 0.1, 91.8)]
    # Table II's order, each ratio: FastV, SparseVLM, FasterVLM (published Averages only), GlobalCom²
    at10 = [(r["method"], r["published"]) for r in rows if r["retention_ratio"] == 0.1]
    assert at10 == [("fastv", "87.8%"), ("sparsevlm", "83.2%"), ("fastervlm", "90.3%"), ("globalcom2", "91.8%")]
    assert all(r["scores"] == {} for r in rows if r["method"] in ("fastv", "sparsevlm", "fastervlm"))
    assert any(r["model"].endswith("13b") and r["scores"]["mme"] == 1575.9 for r in rows)
    out = capsys.readouterr().out
    assert "98.9%" in out and "1519.0" in out
    assert "fastv, sparsevlm, fastervlm: only the published Averages are recorded here" in out


# --------------------------------------------------------------------------- runs never mix


def test_score_record_refuses_another_runs_name(tmp_path):
    """A score is never labelled with a model / method / ratio other than the run's config.json."""
    run = tmp_path / "answers" / "run"
    run.mkdir(parents=True)
    result = run / "merge.jsonl"
    result.write_text("")
    fp = {"path": "/ckpts/a", "fingerprint": "abc123"}
    write_json(run / "config.json", {"model": "model-a", "checkpoint": fp,
                                     "compression": {"name": "globalcom2", "retention_ratio": 0.25}})
    ok = scoring_utils.make_score_record("gqa", 60.0, result_file=str(result), model="model-a",
                                         method="globalcom2", retention_ratio=0.25)
    assert (ok["model"], ok["method"], ok["retention_ratio"], ok["checkpoint"]) == ("model-a", "globalcom2", 0.25, fp)
    for kw, said in ((dict(model="model-b"), "model 'model-a' (--model-name says 'model-b')"),
                     (dict(method="fastervlm", retention_ratio=0.25), "method 'globalcom2' (--method says 'fastervlm')"),
                     (dict(method="globalcom2", retention_ratio=0.1), "retention ratio 0.25 (--retention-ratio says 0.1)"),
                     (dict(method="none"), "method 'globalcom2' (--method says 'uncompressed')")):
        with pytest.raises(ScorerInputError, match="refusing to record their score under another run") as exc:
            scoring_utils.make_score_record("gqa", 60.0, result_file=str(result), **kw)
        assert said in str(exc.value)
    # uncompressed aliases agree with a config that says none
    write_json(run / "config.json", {"model": "model-a", "compression": {"name": "none"}})
    rec = scoring_utils.make_score_record("gqa", 1.0, result_file=str(result), method="none", retention_ratio=1.0)
    assert (rec["method"], rec["retention_ratio"], "checkpoint" in rec) == ("uncompressed", 1.0, False)
