"""Toyworld: deterministic from a seed, traces verify, program execution grades."""

import random

from hybrid_posttrain.tasks.toyworld import (
    STYLES,
    World,
    execute_program_answer,
    program_items,
    solve,
    verify,
)


def test_world_is_deterministic_and_seeded():
    assert World(3).corpus() == World(3).corpus()
    assert World(3).corpus() != World(4).corpus()
    items = World(0).fact_items("test")
    assert len({it.id for it in items}) == len(items)


def test_every_correct_trace_verifies_and_answers_match_execution():
    items = program_items(20, [2, 5, 9, 12], seed=1)
    for it in items:
        assert execute_program_answer(it.prompt) == it.answer
        for style in ("terse", "cot", "tracker"):
            text, slipped = solve(it, style)
            assert not slipped and verify(it, text), (style, it.prompt, text)
        assert not verify(it, f"Answer: {(int(it.answer) + 1) % 10}")


def test_noisy_cot_slips_at_configured_rate():
    items = program_items(200, [8], seed=2)
    rng = random.Random(0)
    slips = [solve(it, "noisy-cot", rng, slip_rate=0.05)[1] for it in items]
    # each program has 5 computed steps at depth 8 (3 constants): P(slip) = 1 - 0.95**5 ~ 0.23
    assert 0.13 < sum(slips) / len(slips) < 0.33


def test_mc_items_have_gold_among_four_choices():
    for it in World(0).fact_mc_items("test")[:50]:
        assert len(it.choices) == 4 and it.choices[it.meta["gold_index"]] == it.answer
    assert set(STYLES) == {"terse", "cot", "tracker", "noisy-cot"}
