"""The `openai` backend: any OpenAI-compatible `/v1/chat/completions` endpoint (vLLM serve, SGLang, APIs).

`OpenAIGenerator(model, endpoint, concurrency=8, timeout_s=60, max_retries=5, backoff_s=0.5)` sends one
request per sample (n=1, so every sample has its own token count and seed, and servers without `n`
support work), at most `concurrency` at a time from a thread pool.

Failures:
* 429, 5xx, timeouts, connection errors and malformed replies (not JSON, no `choices`, no text) are
  retried up to `max_retries` times with exponential backoff (`backoff_s * 2**attempt`, jittered, or the
  server's `Retry-After`).
* other 4xx (bad request, auth, unknown model) are not retried.
* either way the final error is a `UserError` naming the teacher, the endpoint and what went wrong
  (`hpt generate` prints it on one line and exits 2); the shards finished before it are kept.

Sampling: temperature 0 sends one greedy request and copies it for the n samples; otherwise sample k of
a prompt carries `seed = f(sampling.seed, prompt, k)` so a re-run asks for the same samples. The API key
is read from the environment variable `api_key_env` (never from a spec).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

from hybrid_posttrain.errors import UserError
from hybrid_posttrain.generation.base import Completion, Sampling

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class _Retryable(Exception):
    pass


class _Fatal(Exception):
    pass


class _Cancelled(UserError):
    pass


def chat_url(endpoint: str) -> str:
    e = endpoint.rstrip("/")
    if e.endswith("/chat/completions"):
        return e
    return e + "/chat/completions"


def parse_reply(body: bytes | str) -> tuple[str, str, int | None, list[float] | None]:
    """(text, finish_reason, completion tokens, token log-probs) of a chat completion reply; raises
    ValueError naming what is malformed."""
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        snippet = body[:80] if isinstance(body, str) else body[:80].decode("utf-8", "replace")
        raise ValueError(f"reply is not JSON ({e}; body starts {snippet!r})") from None
    if not isinstance(data, dict) or not isinstance(data.get("choices"), list) or not data["choices"]:
        raise ValueError(f"reply has no `choices` list (keys: {sorted(data) if isinstance(data, dict) else type(data).__name__})")
    choice = data["choices"][0]
    msg = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(msg, dict) or not isinstance(msg.get("content"), (str, type(None))):
        raise ValueError("reply's choices[0].message.content is missing or not a string")
    text = msg.get("content") or ""
    finish = choice.get("finish_reason") or "stop"
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    n_tok = usage.get("completion_tokens")
    lps = None
    lp = choice.get("logprobs")
    if isinstance(lp, dict) and isinstance(lp.get("content"), list):
        lps = [float(t["logprob"]) for t in lp["content"] if isinstance(t, dict) and "logprob" in t]
    return text, ("length" if finish == "length" else "stop"), (int(n_tok) if n_tok is not None else None), lps


class OpenAIGenerator:
    """Chat completions over HTTP with bounded concurrency and retries (see the module docstring)."""

    def __init__(self, model: str, endpoint: str, api_key_env: str | None = "OPENAI_API_KEY", concurrency: int = 8,
                 timeout_s: float = 60.0, max_retries: int = 5, backoff_s: float = 0.5,
                 system_prompt: str | None = None, name: str | None = None, extra_body: dict | None = None,
                 **_ignored):
        import requests  # noqa: F401  (fail early if absent)

        if not endpoint:
            raise UserError("the openai backend needs an endpoint (e.g. http://localhost:8000/v1)")
        self.model = model
        self.endpoint = endpoint
        self.url = chat_url(endpoint)
        self.name = name or model
        self.api_key = os.environ.get(api_key_env) if api_key_env else None
        self.concurrency = max(1, int(concurrency))
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.system_prompt = system_prompt
        self.extra_body = dict(extra_body or {})
        self._local = threading.local()
        self.stats = {"requests": 0, "retries": 0}
        self._lock = threading.Lock()
        self._abort = threading.Event()  # set when one request has failed for good: the others stop retrying

    def _session(self):
        import requests

        s = getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = requests.Session()
        return s

    def _payload(self, messages: list[dict], sampling: Sampling, seed: int | None) -> dict:
        if self.system_prompt and not any(m.get("role") == "system" for m in messages):
            messages = [{"role": "system", "content": self.system_prompt}] + list(messages)
        body = dict(model=self.model, messages=messages, temperature=sampling.temperature, top_p=sampling.top_p,
                    max_tokens=sampling.max_new_tokens, n=1)
        if seed is not None:
            body["seed"] = seed
        body.update(self.extra_body)
        return body

    def _once(self, payload: dict) -> Completion:
        import requests

        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        t0 = time.perf_counter()
        try:
            r = self._session().post(self.url, data=json.dumps(payload), headers=headers, timeout=self.timeout_s)
        except requests.Timeout:
            raise _Retryable(f"timed out after {self.timeout_s:g}s") from None
        except requests.ConnectionError as e:
            raise _Retryable(f"connection failed ({type(e).__name__})") from None
        if r.status_code in RETRY_STATUS:
            raise _Retryable(f"HTTP {r.status_code}: {r.text[:120].strip()}")
        if r.status_code >= 400:
            raise _Fatal(f"HTTP {r.status_code}: {r.text[:200].strip()}")
        try:
            text, finish, n_tok, lps = parse_reply(r.content)
        except ValueError as e:
            raise _Retryable(f"malformed reply: {e}") from None
        meta = {"seconds": time.perf_counter() - t0}
        if n_tok is None:
            meta["tokens_estimated"] = True
            n_tok = len(text.split())
        return Completion(text=text, n_tokens=n_tok, finish_reason=finish, logprobs=lps, meta=meta)

    def _with_retries(self, payload: dict) -> Completion:
        last = ""
        for attempt in range(self.max_retries + 1):
            if self._abort.is_set():
                raise _Cancelled(f"teacher {self.name!r} at {self.endpoint}: cancelled after another request failed")
            with self._lock:
                self.stats["requests"] += 1
                if attempt:
                    self.stats["retries"] += 1
            try:
                return self._once(payload)
            except _Retryable as e:
                last = str(e)
                if attempt < self.max_retries:
                    time.sleep(self.backoff_s * (2 ** attempt) * (0.5 + random.random()))
            except _Fatal as e:
                self._abort.set()
                raise UserError(f"teacher {self.name!r} at {self.endpoint}: {e}") from None
        self._abort.set()
        raise UserError(f"teacher {self.name!r} at {self.endpoint} kept failing: {last} "
                        f"(gave up after {self.max_retries + 1} attempts; finished shards are kept, re-run to resume)")

    @staticmethod
    def sample_seed(sampling: Sampling, messages: list[dict], k: int) -> int:
        h = hashlib.sha256(json.dumps([sampling.seed, messages, k], sort_keys=True).encode()).digest()
        return int.from_bytes(h[:4], "little") & 0x7FFFFFFF

    # --- the Generator protocol
    def generate(self, prompts: list[list[dict]], sampling: Sampling, progress: bool = True
                 ) -> list[list[Completion]]:
        from tqdm.auto import tqdm

        self._abort.clear()
        greedy = sampling.temperature == 0
        per_prompt = 1 if greedy else sampling.n
        jobs = [(i, k) for i in range(len(prompts)) for k in range(per_prompt)]
        results: dict[tuple[int, int], Completion] = {}
        bar = tqdm(total=len(jobs), desc=f"openai {self.name}", disable=not progress, leave=False)
        pool = ThreadPoolExecutor(max_workers=self.concurrency)
        try:
            futs = {pool.submit(self._with_retries,
                                self._payload(prompts[i], sampling, None if greedy else
                                              self.sample_seed(sampling, prompts[i], k))): (i, k) for i, k in jobs}
            pending = set(futs)
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                if any(f.exception() is not None for f in done):
                    pool.shutdown(wait=True, cancel_futures=True)  # in-flight requests stop at their next try
                    errors = [f.exception() for f in futs if f.done() and not f.cancelled() and f.exception()]
                    real = [e for e in errors if not isinstance(e, _Cancelled)]
                    raise (real or errors)[0]
                for f in done:
                    results[futs[f]] = f.result()
                    bar.update(1)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            bar.close()
        out = []
        for i in range(len(prompts)):
            comps = [results[(i, k)] for k in range(per_prompt)]
            if greedy and sampling.n > 1:
                comps = comps + [Completion(**{**comps[0].__dict__, "meta": dict(comps[0].meta)})
                                 for _ in range(sampling.n - 1)]
            out.append(comps)
        return out

    def close(self) -> None:
        s = getattr(self._local, "session", None)
        if s is not None:
            s.close()
