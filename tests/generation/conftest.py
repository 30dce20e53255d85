"""Fixtures for the generation tests: a tiny hybrid model saved locally (no hub access), an `hf` generator
on it, and a REAL OpenAI-compatible HTTP server (stdlib `http.server` in a thread) in front of that
generator, with fault injection (HTTP 500/429, slow replies that time out, malformed JSON, dying)."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from hybrid_posttrain.generation import Sampling


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from hybrid_posttrain.models import load_model

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("tiny-hybrid")
    model, tok = load_model("tiny-hybrid", seed=0)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def hf_gen(tiny_model_dir):
    from hybrid_posttrain.generation import make_generator

    return make_generator("hf", model=str(tiny_model_dir), batch_size=8, device="cpu")


class _Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        """A request thread whose connection the dying server (or the client) cut is expected in these
        tests: no traceback for that on stderr, where the tests look for hpt's own one-line errors."""
        if isinstance(sys.exc_info()[1], OSError):  # BrokenPipe, ConnectionReset, ...
            return
        super().handle_error(request, client_address)


class FakeOpenAIServer:
    """/v1/chat/completions served by an HFGenerator (greedy or seeded sampling), one request at a time on
    the model. `faults` is consumed one per request ("500", "429", "timeout", "malformed", "nochoices",
    "400", "ok"); `always` applies a fault to every request; `die_after=N` drops the connection of every
    request after the N-th and shuts the server down (a crash mid-run)."""

    def __init__(self, gen, port: int = 0, delay: float = 0.0):
        self.gen = gen
        self.port = port
        self.delay = delay
        self.faults: list[str] = []
        self.always: str | None = None
        self.die_after: int | None = None
        self.timeout_sleep = 1.5
        self.served = 0
        self.received = 0
        self.lock = threading.Lock()
        self.model_lock = threading.Lock()
        self.httpd = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _send(self, code, body: bytes):
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                req = json.loads(self.rfile.read(length))
                if self.path != "/v1/chat/completions":
                    return self._send(404, b'{"error": "not found"}')
                with server.lock:
                    server.received += 1
                    fault = server.faults.pop(0) if server.faults else (server.always or "ok")
                    dying = server.die_after is not None and server.served >= server.die_after
                if dying:
                    self.close_connection = True
                    try:
                        self.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    threading.Thread(target=server.stop, daemon=True).start()
                    return
                if fault in ("500", "429", "400"):
                    return self._send(int(fault), b'{"error": {"message": "injected"}}')
                if fault == "malformed":
                    return self._send(200, b'{"choices": [{"message": {"content": "trunc')
                if fault == "nochoices":
                    return self._send(200, b'{"object": "chat.completion"}')
                if fault == "timeout":
                    time.sleep(server.timeout_sleep)
                if server.delay:
                    time.sleep(server.delay)
                s = Sampling(temperature=float(req.get("temperature", 0.0)), top_p=float(req.get("top_p", 1.0)),
                             max_new_tokens=int(req.get("max_tokens", 16)), n=1, seed=int(req.get("seed") or 0))
                with server.model_lock:
                    c = server.gen.generate([req["messages"]], s, progress=False)[0][0]
                with server.lock:
                    server.served += 1
                body = {"id": f"cmpl-{server.served}", "object": "chat.completion", "model": req.get("model"),
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": c.text},
                                     "finish_reason": c.finish_reason}],
                        "usage": {"prompt_tokens": c.meta.get("prompt_tokens", 0), "completion_tokens": c.n_tokens,
                                  "total_tokens": c.meta.get("prompt_tokens", 0) + c.n_tokens}}
                self._send(200, json.dumps(body).encode())

        self.httpd = _Server(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self):
        httpd, self.httpd = self.httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()

    def restart(self):
        self.stop()
        self.die_after = None
        self.faults, self.always = [], None
        return self.start()


@pytest.fixture
def openai_server(hf_gen):
    servers = []

    def make(**kw):
        s = FakeOpenAIServer(hf_gen, **kw).start()
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.stop()
