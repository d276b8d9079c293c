"""A scripted OpenAI-compatible server on 127.0.0.1 for tests: deterministic answers per prompt, and faults on cue.

Answers come from the fake LM's `synthesize` (so a whole pipeline job runs against it); faults are queued with
`plan(...)` and each is spent on the next request that arrives. Nothing waits on a guessed delay: a held request
waits on a Condition until the answers it must follow are out, a hung one on an Event released at close.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from selfinstruct.lm.fake import fake_score, synthesize

_TOKEN = re.compile(r"\s*\S+|\s+")


def echo_logprobs(text: str) -> dict:
    """completions `echo` logprobs for `text` split into words, plus one generated token past its end.

    The last word of `text` (the continuation being scored, e.g. " Yes") gets the fake LM's score.
    """
    tokens = _TOKEN.findall(text)
    offsets, pos = [], 0
    for t in tokens + [" x"]:
        offsets.append(pos)
        pos += len(t)
    values = [None] + [-0.1] * (len(tokens) - 2) + [fake_score("".join(tokens[:-1]), tokens[-1])]
    return {"tokens": tokens + [" x"], "text_offset": offsets, "token_logprobs": values[:len(tokens)] + [-0.5],
            "top_logprobs": None}


class FaultServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, model: str = "test-model", logprobs: bool = True, echo: bool = True):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.model = model
        self.logprobs = logprobs  # False: a server that ignores logprobs/echo, as transformers serve does
        self.echo = echo  # False: logprobs of the generated token only, as llama.cpp's server gives
        self.faults: list = []  # spent one per arriving request: "500", ("429", secs), "hang", "truncate", ...
        self.requests: list[dict] = []  # every request body, as it arrived (faulted ones too)
        self.headers_seen: list[dict] = []
        self.answered: list[str] = []  # prompts answered with a 200, in answer order
        self.order: list[str] | None = None  # if set, answers leave in exactly this order of prompts
        self.always: dict[str, object] = {}  # prompt -> fault for every request of that prompt
        self.cond = threading.Condition()
        self.release = threading.Event()  # hung requests wait on it; set at close
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def plan(self, *faults) -> None:
        with self.cond:
            self.faults.extend(faults)

    def __enter__(self) -> FaultServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        with self.cond:
            self.order = None
            self.cond.notify_all()
        self.shutdown()
        self.server_close()


def prompt_of(body: dict) -> str:
    return body["messages"][-1]["content"] if "messages" in body else body.get("prompt", "")


def answer(body: dict) -> str:
    """The server's deterministic text for a request (the fake LM's, from prompt and seed)."""
    return synthesize(prompt_of(body), int(body.get("seed") or 0), chat="messages" in body)


class _Handler(BaseHTTPRequestHandler):
    server: FaultServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def _send(self, status: int, payload: bytes, headers: dict | None = None, cut: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(payload[:len(payload) // 2] if cut else payload)
        if cut:
            self.close_connection = True

    def do_GET(self) -> None:
        s = self.server
        s.headers_seen.append(dict(self.headers))
        if self.path.rstrip("/") == "/v1/models":
            self._send(200, json.dumps({"object": "list", "data": [{"id": s.model, "object": "model"}]}).encode())
        else:
            self._send(404, b'{"detail": "not found"}')

    def do_POST(self) -> None:
        s = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with s.cond:
            s.requests.append(body)
            s.headers_seen.append(dict(self.headers))
            fault = s.always.get(prompt_of(body)) or (s.faults.pop(0) if s.faults else None)
        if fault == "hang":
            s.release.wait(30)
            self.close_connection = True
            return
        if fault == "reset":
            self.close_connection = True
            return  # closes without a status line
        if fault == "500":
            return self._send(500, b'{"error": "internal"}')
        if isinstance(fault, tuple) and fault[0] == "429":
            return self._send(429, b'{"error": "slow down"}', {"Retry-After": str(fault[1])})
        if isinstance(fault, tuple) and fault[0] == "400":
            return self._send(400, json.dumps({"error": fault[1]}).encode())
        if body.get("model") != s.model:
            return self._send(404, json.dumps({"error": f"model {body.get('model')} not found"}).encode())
        payload = self._payload(body)
        if fault == "garbage":
            return self._send(200, b'{"choices": [{"text": "unfinished')
        if fault == "nochoices":
            return self._send(200, b'{"id": "x"}')
        prompt = prompt_of(body)
        with s.cond:
            if s.order is not None and prompt in s.order:
                # out of order on purpose: wait until every prompt listed before this one has been answered
                position = s.order.index(prompt)
                if not s.cond.wait_for(lambda: s.order is None or len(s.answered) >= position, timeout=20):
                    return self._send(503, b'{"error": "order wait timed out"}')
        if fault != "truncate":
            with s.cond:  # recorded before the answer leaves, so a client that has it sees it recorded
                s.answered.append(prompt)
                s.cond.notify_all()
        self._send(200, payload, cut=fault == "truncate")

    def _payload(self, body: dict) -> bytes:
        s = self.server
        chat = "messages" in body
        usage = {"prompt_tokens": len(prompt_of(body).split()), "completion_tokens": 0}
        if body.get("echo") and s.logprobs and not s.echo:
            choice = {"index": 0, "text": " x", "finish_reason": "length",
                      "logprobs": {"tokens": [" x"], "text_offset": [len(body["prompt"])], "token_logprobs": [-0.5]}}
        elif body.get("echo") and s.logprobs:  # scoring: the prompt's own log-probabilities
            choice = {"index": 0, "text": body["prompt"] + " x", "finish_reason": "length",
                      "logprobs": echo_logprobs(body["prompt"])}
        elif chat and body.get("logprobs") and s.logprobs:
            p = prompt_of(body)
            top = [{"token": t, "logprob": fake_score(p, " " + t)} for t in ("Yes", "No")]
            choice = {"index": 0, "message": {"role": "assistant", "content": "Yes"}, "finish_reason": "length",
                      "logprobs": {"content": [{"token": "Yes", "logprob": top[0]["logprob"], "top_logprobs": top}]}}
        else:
            text = answer(body)
            stops = [x for x in body.get("stop") or [] if x in text]
            cut = min((text.index(x) for x in stops), default=len(text))
            words = text[:cut].split()
            limit = int(body.get("max_tokens") or 16)
            length = len(words) >= limit
            text = " ".join(words[:limit]) if length else text[:cut]
            finish = "length" if length else "stop"
            usage["completion_tokens"] = min(len(words), limit)
            choice = {"index": 0, "finish_reason": finish, "stop_reason": stops[0] if stops and not length else None}
            choice.update({"message": {"role": "assistant", "content": text}} if chat else {"text": text})
        return json.dumps({"id": "x", "object": "chat.completion" if chat else "text_completion",
                           "model": s.model, "choices": [choice], "usage": usage}).encode()
