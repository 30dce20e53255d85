"""acc and acc_norm of a tiny model on a 4-option suite agree with a direct computation from the model's
log-likelihoods (unbatched, unpadded, written out here), as lm-evaluation-harness defines them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hybrid_posttrain.evaluation.runner import evaluate

ITEMS = [
    ("What is the home town of Kalo Mimi?", ["Pellow", "Varnish", "Cobbleford", "Amberlee"], "Varnish"),
    ("What pet does Renvi Sator keep?", ["cat", "a very small and rather sleepy owl", "goat", "fox"], "cat"),
    ("Which colour is the sky?", ["blue", "deep ultramarine with a hint of grey", "red", "x"], "blue"),
    ("What is 2 plus 2?", ["4", "four, as everybody knows", "5", "twenty-two"], "4"),
    ("Pick the longest word.", ["a", "ab", "abcdefghijklmnopqrstuvwxyz", "abc"], "abcdefghijklmnopqrstuvwxyz"),
    ("Where does Tamzel Yar live?", ["Wexley", "Brindle", "Fenwick", "Galloway Ironside Saltmarsh"], "Wexley"),
    ("What is the lucky number of Ul Pe?", ["0", "7", "seventy-seven", "3"], "7"),
]
TEMPLATE = "Question: {question}\nAnswer:"


def direct_loglikelihood(model, tok, context: str, continuation: str) -> float:
    ctx = tok(context, add_special_tokens=False)["input_ids"]
    full = tok(context + continuation, add_special_tokens=False)["input_ids"]
    assert full[:len(ctx)] == ctx  # the context tokenises the same inside the pair
    n = len(full) - len(ctx)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([full])).logits[0].double()
    logp = torch.log_softmax(logits[:-1], dim=-1)
    targets = torch.tensor(full[1:])
    token_lp = logp[torch.arange(len(full) - 1), targets]
    return float(token_lp[-n:].sum())


def test_acc_and_acc_norm_match_direct_computation(tiny_eval_model, tmp_path):
    model_dir, model, tok = tiny_eval_model
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps({"id": f"q{i}", "prompt": q, "answer": a, "choices": c}) + "\n"
                             for i, (q, c, a) in enumerate(ITEMS)))
    suite = tmp_path / "four.yaml"
    suite.write_text("kind: suite\nname: four\ncategory: knowledge\ntype: multiple_choice\n"
                     f"source: {items}\nformat: items\nprompt:\n  template: {json.dumps(TEMPLATE)}\n")
    summary = evaluate(str(model_dir), [str(suite)], tmp_path / "out", batch_size=3, model=model,
                       tokenizer=tok, progress=False)
    rows = [json.loads(x) for x in (tmp_path / "out" / "four" / "results.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"q{i}" for i in range(len(ITEMS))]
    accs, norms, differ = [], [], 0
    for r, (q, choices, gold) in zip(rows, ITEMS, strict=True):
        context = TEMPLATE.format(question=q)
        assert r["prompt"] == context
        lls = [direct_loglikelihood(model, tok, context, " " + c) for c in choices]
        np.testing.assert_allclose(r["lls"], lls, rtol=1e-4, atol=1e-4)
        g = choices.index(gold)
        acc = float(int(np.argmax(lls)) == g)
        acc_norm = float(int(np.argmax(np.array(lls) / np.array([len(c) for c in choices]))) == g)
        assert (r["acc"], r["acc_norm"], r["correct"]) == (acc, acc_norm, acc)
        accs.append(acc)
        norms.append(acc_norm)
        differ += int(np.argmax(lls)) != int(np.argmax(np.array(lls) / np.array([len(c) for c in choices])))
    assert differ > 0  # the choices' lengths differ enough that normalising changes some picks
    entry = summary["suites"]["four"]
    assert entry["metric"] == "acc" and entry["n"] == len(ITEMS)
    assert entry["value"] == np.mean(accs) and entry["acc_norm"]["value"] == np.mean(norms)
    assert entry["ci_low"] <= entry["value"] <= entry["ci_high"]


def test_batching_and_padding_do_not_change_loglikelihoods(tiny_eval_model):
    from hybrid_posttrain.evaluation.runner import loglikelihoods

    _, model, tok = tiny_eval_model
    reqs = [(TEMPLATE.format(question=q), " " + c) for q, cs, _ in ITEMS for c in cs]
    one = loglikelihoods(model, tok, reqs, batch_size=1)
    many = loglikelihoods(model, tok, reqs, batch_size=11)
    np.testing.assert_allclose([x for x, _ in one], [x for x, _ in many], rtol=1e-4, atol=1e-4)
    # a context ending in a space hands the space to the continuation (the harness's split)
    a = loglikelihoods(model, tok, [("Answer: ", "blue")])[0][0]
    b = loglikelihoods(model, tok, [("Answer:", " blue")])[0][0]
    assert a == b


def test_single_token_choices_share_one_forward_row(tiny_eval_model):
    """Single-token choices (MMLU's letters in most tokenizers) have the same model input: each question
    is one row of one forward, and the scores equal the direct computation."""
    from hybrid_posttrain.evaluation.runner import loglikelihoods

    _, model, tok = tiny_eval_model
    rows_seen = []
    handle = model.register_forward_hook(lambda mod, args, kwargs, out: rows_seen.append(kwargs["input_ids"].shape[0]),
                                         with_kwargs=True)
    try:
        words = ["red", "blue", "cat", "dog"]  # one token each in the tiny tokenizer (" A" is two)
        reqs = [(f"Question {q}\nAnswer:", f" {w}") for q, _, _ in ITEMS for w in words]
        assert all(len(tok(" " + w, add_special_tokens=False)["input_ids"]) == 1 for w in words)
        shared = loglikelihoods(model, tok, reqs, batch_size=64)
    finally:
        handle.remove()
    assert rows_seen == [len(ITEMS)]
    for (ctx, cont), (ll, _) in zip(reqs, shared, strict=True):
        assert ll == pytest.approx(direct_loglikelihood(model, tok, ctx, cont), abs=1e-4)
