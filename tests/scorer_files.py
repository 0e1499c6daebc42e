"""Helpers of the scorer tests: write small benchmark files, read a scorer's output."""

from __future__ import annotations

import json

import pytest


def write_jsonl(path, rows) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def write_json(path, obj) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    return str(path)


def output_lines(capsys) -> list[str]:
    return [ln for ln in capsys.readouterr().out.splitlines() if ln.strip()]


def refused(main, argv, capsys) -> str:
    """Run a scorer CLI that must refuse: exit code 2; returns the error message."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    return err


def coverage_line(questions, answered, errors=0, duplicates=0, unknown=0, missing=0) -> str:
    return (f"coverage: {questions} questions, {answered} answered, {errors} error entries, {duplicates} duplicates, "
            f"{unknown} unknown ids, {missing} without an answer")
