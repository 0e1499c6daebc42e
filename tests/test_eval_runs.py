"""Runs that cannot mix, and bad inputs that stop a run before any work (llava.eval.runs):
checkpoint identity, the answers-file lock, resume refusals, exit codes, one-line errors,
atomic writes — on the tiny random checkpoint and the session's reference run."""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from eval_utils import FAST, answers, checkpoint_variant, copy_run, loader_args, strip_ids, write_jsonl

from llava.eval import model_vqa_loader
from llava.eval.runs import answers_io, lock
from llava.eval.runs.checkpoint import checkpoint_identity
from llava.eval.runs.errors import RunError


def _refused(argv, capsys, code: int = 2) -> str:
    """Run the loader driver, expect exit ``code`` and return its one-line error message."""
    with pytest.raises(SystemExit) as exc:
        model_vqa_loader.main(argv)
    assert exc.value.code == code
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error: ")]
    assert len(err) == 1, err
    return err[0]


@pytest.fixture
def finished(vqa, reference, tmp_path) -> Path:
    """A private copy of the finished reference run (answers + config records)."""
    return copy_run(vqa / "ref", tmp_path / "run")


# ----------------------------------------------------------------------------- checkpoint identity


def test_checkpoint_fingerprint_is_content_based_and_cheap(tiny_ckpt, tmp_path):
    ident = checkpoint_identity(tiny_ckpt)
    assert ident["path"] == os.path.realpath(tiny_ckpt) and ident["fingerprint"].startswith("sha256:")
    copy = tmp_path / "copy"
    shutil.copytree(tiny_ckpt, copy)
    assert checkpoint_identity(str(copy)) == {"path": str(copy.resolve()), "fingerprint": ident["fingerprint"]}
    assert checkpoint_identity(str(copy) + "/") == checkpoint_identity(str(copy))
    link = tmp_path / "link"
    link.symlink_to(copy)
    assert checkpoint_identity(str(link))["path"] == str(copy.resolve())
    # another config, another weight byte, another tokenizer, another vision-tower config: another model
    assert checkpoint_identity(checkpoint_variant(tiny_ckpt, tmp_path / "cfg", {"mm_patch_merge_type": "flat"})) \
        ["fingerprint"] != ident["fingerprint"]
    assert checkpoint_identity(checkpoint_variant(tiny_ckpt, tmp_path / "w", flip_weight_byte=True)) \
        ["fingerprint"] != ident["fingerprint"]
    tok = tmp_path / "copy" / "tokenizer_config.json"
    tok.write_text(tok.read_text().replace("}", ', "x": 1}', 1))
    assert checkpoint_identity(str(copy))["fingerprint"] != ident["fingerprint"]
    shutil.copytree(tiny_ckpt, tmp_path / "copy2")
    vision = next(p for p in (tmp_path / "copy2").iterdir() if p.is_dir()) / "config.json"
    vision.write_text(vision.read_text().replace("}", ', "x": 1}', 1))
    assert checkpoint_identity(str(tmp_path / "copy2"))["fingerprint"] != ident["fingerprint"]
    with pytest.raises(RunError, match="model folder not found"):
        checkpoint_identity(str(tmp_path / "nope"))


def test_resume_refuses_another_checkpoint_with_the_same_name(tiny_ckpt, vqa, finished, tmp_path, capsys):
    """The issue's textvqa.sh case: same --model-name (CKPT), another checkpoint folder."""
    name = json.loads((finished.parent / "config.json").read_text())["model"]
    other = checkpoint_variant(tiny_ckpt, tmp_path / name, flip_weight_byte=True)
    before = finished.read_text()
    msg = _refused(loader_args(other, vqa, finished), capsys)
    assert "checkpoint.fingerprint" in msg and "--overwrite" in msg
    assert finished.read_text() == before
    # the same checkpoint copied elsewhere is the same model: resumed (nothing left to do)
    copy = tmp_path / "copy" / name
    shutil.copytree(tiny_ckpt, copy)
    summary = model_vqa_loader.main(loader_args(str(copy), vqa, finished))
    assert summary["answered_now"] == 0 and finished.read_text() == before
    # the folder's config.json (what the scorers read) names the checkpoint, now where it was last found
    assert json.loads((finished.parent / "config.json").read_text())["checkpoint"] == {
        "path": str(copy.resolve()), "fingerprint": checkpoint_identity(tiny_ckpt)["fingerprint"]}


