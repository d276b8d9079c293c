"""An OpenAI-compatible HTTP server (vLLM, SGLang, llama.cpp, Ollama, transformers serve) as the LM.

Standard library only: one JSON POST per prompt over urllib, `concurrency` of them in flight on threads.
The server does the batching; this module keeps order, retries what is retryable and says what failed.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import random
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Callable

from selfinstruct.errors import ModelError
from selfinstruct.lm.base import Completion, GenerationParams, apply_stop, per_prompt

log = logging.getLogger("selfinstruct")

ENDPOINTS = ("completions", "chat")
RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}  # overloaded, restarting or a proxy in between
BACKOFF_BASE_S = 0.5  # first retry waits about this long, doubling per attempt ...
BACKOFF_CAP_S = 8.0  # ... up to this
RETRY_AFTER_CAP_S = 60.0  # a server's Retry-After is honoured up to this
TOP_LOGPROBS = 20  # the most OpenAI's chat API returns per position


def url_problem(url: object) -> str | None:
    """Why `url` cannot be a server base URL, or None. Never repeats the URL (it may hold a password)."""
    if not isinstance(url, str) or not url.strip():
        return "must be a non-empty http(s) URL string"
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// URL with a host, e.g. http://127.0.0.1:8000/v1"
    if parts.username is not None or parts.password is not None:
        return "must not hold credentials (user:password@); put the key in the variable model.api_key_env names"
    if parts.query or parts.fragment:
        return "must not have a query or fragment"
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        return "has an invalid port"
    return None


def request_seed(seed: int, index: int) -> int:
    """The seed sent with prompt `index` of a call: stable, independent of order and replica (31 bits)."""
    digest = hashlib.sha256(f"{seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") >> 1


class _Abandoned(ModelError):
    """A request given up because another request of the same call failed: never the error to report."""


class _Retryable(Exception):
    """One attempt failed in a way another attempt may not (status, timeout, reset, cut-off answer)."""

    def __init__(self, what: str, retry_after: float | None = None):
        super().__init__(what)
        self.retry_after = retry_after


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


def _finish(choice: dict) -> str:
    """The pipeline's finish reason: "length", "stop" (a stop string) or "eos"."""
    reason = choice.get("finish_reason")
    if reason == "length":
        return "length"
    if "stop_reason" in choice:  # vLLM/SGLang: None = end of sequence, else the stop string or token hit
        return "eos" if choice["stop_reason"] is None else "stop"
    return "stop"  # OpenAI's "stop" covers both; only "length" changes a decision


