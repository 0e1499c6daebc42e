"""MM-Vet grader against a fake OpenAI-compatible endpoint on 127.0.0.1 (no network)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from llava.eval import eval_mmvet


class _FakeChat(BaseHTTPRequestHandler):
    requests: list = []
    replies: list = []  # popped per request; "0.7" once empty

    def do_POST(self):  # noqa: N802 (http.server API)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        content = type(self).replies.pop(0) if type(self).replies else "0.7"
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture()
def fake_server():
    _FakeChat.requests = []
    _FakeChat.replies = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeChat)
    server.timeout = 5
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", _FakeChat
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _data(tmp_path):
    mmvet = tmp_path / "mm-vet"
    mmvet.mkdir()
    (mmvet / "mm-vet.json").write_text(json.dumps({
        "v1_0": {"imagename": "v1_0.png", "capability": ["ocr", "math"], "question": "What is 2+3?", "answer": "5"},
        "v1_1": {"imagename": "v1_1.png", "capability": ["rec"], "question": "What animal is it?",
                 "answer": "dog <OR> puppy"},
    }))
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"v1_0": "The answer is 5.", "v1_1": "A cat."}))
    return str(mmvet), str(results)


@pytest.mark.parametrize("reply, expected", [("0.7", 0.7), ("Score: 1.0", 1.0), ("0", 0.0), (".5", 0.5),
                                             ("5", None), ("great answer", None), ("", None)])
def test_parse_score(reply, expected):
    assert eval_mmvet.parse_score(reply) == expected


def test_prompt_contains_case():
    p = eval_mmvet.build_prompt("What | is it?", "dog <AND> cat", "a dog")
    assert p.endswith("What / is it? | dog <AND> cat | a dog |")
    assert "<OR>" in p and "0.0" in p and "1.0" in p


def test_missing_env_fails_clearly(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MMVET_API_BASE", raising=False)
    monkeypatch.delenv("MMVET_API_KEY", raising=False)
    mmvet, results = _data(tmp_path)
    with pytest.raises(SystemExit) as exc:
        eval_mmvet.main(["--mmvet-data", mmvet, "--result-file", results, "--output", str(tmp_path / "o.json")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "MMVET_API_BASE and MMVET_API_KEY are not set" in err


def test_grading_with_fake_server_and_cache(tmp_path, monkeypatch, capsys, fake_server):
    url, handler = fake_server
    monkeypatch.setenv("MMVET_API_BASE", url)
    monkeypatch.setenv("MMVET_API_KEY", "test-key")
    monkeypatch.delenv("MMVET_MODEL", raising=False)
    mmvet, results = _data(tmp_path)
    handler.replies = ["1.0", "no idea", "0.4"]  # v1_0 -> 1.0; v1_1: unparsable, retried -> 0.4
    out = tmp_path / "out" / "mmvet.json"
    argv = ["--mmvet-data", mmvet, "--result-file", results, "--output", str(out), "--retry-sleep", "0",
            "--request-timeout", "5"]
    res = eval_mmvet.main(argv)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == "MM-Vet total: 70.00"
    assert res["per_capability"] == {"rec": pytest.approx(40.0), "ocr": 100.0, "math": 100.0}
    assert len(handler.requests) == 3
    first = handler.requests[0]
    assert first["path"] == "/v1/chat/completions"
    assert first["auth"] == "Bearer test-key"
    assert first["body"]["model"] == "gpt-4-0613" and first["body"]["temperature"] == 0.0
    assert handler.requests[2]["body"]["temperature"] > 0.0
    assert json.loads(out.read_text())["total"] == pytest.approx(70.0)

    # re-run: everything cached, no request (and no env needed)
    monkeypatch.delenv("MMVET_API_KEY")
    res2 = eval_mmvet.main(argv)
    assert len(handler.requests) == 3 and res2["num_graded_now"] == 0
    assert res2["total"] == pytest.approx(70.0)

    # a changed prediction is re-graded, the other one is not
    monkeypatch.setenv("MMVET_API_KEY", "test-key")
    with open(results, "w") as fh:
        json.dump({"v1_0": "The answer is 5.", "v1_1": "A puppy."}, fh)
    handler.replies = ["1.0"]
    res3 = eval_mmvet.main(argv)
    assert len(handler.requests) == 4 and res3["total"] == pytest.approx(100.0)