def test_resume_refuses_other_settings(tiny_ckpt, vqa, finished, capsys):
    for extra, key in ((["--retention-ratio", "0.5"], "compression"), (["--dtype", "bfloat16"], "dtype"),
                       (["--max-new-tokens", "4"], "generation"), (["--model-name", "other"], "model")):
        msg = _refused(loader_args(tiny_ckpt, vqa, finished, *extra), capsys)
        assert "other settings" in msg and key in msg
    msg = _refused(loader_args(tiny_ckpt, vqa, finished, "--drop-ocr-line"), capsys)
    assert "prompt_options" in msg


# ----------------------------------------------------------------------------- resume refusals (--force)


def test_resume_without_config_record_is_refused_unless_forced(tiny_ckpt, vqa, finished, reference, capsys):
    for name in ("answers.config.json", "config.json"):
        (finished.parent / name).unlink()
    msg = _refused(loader_args(tiny_ckpt, vqa, finished), capsys)
    assert "no config record" in msg and "--force" in msg
    summary = model_vqa_loader.main(loader_args(tiny_ckpt, vqa, finished, "--force"))
    assert summary["answered_now"] == 0 and (finished.parent / "answers.config.json").exists()


def test_resume_from_another_question_file_or_image_folder_is_refused_unless_forced(
        tiny_ckpt, vqa, finished, tmp_path, capsys):
    rows = [json.loads(x) for x in (vqa / "questions.jsonl").read_text().splitlines()]
    other = tmp_path / "other"
    write_jsonl(other / "questions.jsonl", [{**r, "text": r["text"].replace("color", "shape")} for r in rows])
    shutil.copytree(vqa / "images", other / "images")
    args = ["--model-path", None, "--question-file", str(other / "questions.jsonl"), "--answers-file", str(finished)]
    # same ids, other questions (another benchmark version); the same images elsewhere
    msg = _refused([tiny_ckpt if a is None else a for a in args] + ["--image-folder", str(vqa / "images"), *FAST],
                   capsys)
    assert "other questions" in msg and "questions.fingerprint" in msg and "image_folder" not in msg
    msg = _refused(loader_args(tiny_ckpt, vqa, finished, "--image-folder", str(other / "images")), capsys)
    assert "image_folder" in msg and "--force" in msg
    summary = model_vqa_loader.main(loader_args(tiny_ckpt, vqa, finished, "--image-folder", str(other / "images"),
                                                "--force"))
    assert summary["answered_now"] == 0


def test_answers_to_unknown_questions_are_refused_unless_forced(tiny_ckpt, vqa, reference, tmp_path, capsys):
    out = copy_run(vqa / "ref", tmp_path / "run")
    stray = {**reference[0], "question_id": 999}
    out.write_text(out.read_text() + json.dumps(stray) + "\n")
    msg = _refused(loader_args(tiny_ckpt, vqa, out), capsys)
    assert "1 answer(s) to questions that are not in this question file" in msg and "999" in msg
    # a chunk resumed with another chunking holds answers outside its chunk: refused too
    out2 = copy_run(vqa / "ref", tmp_path / "run2")
    msg = _refused(loader_args(tiny_ckpt, vqa, out2, "--num-chunks", "2", "--chunk-idx", "1"), capsys)
    assert "not in this question file or chunk" in msg


def test_a_folder_holds_one_run(tiny_ckpt, vqa, finished, capsys):
    """A new answers file in a folder whose config.json records another run is refused."""
    new = finished.parent / "second.jsonl"
    msg = _refused(loader_args(tiny_ckpt, vqa, new, "--retention-ratio", "0.5"), capsys)
    assert "config.json records another run" in msg and "compression" in msg
    assert not new.exists()


# ----------------------------------------------------------------------------- lock


def test_second_run_on_one_answers_file_is_refused_and_names_the_holder(tiny_ckpt, vqa, finished, capsys):
    with lock.AnswersLock(str(finished)):
        msg = _refused(loader_args(tiny_ckpt, vqa, finished), capsys)
        assert f"pid {os.getpid()} on {socket.gethostname()}" in msg
        # also through a symlink to the same file
        link = finished.parent / "link.jsonl"
        link.symlink_to(finished)
        msg = _refused(loader_args(tiny_ckpt, vqa, link), capsys)
        assert "being written by" in msg
    summary = model_vqa_loader.main(loader_args(tiny_ckpt, vqa, finished))  # released: goes on
    assert summary["answered_now"] == 0


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path, monkeypatch):
    """Where flock is unsupported, the recorded pid decides: a dead holder on this host is
    stale, a live one holds the lock. (With flock, see the kill test in test_eval_generation.)"""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    target = tmp_path / "a.jsonl"
    lock_file = Path(lock.lock_path(str(target)))

    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(lock.fcntl, "flock", no_flock)
    lock_file.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "since": "then"}))
    with lock.AnswersLock(str(target)):
        assert json.loads(lock_file.read_text())["pid"] == os.getpid()
    assert not lock_file.exists()
    lock_file.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": "now"}))
    with pytest.raises(RunError, match=f"pid {os.getpid()}"):
        lock.AnswersLock(str(target)).acquire()
    lock_file.write_text(json.dumps({"pid": dead.pid, "host": "elsewhere", "since": "then"}))
    with pytest.raises(RunError, match="on elsewhere"):  # another host's pid cannot be checked
        lock.AnswersLock(str(target)).acquire()