class OpenAIBackend:
    """Completions from an OpenAI-compatible server; implements selfinstruct.lm.base.LM."""

    def __init__(self, base_url: str | list[str], name: str, *, endpoint: str = "completions",
                 api_key_env: str = "", concurrency: int = 8, timeout_s: float = 120.0, max_retries: int = 4,
                 backoff_s: float = BACKOFF_BASE_S, sleep: Callable[[float], None] | None = None):
        urls = [base_url] if isinstance(base_url, str) else list(base_url)
        for u in urls:
            problem = url_problem(u)
            if problem:
                raise ModelError(f"model.base_url {problem}")
        if endpoint not in ENDPOINTS:
            raise ModelError(f"model.endpoint must be one of {ENDPOINTS}, got {endpoint!r}")
        if not urls:
            raise ModelError("model.base_url: give at least one server URL")
        self.urls = [u.strip().rstrip("/") for u in urls]
        self.name = name
        self.endpoint = endpoint
        self.concurrency = max(1, concurrency)
        self.timeout_s = timeout_s
        self.max_retries = max(0, max_retries)
        self.backoff_s = backoff_s
        # Set when a call fails or is interrupted (Ctrl-C): the other requests of that call stop retrying,
        # and a backoff wait ends at once, so the process does not linger on threads it no longer needs.
        # One Event per call, seen by that call's requests through a thread-local (a straggler of an earlier,
        # failed call must not see a later call's cleared event and resume retrying).
        self._call = threading.local()
        self._sleep = sleep  # tests pass a recorder: backoff is measured, never waited for
        self._key = ""
        if api_key_env:
            self._key = os.environ.get(api_key_env, "")
            if not self._key:
                raise ModelError(f"model.api_key_env names the environment variable {api_key_env}, which is not set")
        # The server applies the model's chat template to a chat turn, whichever endpoint raw prompts use
        # (completions: few-shot prompts as they are, chat turns to /chat/completions, as hf does).
        self.has_chat_template = True
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self.served = [self._check_served(u) for u in self.urls]

    # ---- LM interface ----

    def environment(self) -> dict:
        """Server URL(s) (never a key), the served model and the endpoint, for provenance."""
        return {"backend": "openai", "base_url": self.urls if len(self.urls) > 1 else self.urls[0],
                "model": self.name, "served_model": self.served[0], "endpoint": self.endpoint}

    def generate(self, prompts: list[str], params: GenerationParams | list[GenerationParams],
                 seed: int) -> list[Completion]:
        """One completion per prompt, in prompt order; prompt i goes to replica i mod len(base_url)."""
        each = per_prompt(params, len(prompts))
        if any(p.no_repeat_ngram_size for p in each):
            raise ModelError("no_repeat_ngram_size is not part of the OpenAI API; set it to 0 with model.backend: openai")

        def one(i: int, prompt: str) -> Completion:
            params = each[i]
            chat = params.chat or self.endpoint == "chat"
            body = self._body(prompt, chat)
            body.update(max_tokens=params.max_new_tokens, temperature=params.temperature, top_p=params.top_p,
                        seed=request_seed(seed, i))
            if params.stop:
                body["stop"] = list(params.stop)
            if params.repetition_penalty != 1.0:  # not OpenAI's; vLLM and SGLang take it as an extra field
                body["repetition_penalty"] = params.repetition_penalty
            data = self._post(self._path(chat), body, i, seed)
            choice = self._choice(data)
            text = choice.get("message", {}).get("content") if chat else choice.get("text")
            if not isinstance(text, str):
                raise ModelError(f"malformed answer from {self._url(i)}: no completion text in choices[0]")
            usage = data.get("usage") or {}
            return Completion(apply_stop(text, params.stop), int(usage.get("prompt_tokens") or 0),
                              int(usage.get("completion_tokens") or 0), meta={"finish_reason": _finish(choice)})

        return self._map(one, prompts)

    def score(self, prompts: list[str], continuations: list[str], chat: bool = False) -> list[float]:
        """Log-probability of each continuation: completions `echo` + `logprobs`, or chat `top_logprobs`."""
        if len(prompts) != len(continuations):
            raise ValueError("score needs one continuation per prompt")
        chat = chat or self.endpoint == "chat"
        pairs = list(zip(prompts, continuations))
        return self._map(lambda i, pc: self._score_chat(i, *pc) if chat else self._score_echo(i, *pc), pairs)

    # ---- scoring ----

    def _score_echo(self, i: int, prompt: str, continuation: str) -> float:
        full = prompt + continuation
        # max_tokens 1: some servers refuse 0; the one generated token lies past the text and is left out.
        body = {"model": self.name, "prompt": full, "echo": True, "logprobs": 1, "max_tokens": 1, "temperature": 0}
        lp = self._choice(self._post("/completions", body, i, 0)).get("logprobs")
        if not isinstance(lp, dict) or not lp.get("token_logprobs") or not lp.get("text_offset"):
            raise ModelError(f"{self._url(i)} returned no prompt log-probabilities (completions echo + logprobs); "
                             "this server cannot score, so classification cannot run on it")
        total, counted, start, end = 0.0, 0, len(prompt), len(full)
        for tok, off, value in zip(lp.get("tokens") or [], lp["text_offset"], lp["token_logprobs"]):
            if off < end and off + len(tok) > start:  # a token of the continuation (or straddling its start)
                if value is None:
                    raise ModelError(f"{self._url(i)} gave no log-probability for a continuation token")
                total, counted = total + float(value), counted + 1
        if not counted:  # e.g. llama.cpp: logprobs of the generated token only, echo ignored; 0.0 would be a lie
            raise ModelError(f"{self._url(i)} returned log-probabilities for generated tokens only (completions echo "
                             "not honoured); this server cannot score, so classification cannot run on it")
        return total

    def _score_chat(self, i: int, prompt: str, continuation: str) -> float:
        body = self._body(prompt, True)
        body.update(max_tokens=1, temperature=0, logprobs=True, top_logprobs=TOP_LOGPROBS)
        content = (self._choice(self._post("/chat/completions", body, i, 0)).get("logprobs") or {}).get("content")
        if not content:
            raise ModelError(f"{self._url(i)} returned no chat log-probabilities (logprobs + top_logprobs); "
                             "this server cannot score, so classification cannot run on it")
        want = continuation.strip()
        for cand in content[0].get("top_logprobs") or []:
            if isinstance(cand, dict) and str(cand.get("token", "")).strip() == want:
                return float(cand["logprob"])
        # Not among the top tokens (or more than one token long): below every listed one.
        listed = [float(c["logprob"]) for c in content[0].get("top_logprobs") or [] if "logprob" in c]
        if not listed:
            raise ModelError(f"{self._url(i)} returned no top_logprobs for the reply's first token")
        return min(listed) - 1.0

    # ---- HTTP ----

    def _body(self, prompt: str, chat: bool) -> dict:
        if chat:
            return {"model": self.name, "messages": [{"role": "user", "content": prompt}]}
        return {"model": self.name, "prompt": prompt}

    @staticmethod
    def _path(chat: bool) -> str:
        return "/chat/completions" if chat else "/completions"

    def _url(self, i: int, attempt: int = 0) -> str:
        return self.urls[(i + attempt) % len(self.urls)]  # a retry goes to the next replica

    def _choice(self, data: dict) -> dict:
        choices = data.get("choices") if isinstance(data, dict) else None
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise ModelError(f"malformed answer from the server: no choices[0] in {str(data)[:120]!r}")
        return choices[0]

    def _redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def _map(self, fn: Callable, items: list) -> list:
        """fn(i, item) for every item, `concurrency` at a time; results in item order, or the first error."""
        if not items:
            return []
        if self.concurrency == 1 or len(items) == 1:
            return [fn(i, x) for i, x in enumerate(items)]
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="selfinstruct-openai")
        abort = threading.Event()

        def run(i: int, x):
            self._call.abort = abort
            return fn(i, x)

        futures = [self._pool.submit(run, i, x) for i, x in enumerate(items)]
        try:
            done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        except BaseException:  # KeyboardInterrupt: drop what has not started, stop the retries
            abort.set()
            for f in futures:
                f.cancel()
            raise
        failed = [f.exception() for f in futures if f in done and f.exception() is not None]
        if failed:
            abort.set()
            for p in pending:
                p.cancel()
            # the first real failure in prompt order (not one abandoned because of it), so the error is reproducible
            raise next((e for e in failed if not isinstance(e, _Abandoned)), failed[0])
        return [f.result() for f in futures]

    def _request(self, url: str, method: str = "GET", body: dict | None = None) -> dict:
        """One attempt; raises _Retryable for what may pass, ModelError for what will not."""
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            detail = self._redact(e.read(300).decode("utf-8", "replace").strip().replace("\n", " "))
            if e.code in RETRY_STATUS:
                raise _Retryable(f"HTTP {e.code}", _retry_after(e.headers.get("Retry-After"))) from None
            hint = ""
            if e.code in (400, 422) and "repetition_penalty" in detail:  # e.g. transformers serve refuses it
                hint = ("; this server does not take repetition_penalty: set it to 1.0 in generation, instances "
                        "and answers")
            elif url.endswith("/chat/completions") and e.code in (400, 422) and "template" in detail:
                hint = "; a model without a chat template cannot answer chat turns: set instances.response: fewshot"
            raise ModelError(f"{url} answered HTTP {e.code}: {detail[:200]}{hint}") from None
        except (TimeoutError, socket.timeout):
            raise _Retryable(f"no answer within model.timeout_s = {self.timeout_s:g} s") from None
        except urllib.error.URLError as e:
            reason = e.reason
            if isinstance(reason, (TimeoutError, socket.timeout)):
                raise _Retryable(f"no answer within model.timeout_s = {self.timeout_s:g} s") from None
            raise _Retryable(f"cannot connect ({type(reason).__name__}: {reason})") from None
        except (ConnectionError, http.client.HTTPException) as e:  # reset, refused, cut off mid-answer
            raise _Retryable(f"connection failed ({type(e).__name__})") from None
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise _Retryable(f"malformed answer (not JSON: {raw[:60]!r})") from None

    def _post(self, path: str, body: dict, i: int, seed: int) -> dict:
        """POST with bounded retries: exponential backoff with jitter seeded by (seed, i), Retry-After honoured."""
        rng = random.Random(f"{seed}:{i}")  # deterministic jitter, different per prompt so retries spread out
        abort = getattr(self._call, "abort", None) or threading.Event()  # None: called on the caller's thread
        for attempt in range(self.max_retries + 1):
            url = self._url(i, attempt) + path
            if attempt and abort.is_set():
                raise _Abandoned(f"{url}: retry abandoned: another request of this call failed or was interrupted")
            try:
                return self._request(url, "POST", body)
            except _Retryable as e:
                if attempt == self.max_retries:
                    tries = f"{attempt + 1} attempt{'s' if attempt else ''}"
                    raise ModelError(f"{url}: {e} (gave up after {tries}; model.max_retries = "
                                     f"{self.max_retries})") from None
                delay = min(BACKOFF_CAP_S, self.backoff_s * 2 ** attempt) * (0.5 + rng.random() / 2)
                if e.retry_after is not None:
                    delay = max(delay, min(e.retry_after, RETRY_AFTER_CAP_S))
                log.debug("%s: %s; retry %d/%d in %.2f s", url, e, attempt + 1, self.max_retries, delay)
                (self._sleep or abort.wait)(delay)
        raise AssertionError("unreachable")

    def _check_served(self, base: str) -> str:
        """GET /models once at load: the server is there and serves model.name; returns the id it lists."""
        url = base + "/models"
        try:
            data = self._request(url)
        except _Retryable as e:
            raise ModelError(f"cannot reach the model server at {base}: {e}; is it running?") from None
        models = data.get("data") if isinstance(data, dict) else None
        models = [m for m in models if isinstance(m, dict) and "id" in m] if isinstance(models, list) else []
        if not models:
            raise ModelError(f"malformed answer from {url}: no model list")
        for m in models:
            if m["id"] == self.name:
                return str(m.get("root") or m["id"])  # vLLM names the weights it serves under `root`
        ids = ", ".join(str(m["id"]) for m in models[:10])
        raise ModelError(f"model {self.name!r} is not served by {base}; it serves: {ids}")
