"""Builds the small tokenizer shipped with the tiny presets (`hybrid_posttrain/models/tokenizer/`).

Run once by a developer (`python -m hybrid_posttrain.models.build_tokenizer`); the result is committed so
it loads offline. A byte-level BPE (any text encodes) with single-digit tokens (the toyworld programs
compute digit by digit), trained on toyworld text, with a chat template whose assistant turns are
wrapped in `{% generation %}` so TRL's assistant-only loss can mask everything else.
"""

from __future__ import annotations

import random
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from hybrid_posttrain.tasks.toyworld import STYLES, World, program_items, solve

OUT = Path(__file__).parent / "tokenizer"
SPECIAL = ["<|pad|>", "<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|assistant|>\n' }}{% generation %}{{ message['content'] }}{{ '<|end|>' }}{% endgeneration %}{{ '\n' }}"
    "{% else %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


def training_text() -> list[str]:
    texts = []
    for seed in range(3):
        w = World(seed)
        texts += w.corpus(repeats=2)
        for it in w.fact_items("train") + w.fact_items("test"):
            texts.append(it.prompt + " " + solve(it, "cot")[0])
        rng = random.Random(seed)
        for it in program_items(40, range(2, 13), seed=seed, split="train"):
            for style in STYLES:
                texts.append(it.prompt + "\n" + solve(it, style, rng, 0.1)[0])
    texts += ["The quick brown fox jumps over the lazy dog. Question: Answer: Let's think step by step."] * 5
    return texts


def build(vocab_size: int = 1024) -> None:
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(training_text(), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|pad|>", eos_token="<|end|>",
                                   bos_token="<|endoftext|>", unk_token=None)
    fast.chat_template = CHAT_TEMPLATE
    fast.model_max_length = 4096
    OUT.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(OUT)


if __name__ == "__main__":
    build()
    print(f"tokenizer written to {OUT}")
