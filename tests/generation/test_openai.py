"""The `openai` backend against a REAL HTTP server (started here, in front of the tiny model through the
hf backend): same greedy text as hf, retries on 500/429/timeouts/malformed replies, clear errors, and
`hpt generate` surviving a server that dies mid-run and a SIGKILL of itself."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hybrid_posttrain.cli import main as hpt
from hybrid_posttrain.data.io import read_jsonl
from hybrid_posttrain.distill.generate import read_teacher_rows
from hybrid_posttrain.errors import UserError
from hybrid_posttrain.generation import Sampling, make_generator
from hybrid_posttrain.tasks.toyworld import program_items

PROMPTS = [[{"role": "user", "content": it.prompt}] for it in program_items(3, [2, 4], seed=1)]
S = Sampling(max_new_tokens=12)


def client(server, **kw):
    opts = dict(model="tiny", endpoint=server.endpoint, concurrency=3, timeout_s=0.75, max_retries=4,
                backoff_s=0.01, name="tiny-openai")
    opts.update(kw)
    return make_generator("openai", **opts)


def test_hf_and_openai_give_the_same_greedy_text(hf_gen, openai_server):
    server = openai_server()
    via_hf = hf_gen.generate(PROMPTS, S, progress=False)
    via_http = client(server).generate(PROMPTS, S, progress=False)
    assert [c[0].text for c in via_http] == [c[0].text for c in via_hf]
    assert [c[0].n_tokens for c in via_http] == [c[0].n_tokens for c in via_hf]
    assert all(c[0].text for c in via_http)
    # sampled requests carry per-sample seeds: a repeat asks for (and gets) the same samples
    s = Sampling(max_new_tokens=8, temperature=1.0, n=2, seed=3)
    a = client(server).generate(PROMPTS[:2], s, progress=False)
    b = client(server).generate(PROMPTS[:2], s, progress=False)
    assert [[x.text for x in cs] for cs in a] == [[x.text for x in cs] for cs in b]
    assert all(len(cs) == 2 and cs[0].text != cs[1].text for cs in a)


def test_transient_faults_are_retried(hf_gen, openai_server):
    server = openai_server()
    server.faults = ["500", "429", "timeout", "malformed", "nochoices", "500"]
    gen = client(server, concurrency=2)
    got = gen.generate(PROMPTS, S, progress=False)
    want = hf_gen.generate(PROMPTS, S, progress=False)
    assert [c[0].text for c in got] == [c[0].text for c in want]
    assert gen.stats["retries"] == 6
    assert gen.stats["requests"] == len(PROMPTS) + 6


@pytest.mark.parametrize("fault,words", [("500", "HTTP 500"), ("malformed", "malformed reply"),
                                          ("nochoices", "no `choices`"), ("timeout", "timed out")])
def test_persistent_faults_are_a_clear_user_error(openai_server, fault, words):
    server = openai_server()
    server.always = fault
    server.timeout_sleep = 0.5
    gen = client(server, max_retries=2, timeout_s=0.2)
    with pytest.raises(UserError) as e:
        gen.generate(PROMPTS[:2], S, progress=False)
    msg = str(e.value)
    assert "'tiny-openai'" in msg and server.endpoint in msg and words in msg and "\n" not in msg


def test_client_errors_are_not_retried(openai_server):
    server = openai_server()
    server.always = "400"
    gen = client(server, concurrency=1)
    with pytest.raises(UserError, match="HTTP 400"):
        gen.generate(PROMPTS[:1], S, progress=False)
    assert gen.stats["requests"] == 1


def test_unreachable_endpoint_is_a_user_error():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    gen = make_generator("openai", model="m", endpoint=f"http://127.0.0.1:{port}/v1", max_retries=1, backoff_s=0.01)
    with pytest.raises(UserError, match="connection failed"):
        gen.generate(PROMPTS[:1], S, progress=False)


# ------------------------------------------------------------------------------ hpt generate end to end

def write_spec(path: Path, endpoint: str, n_per_depth: int = 4, shard_size: int = 2, max_retries: int = 1,
               concurrency: int = 2) -> Path:
    path.write_text(f"""kind: generation
name: http
teachers:
  - name: tiny-http
    backend: openai
    model: tiny
    endpoint: {endpoint}
    concurrency: {concurrency}
    timeout_s: 5
    max_retries: {max_retries}
    backoff_s: 0.01
    sampling: {{max_new_tokens: 10, n: 1}}
prompts: {{source: "toyworld:programs", depths: [2, 3], n_per_depth: {n_per_depth}}}
shard_size: {shard_size}
""")
    return path


def rows_of(out: Path) -> list[dict]:
    return read_teacher_rows(out / "tiny-http")


def check_complete(rows: list[dict], n: int):
    keys = [(r["id"], r["sample"]) for r in rows]
    assert len(keys) == len(set(keys)) == n


def test_server_dies_mid_run_then_restart_completes_without_duplicates(tmp_path, openai_server, capsys):
    ref_server = openai_server()
    hpt(["generate", str(write_spec(tmp_path / "ref.yaml", ref_server.endpoint)), "--output-dir",
         str(tmp_path / "ref")])
    ref = rows_of(tmp_path / "ref")
    check_complete(ref, 8)

    server = openai_server()
    server.die_after = 3
    spec = write_spec(tmp_path / "g.yaml", server.endpoint)
    capsys.readouterr()
    assert hpt(["generate", str(spec), "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1].split("\r")[-1]
    assert "Traceback" not in err and "'tiny-http'" in last and "kept failing" in last and ":" in last
    done = sorted((tmp_path / "out" / "tiny-http").glob("shard-*.jsonl"))
    assert 1 <= len(done) < 4  # some shards were finished before the crash, not all
    server.restart()
    assert hpt(["generate", str(spec), "--output-dir", str(tmp_path / "out")]) == 0
    rows = rows_of(tmp_path / "out")
    check_complete(rows, 8)
    assert rows == ref
    import json

    manifest = json.loads((tmp_path / "out" / "tiny-http" / "manifest.json").read_text())
    assert manifest["counts"]["samples"] == 8 and manifest["counts"]["duplicates"] == 0 and manifest["complete"]


def test_sigkill_mid_run_then_rerun_equals_uninterrupted(tmp_path, openai_server):
    server = openai_server(delay=0.15)
    spec = write_spec(tmp_path / "g.yaml", server.endpoint, n_per_depth=6, shard_size=2, concurrency=1)
    out = tmp_path / "killed"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.Popen([sys.executable, "-m", "hybrid_posttrain.cli", "generate", str(spec), "--output-dir",
                             str(out)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            cwd=Path(__file__).resolve().parents[2])
    tdir = out / "tiny-http"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(tdir.glob("shard-*.jsonl"))) < 2 and proc.poll() is None:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    n_before = len(list(tdir.glob("shard-*.jsonl")))
    assert 2 <= n_before < 6, n_before  # killed in the middle
    for p in tdir.glob("shard-*.jsonl"):
        read_jsonl(p)  # every shard on disk is whole
    server.delay = 0.0
    assert hpt(["generate", str(spec), "--output-dir", str(out)]) == 0
    assert hpt(["generate", str(spec), "--output-dir", str(tmp_path / "clean")]) == 0
    rows = rows_of(out)
    check_complete(rows, 12)
    assert rows == rows_of(tmp_path / "clean")
