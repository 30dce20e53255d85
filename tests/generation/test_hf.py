"""The `hf` backend on a tiny hybrid model saved locally: batching, greedy, sampling seeds, log-probs."""

from __future__ import annotations

import pytest
import torch

from hybrid_posttrain.errors import UserError
from hybrid_posttrain.generation import Sampling, make_generator
from hybrid_posttrain.tasks.toyworld import program_items

PROMPTS = [[{"role": "user", "content": it.prompt}] for it in program_items(3, [2, 5], seed=0)] + [
    [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is the home town of X?"}],
    [{"role": "user", "content": "hi"}],
]


@pytest.fixture(scope="module")
def gen(hf_gen):
    return hf_gen


def test_batched_greedy_equals_one_at_a_time(gen):
    s = Sampling(max_new_tokens=16, top_logprobs=4)
    batched = gen.generate(PROMPTS, s, progress=False)
    single = [gen.generate([p], s, progress=False)[0] for p in PROMPTS]
    assert [b[0].token_ids for b in batched] == [x[0].token_ids for x in single]
    for b, x in zip(batched, single, strict=False):
        c = b[0]
        assert c.n_tokens == len(c.token_ids) == len(c.logprobs) == len(c.top_logprobs) > 0
        assert c.finish_reason in ("stop", "length")
        assert c.finish_reason == "length" or c.token_ids[-1] == gen.tokenizer.eos_token_id
        # greedy: each chosen token is the top-1 of its step, and its log-prob is that top-1 value
        for tid, lp, top in zip(c.token_ids, c.logprobs, c.top_logprobs, strict=False):
            assert len(top) == 4
            best = max(top, key=top.get)
            assert best == tid and abs(top[best] - lp) < 1e-5
        assert torch.allclose(torch.tensor(c.logprobs), torch.tensor(x[0].logprobs), atol=1e-4)


def test_logprobs_match_teacher_forcing(gen):
    s = Sampling(max_new_tokens=10, temperature=1.0, n=2, seed=5)
    res = gen.generate(PROMPTS[:2], s, progress=False)
    for p, cs in zip(PROMPTS[:2], res, strict=False):
        assert len(cs) == 2
        for c in cs:
            prompt_ids = gen.encode(p)
            ids = torch.tensor([prompt_ids + c.token_ids])
            with torch.no_grad():
                lp = gen.model(ids).logits[0].float().log_softmax(-1)
            tf = [lp[len(prompt_ids) - 1 + j, t].item() for j, t in enumerate(c.token_ids)]
            assert max(abs(a - b) for a, b in zip(tf, c.logprobs, strict=False)) < 1e-4


def test_sampling_is_seeded_and_greedy_n_copies(gen):
    s = Sampling(max_new_tokens=12, temperature=1.0, n=3, seed=11)
    a = gen.generate(PROMPTS, s, progress=False)
    b = gen.generate(PROMPTS, s, progress=False)
    assert [[c.text for c in cs] for cs in a] == [[c.text for c in cs] for cs in b]
    c = gen.generate(PROMPTS, Sampling(max_new_tokens=12, temperature=1.0, n=3, seed=12), progress=False)
    assert [[x.text for x in cs] for cs in a] != [[x.text for x in cs] for cs in c]
    assert any(len({x.text for x in cs}) > 1 for cs in a)  # samples of one prompt differ
    g = gen.generate(PROMPTS[:2], Sampling(max_new_tokens=8, n=3), progress=False)
    assert all(len(cs) == 3 and len({x.text for x in cs}) == 1 for cs in g)


def test_chat_template_and_system_prompt(gen):
    ids = gen.encode([{"role": "user", "content": "hi"}])
    text = gen.tokenizer.decode(ids)
    assert text.startswith("<|user|>") and text.endswith("<|assistant|>\n")
    g2 = make_generator("hf", model=gen.model, tokenizer=gen.tokenizer, system_prompt="Be terse.")
    assert gen.tokenizer.decode(g2.encode([{"role": "user", "content": "hi"}])).startswith("<|system|>\nBe terse.")


def test_model_object_without_tokenizer_is_a_user_error(gen):
    with pytest.raises(UserError, match="tokenizer"):
        make_generator("hf", model=gen.model)


def test_peft_wrapped_model_still_records_logprobs(gen):
    from peft import LoraConfig, get_peft_model

    from hybrid_posttrain.models import load_model

    base, tok = load_model("tiny-hybrid", seed=0, kernels="torch")
    wrapped = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    g = make_generator("hf", model=wrapped, tokenizer=tok, device="cpu")
    c = g.generate(PROMPTS[:2], Sampling(max_new_tokens=6, top_logprobs=2), progress=False)[0][0]
    assert c.n_tokens == len(c.logprobs) == len(c.top_logprobs) > 0