# ----------------------------------------------------------------------------- exit codes, files


def test_a_run_whose_every_question_failed_exits_non_zero(tiny_ckpt, vqa, tmp_path, capsys):
    write_jsonl(tmp_path / "q.jsonl", [{"question_id": i, "image": f"gone{i}.png", "text": "?"} for i in range(2)])
    out = tmp_path / "ans" / "answers.jsonl"
    argv = ["--model-path", tiny_ckpt, "--question-file", str(tmp_path / "q.jsonl"), "--image-folder",
            str(vqa / "images"), "--answers-file", str(out), *FAST]
    msg = _refused(argv, capsys, code=1)
    assert "all 2 questions failed" in msg and "gone0.png" in msg
    assert [r["question_id"] for r in answers(out)] == [0, 1]  # recorded, for the resume


def test_answers_file_equal_to_question_file_is_refused(tiny_ckpt, vqa, tmp_path, capsys, monkeypatch):
    qdir = tmp_path / "q"
    shutil.copytree(vqa, qdir, ignore=shutil.ignore_patterns("ref"))
    qfile = qdir / "questions.jsonl"
    before = qfile.read_text()
    link = tmp_path / "link.jsonl"
    link.symlink_to(qfile)
    monkeypatch.chdir(tmp_path)
    for answers_file in (str(qfile), str(link), "q/../q/questions.jsonl"):
        msg = _refused(["--model-path", tiny_ckpt, "--question-file", str(qfile), "--image-folder",
                        str(qdir / "images"), "--answers-file", answers_file, "--overwrite", *FAST], capsys)
        assert "is the question file" in msg
    assert qfile.read_text() == before and not list(tmp_path.rglob("*.config.json"))


