"""MM-Vet grading as MM-Vet's evaluator does it, against a fake OpenAI-compatible endpoint on
127.0.0.1 (no network): the exact request, the reply parsing, the re-ask/temperature schedule,
rate limits, totals, coverage and the grade cache."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from scorer_files import output_lines, refused

from llava.eval import convert_mmvet_for_eval, eval_mmvet
from llava.eval.eval_mmvet import MMVET_PROMPT, REASK


class _FakeChat(BaseHTTPRequestHandler):
    requests: list = []
    replies: list = []  # popped per request: a reply text, or an int HTTP status; "0.7" once empty

    def do_POST(self):  # noqa: N802 (http.server API)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        reply = type(self).replies.pop(0) if type(self).replies else "0.7"
        status = reply if isinstance(reply, int) else 200
        data = json.dumps({"model": "gpt-4-0613-served",
                           "choices": [{"message": {"role": "assistant", "content": reply}}]}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture()
def fake_server(monkeypatch):
    _FakeChat.requests = []
    _FakeChat.replies = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeChat)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    monkeypatch.setenv("MMVET_API_BASE", f"http://127.0.0.1:{server.server_address[1]}/v1")
    monkeypatch.setenv("MMVET_API_KEY", "test-key")
    monkeypatch.delenv("MMVET_MODEL", raising=False)
    try:
        yield _FakeChat
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


DATA = {
    "v1_0": {"imagename": "v1_0.png", "capability": ["ocr", "math"], "question": "What is x in the equation?",
             "answer": "-1<AND>-5"},
    "v1_1": {"imagename": "v1_1.png", "capability": ["rec"], "question": "What animal is it?", "answer": "dog<OR>puppy"},
    "v1_2": {"imagename": "v1_2.png", "capability": ["rec", "know"], "question": "Who painted it?", "answer": "Monet"},
}
PREDS = {"v1_0": "x = -1", "v1_1": "A cat.", "v1_2": "Claude Monet"}


def _files(tmp_path, preds=PREDS):
    mmvet = tmp_path / "mm-vet"
    mmvet.mkdir(parents=True, exist_ok=True)
    (mmvet / "mm-vet.json").write_text(json.dumps(DATA))
    results = tmp_path / "results.json"
    results.write_text(json.dumps(preds))
    return ["--mmvet-data", str(mmvet), "--result-file", str(results), "--output", str(tmp_path / "out" / "g.json"),
            "--retry-sleep", "0", "--rate-limit-sleep", "0", "--request-timeout", "5"]


@pytest.mark.parametrize("reply, expected", [
    ("0.7", 0.7), ("1.0", 1.0), ("0", 0.0), (".5", 0.5), ("0.5 because", 0.5), ("0.4\n", 0.4),
    (" 0.5", None),  # MM-Vet splits on " ": the first piece is empty
    ("Score: 1.0", None), ("1.5", None), ("-0.1", None), ("great answer", None), ("", None), (None, None)])
def test_reply_parsing(reply, expected):
    assert eval_mmvet.parse_score(reply) == expected


def test_request_text():
    assert eval_mmvet.build_prompt("What is x?", "-1<AND>-5", "x = 3") == MMVET_PROMPT + "\nWhat is x? | -1 <AND> -5 | x = 3 | "
    assert MMVET_PROMPT.startswith("Compare the ground truth and prediction from AI models, to give a correctness score")
    assert "Question | Ground truth | Prediction | Correctness\n--- | --- | --- | ---\n" in MMVET_PROMPT
    assert MMVET_PROMPT.count("\nWhat is x in the equation? | -1 <AND> -5 | ") == 5
    assert MMVET_PROMPT.endswith("their actual physical characteristics. | 1.0\n")
    assert eval_mmvet._round(0.15) == 0.2  # numpy rounding, as MM-Vet's export (Python's round gives 0.1)


def test_grading_requests_and_totals(tmp_path, capsys, fake_server):
    # v1_0 -> 1.0; v1_1: five unreadable replies, re-asked at 0, 0.5, 1.0, 1.5, 2.0, then 0.0 (6th unread);
    # v1_2 -> "0.5 ok" after one re-ask
    fake_server.replies = ["1.0"] + ["no"] * 5 + ["0.9"] + ["maybe", "0.5 ok"]
    argv = _files(tmp_path)
    res = eval_mmvet.main(argv + ["--score-file", str(tmp_path / "score_mmvet.json")])
    reqs = [r["body"] for r in fake_server.requests]
    assert len(reqs) == 9
    assert all(r["max_tokens"] == 3 and r["model"] == "gpt-4-0613" and len(r["messages"]) == 1 for r in reqs)
    assert fake_server.requests[0]["path"] == "/v1/chat/completions"
    assert fake_server.requests[0]["auth"] == "Bearer test-key"
    first_v1_1 = eval_mmvet.build_prompt("What animal is it?", "dog<OR>puppy", "A cat.")
    assert [r["messages"][0]["content"] for r in reqs[1:7]] == [first_v1_1] + [first_v1_1 + REASK] * 5
    assert [r["temperature"] for r in reqs[1:7]] == [0.0, 0.0, 0.5, 1.0, 1.5, 2.0]
    assert [r["temperature"] for r in reqs[7:]] == [0.0, 0.0]
    assert res["scores"] == {"v1_0": [1.0], "v1_1": [0.0], "v1_2": [0.5]}
    # total (1.0 + 0.0 + 0.5) / 3 = 50.0; rec (0.0 + 0.5) / 2 = 25.0; ocr = math = 100; know 50
    assert res["total"] == 50.0
    assert res["per_capability"] == {"rec": 25.0, "ocr": 100.0, "math": 100.0, "know": 50.0}
    assert output_lines(capsys)[-1] == "MM-Vet total: 50.0"
    grades = json.loads((tmp_path / "out" / "g.cache.json").read_text())
    assert grades["v1_1"]["content"] == ["0.9"] and grades["v1_2"]["content"] == ["0.5"]  # MM-Vet's grade file
    assert grades["v1_0"]["model"] == ["gpt-4-0613-served"]
    assert json.loads((tmp_path / "score_mmvet.json").read_text())["score"] == 50.0

    # re-run: all cached, no request (and no endpoint needed)
    eval_mmvet.main(argv)
    assert len(fake_server.requests) == 9
    # a changed prediction is graded again, the others are not
    (tmp_path / "results.json").write_text(json.dumps({**PREDS, "v1_1": "A puppy."}))
    fake_server.replies = ["1.0"]
    assert eval_mmvet.main(argv)["total"] == pytest.approx(83.3)
    assert len(fake_server.requests) == 10


def test_rate_limit_and_runs(tmp_path, fake_server):
    fake_server.replies = [429, "0.8", "0.2", "0.4", "0.6", "0.6", "0.1"]
    res = eval_mmvet.main(_files(tmp_path) + ["--num-run", "2"])
    # the rate-limited request is asked again, unchanged
    assert fake_server.requests[0]["body"] == fake_server.requests[1]["body"]
    # run 0: 0.8 0.2 0.4 (total 46.67); run 1: 0.6 0.6 0.1 (43.33); mean 45.0
    assert res["scores"] == {"v1_0": [0.8, 0.6], "v1_1": [0.2, 0.6], "v1_2": [0.4, 0.1]}
    assert res["runs"] == [46.7, 43.3] and res["total"] == 45.0 and res["std"] == 1.7


def test_coverage_and_endpoint_errors(tmp_path, capsys, fake_server, monkeypatch):
    argv = _files(tmp_path, {"v1_0": "x", "v1_1": "y"})
    assert "1 of 3 questions have no answer (first: v1_2)" in refused(eval_mmvet.main, argv, capsys)
    res = eval_mmvet.main(argv + ["--allow-partial"])
    assert res["num_samples"] == 2 and output_lines(capsys)[-1] == "MM-Vet total: 70.0 (partial)"

    argv = _files(tmp_path, {**PREDS, "v1_9": "extra"})
    assert "1 answer with ids unknown to the benchmark (first: v1_9)" in refused(eval_mmvet.main, argv, capsys)

    monkeypatch.delenv("MMVET_API_BASE")
    monkeypatch.delenv("MMVET_API_KEY")
    argv = _files(tmp_path / "fresh")
    assert "MMVET_API_BASE and MMVET_API_KEY are not set" in refused(eval_mmvet.main, argv, capsys)
    monkeypatch.setenv("MMVET_API_BASE", "http://127.0.0.1:9/v1")  # nothing listens there
    monkeypatch.setenv("MMVET_API_KEY", "k")
    assert "grading request failed 2 times" in refused(eval_mmvet.main, argv + ["--request-retries", "1"], capsys)


def test_convert_mmvet(tmp_path, capsys):
    (tmp_path / "mm-vet").mkdir()
    (tmp_path / "mm-vet" / "mm-vet.json").write_text(json.dumps(DATA))
    src = tmp_path / "mm-vet" / "answers" / "a.jsonl"
    src.parent.mkdir()
    src.write_text("".join(json.dumps({"question_id": i, "text": t}) + "\n" for i, t in enumerate(["x", "y", "é"])))
    dst = tmp_path / "mm-vet" / "results" / "a.json"
    convert_mmvet_for_eval.main(["--src", str(src), "--dst", str(dst)])
    assert dst.read_text() == json.dumps({"v1_0": "x", "v1_1": "y", "v1_2": "é"}, indent=2)  # ASCII-escaped, as json.dump
    src.write_text("".join(json.dumps({"question_id": i, "text": "x"}) + "\n" for i in (0, 1, 1)))
    err = refused(convert_mmvet_for_eval.main, ["--src", str(src), "--dst", str(dst)], capsys)
    assert "1 duplicate answer (first: v1_1)" in err and "1 of 3 questions have no answer (first: v1_2)" in err
