"""Program teachers: deterministic for a seed, styles differ as documented, noisy-cot slips at its rate."""

from __future__ import annotations

import pytest

from hybrid_posttrain.generation import Sampling, make_generator
from hybrid_posttrain.tasks.toyworld import World, eval_expr, parse_program, program_items, verify


def chats(items, system=None):
    out = []
    for it in items:
        msgs = [{"role": "system", "content": system}] if system else []
        out.append(msgs + [{"role": "user", "content": f"Please answer.\n{it.prompt}\nEnd with 'Answer: X'."}])
    return out


@pytest.mark.parametrize("style", ["terse", "cot", "tracker", "noisy-cot"])
def test_deterministic_for_a_seed_and_order_independent(style):
    items = program_items(8, [3, 5], seed=1)
    gen = make_generator("program", style=style, slip_rate=0.3, seed=7)
    s = Sampling(n=3, seed=2, max_new_tokens=512)
    a = gen.generate(chats(items), s, progress=False)
    b = make_generator("program", style=style, slip_rate=0.3, seed=7).generate(chats(items), s, progress=False)
    assert [[c.text for c in cs] for cs in a] == [[c.text for c in cs] for cs in b]
    # the same prompts in reverse order (another shard / batch layout) give the same samples
    r = gen.generate(chats(items[::-1]), s, progress=False)[::-1]
    assert [[c.text for c in cs] for cs in a] == [[c.text for c in cs] for cs in r]
    for cs in a:
        assert all(c.n_tokens == len(c.token_ids) > 0 and c.finish_reason == "stop" for c in cs)


def test_noiseless_styles_are_always_right_and_shaped_as_documented():
    items = program_items(10, [2, 4, 6], seed=3) + World(0).fact_items("test")[:20]
    lens = {}
    for style in ("terse", "cot", "tracker"):
        res = make_generator("program", style=style).generate(chats(items, system="Be brief."), Sampling(max_new_tokens=999),
                                                               progress=False)
        assert all(verify(it, cs[0].text) for it, cs in zip(items, res, strict=False)), style
        lens[style] = sum(cs[0].n_tokens for cs in res)
    assert lens["terse"] < lens["cot"] < lens["tracker"]


def test_seed_changes_noisy_samples():
    items = program_items(30, [6], seed=0)
    s = Sampling(n=1)
    a = make_generator("program", style="noisy-cot", slip_rate=0.5, seed=0).generate(chats(items), s, progress=False)
    b = make_generator("program", style="noisy-cot", slip_rate=0.5, seed=1).generate(chats(items), s, progress=False)
    assert [c[0].text for c in a] != [c[0].text for c in b]


@pytest.mark.parametrize("rate", [0.1, 0.3])
def test_noisy_cot_slips_at_the_configured_rate(rate):
    """Measure: the fraction of computed steps whose written value is not what the trace's own previous
    values give."""
    items = program_items(200, [6, 8], seed=5)
    res = make_generator("program", style="noisy-cot", slip_rate=rate, seed=0).generate(
        chats(items), Sampling(n=1, max_new_tokens=999), progress=False)
    steps = slips = 0
    wrong_answers = 0
    for it, cs in zip(items, res, strict=False):
        env: dict[str, int] = {}
        before = slips
        prog, _ = parse_program(it.prompt)
        lines = cs[0].text.splitlines()[:-1]
        assert len(lines) == len(prog)
        for (var, expr), line in zip(prog, lines, strict=False):
            if expr.isdigit():
                env[var] = int(expr)
                continue
            written = int(line.rsplit("=", 1)[1])
            steps += 1
            slips += written != eval_expr(expr, env)
            env[var] = written
        wrong_answers += not verify(it, cs[0].text)
        assert cs[0].meta["slipped"] == (slips > before)
    measured = slips / steps
    sd = (rate * (1 - rate) / steps) ** 0.5
    assert abs(measured - rate) < 4 * sd, (measured, rate, steps)
    assert wrong_answers > 0


def test_non_toyworld_prompt_is_an_error_completion_and_max_tokens_truncates():
    gen = make_generator("program", style="tracker")
    res = gen.generate([[{"role": "user", "content": "What is the capital of France?"}]], Sampling(), progress=False)
    assert res[0][0].finish_reason == "error"
    it = program_items(1, [10], seed=0)[0]
    res = gen.generate(chats([it]), Sampling(max_new_tokens=5), progress=False)
    assert res[0][0].finish_reason == "length" and res[0][0].n_tokens == 5


def test_unknown_style_is_a_user_error():
    from hybrid_posttrain.errors import UserError

    with pytest.raises(UserError, match="unknown program teacher style"):
        make_generator("program", style="verbose")