def test_failed_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    p = tmp_path / "a.jsonl"
    p.write_text("old\n")

    def broken_replace(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(answers_io.os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space"):
        answers_io.write_atomic(str(p), "new\n")
    assert p.read_text() == "old\n" and sorted(x.name for x in tmp_path.iterdir()) == ["a.jsonl"]


def test_symlinked_answers_file_stays_a_symlink(tiny_ckpt, vqa, reference, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    target = store / "real.jsonl"
    target.write_text("".join(json.dumps(r) + "\n" for r in reversed(reference[:3])))  # out of order: rewritten
    link_dir = tmp_path / "run"
    link_dir.mkdir()
    for name in ("answers.config.json", "config.json"):
        (link_dir / name).write_bytes((vqa / "ref" / name).read_bytes())
    link = link_dir / "answers.jsonl"
    link.symlink_to(target)
    summary = model_vqa_loader.main(loader_args(tiny_ckpt, vqa, link))
    assert summary["skipped"] == 3 and summary["answered_now"] == 2
    assert link.is_symlink() and link.resolve() == target
    assert strip_ids(answers(target)) == strip_ids(reference)
    assert sorted(x.name for x in store.iterdir()) == ["real.jsonl"]  # no temporaries, lock released


# ----------------------------------------------------------------------------- one-line errors before any work


def _bad_checkpoint(tiny_ckpt: str, tmp_path: Path, **changes) -> str:
    return checkpoint_variant(tiny_ckpt, tmp_path / "ckpt", changes)


BAD_INPUTS = {
    "max_new_tokens_0": (lambda ck, tmp: (ck, ["--max-new-tokens", "0"]), "--max-new-tokens must be >= 1"),
    "conv_mode_typo": (lambda ck, tmp: (ck, ["--conv-mode", "vicuna_v2"]), "unknown --conv-mode 'vicuna_v2'"),
    "cuda_without_cuda": (lambda ck, tmp: (ck, ["--device", "cuda"]), "CUDA is not available"),
    "missing_image_folder": (lambda ck, tmp: (ck, ["--image-folder", str(tmp / "nope")]), "--image-folder not found"),
    "missing_model": (lambda ck, tmp: (str(tmp / "nope"), []), "model folder not found"),
    "ratio_0": (lambda ck, tmp: (ck, ["--retention-ratio", "0"]), "retention_ratio must be in (0, 1]"),
    "option_of_another_method": (lambda ck, tmp: (ck, ["--alpha", "0.3", "--compression", "fastervlm"]),
                                 "--compression fastervlm does not take --alpha"),
    # the model-side checks (load_pretrained_model raises ValueError with a one-line message)
    "score_layer_99": (lambda ck, tmp: (ck, ["--score-layer", "99"]), "layer"),
    "bad_torch_dtype": (lambda ck, tmp: (_bad_checkpoint(ck, tmp, torch_dtype="float17"), []), "float17"),
    "bad_torch_dtype_auto": (lambda ck, tmp: (_bad_checkpoint(ck, tmp, torch_dtype="float17"), ["--dtype", "auto"]),
                             "--dtype auto: "),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_a_one_line_error_before_any_work(case, tiny_ckpt, vqa, tmp_path, capsys):
    if case == "cuda_without_cuda":
        import torch

        if torch.cuda.is_available():
            pytest.skip("CUDA is available here")
    make, expected = BAD_INPUTS[case]
    ckpt, extra = make(tiny_ckpt, tmp_path)
    out = tmp_path / "ans" / "answers.jsonl"
    msg = _refused(loader_args(ckpt, vqa, out, *extra), capsys)
    assert expected in msg
    assert not out.exists() and not (tmp_path / "ans" / "config.json").exists()


def test_non_utf8_question_file_names_file_and_line(tiny_ckpt, vqa, tmp_path, capsys):
    from llava.eval import model_vqa_mmbench, model_vqa_science

    good = (vqa / "questions.jsonl").read_bytes().split(b"\n")
    bad = tmp_path / "q.jsonl"
    bad.write_bytes(b"\n".join(good[:2] + [good[2].replace(b"object", b"obj\xe9ct")] + good[3:]))
    out = tmp_path / "ans" / "answers.jsonl"
    msg = _refused(["--model-path", tiny_ckpt, "--question-file", str(bad), "--image-folder", str(vqa / "images"),
                    "--answers-file", str(out), *FAST], capsys)
    assert msg.startswith(f"error: {bad}:3: not UTF-8 (byte 0xe9 at column ") and not out.exists()
    for module, name in ((model_vqa_science, "q.json"), (model_vqa_mmbench, "q.tsv")):
        f = tmp_path / name
        f.write_bytes(b"line one\nline \xff two\n")
        with pytest.raises(SystemExit) as exc:
            module.main(["--model-path", tiny_ckpt, "--question-file", str(f), "--answers-file", str(out), *FAST])
        assert exc.value.code == 2 and f"error: {f}:2: not UTF-8" in capsys.readouterr().err


@pytest.mark.parametrize("exc", [ValueError("score layer 99 is out of range for a 2-layer vision tower"),
                                 FileNotFoundError("vision tower config not found: /x")])
def test_model_set_up_errors_are_one_line(exc, tiny_ckpt, vqa, tmp_path, capsys, monkeypatch):
    """What load_pretrained_model raises for model-side problems becomes ``error: <message>``,
    exit code 2, before any answer or config record is written."""
    import llava.model.builder

    def failing_load(*args, **kwargs):
        raise exc

    monkeypatch.setattr(llava.model.builder, "load_pretrained_model", failing_load)
    out = tmp_path / "ans" / "answers.jsonl"
    assert _refused(loader_args(tiny_ckpt, vqa, out), capsys) == f"error: {exc}"
    assert not out.exists() and not list((tmp_path / "ans").glob("*.json"))


def test_dtype_flag_reaches_the_loader_and_the_record(tiny_ckpt, vqa, tmp_path, capsys, monkeypatch):
    """--dtype: default float32 on CPU, a name as given, auto = the checkpoint's torch_dtype."""
    import torch

    import llava.model.builder

    seen = []

    def capture(*args, **kwargs):
        seen.append(kwargs["dtype"])
        raise ValueError("stop here")

    monkeypatch.setattr(llava.model.builder, "load_pretrained_model", capture)
    bf16 = checkpoint_variant(tiny_ckpt, tmp_path / "bf16", {"torch_dtype": "bfloat16"})
    for k, (ckpt, extra) in enumerate([(tiny_ckpt, []), (tiny_ckpt, ["--dtype", "float16"]), (bf16, ["--dtype", "auto"])]):
        _refused(loader_args(ckpt, vqa, tmp_path / f"a{k}.jsonl", *extra), capsys)
    assert seen == [torch.float32, torch.float16, torch.bfloat16]
