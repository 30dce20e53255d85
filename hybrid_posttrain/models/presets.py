"""Model presets by name, and building configs from them with overrides.

* `tiny-hybrid`: OlmoHybrid, 3 GDN : 1 attention, about a million parameters; trains on a CPU in minutes.
* `tiny-dense`: Olmo3 of the same width and depth with attention in every layer (the control student).
* `olmo-hybrid-7b`, `qwen3-next-80b-a3b`: the real architectures' shapes (shrink them with `--set
  model.overrides.num_hidden_layers=4` and friends); built randomly initialised, for benchmarks and
  plumbing tests. To fine-tune the released weights, give a local path or hub id instead.

The tiny presets use the tokenizer shipped in `models/tokenizer/` (loads offline).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

TOKENIZER_DIR = Path(__file__).parent / "tokenizer"

_TINY = dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
             num_key_value_heads=4, max_position_embeddings=4096, vocab_size=1024, pad_token_id=0,
             bos_token_id=1, eos_token_id=5, tie_word_embeddings=False)

PRESETS: dict[str, dict[str, Any]] = {
    "tiny-hybrid": dict(model_type="olmo_hybrid", tokenizer=str(TOKENIZER_DIR), config=dict(
        _TINY, linear_num_key_heads=4, linear_num_value_heads=4, linear_key_head_dim=24, linear_value_head_dim=48,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0})),
    "tiny-dense": dict(model_type="olmo3", tokenizer=str(TOKENIZER_DIR), config=dict(
        _TINY, layer_types=["full_attention"] * 4, sliding_window=4096,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0})),
    "olmo-hybrid-7b": dict(model_type="olmo_hybrid", tokenizer=None, config=dict(
        vocab_size=100352, hidden_size=3840, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=30,
        linear_num_key_heads=30, linear_num_value_heads=30, linear_key_head_dim=96, linear_value_head_dim=192,
        max_position_embeddings=65536)),
    "qwen3-next-80b-a3b": dict(model_type="qwen3_next", tokenizer=None, config=dict(
        vocab_size=151936, hidden_size=2048, intermediate_size=5120, moe_intermediate_size=512,
        shared_expert_intermediate_size=512, num_hidden_layers=48, num_attention_heads=16, num_key_value_heads=2,
        head_dim=256, linear_num_key_heads=16, linear_num_value_heads=32, linear_key_head_dim=128,
        linear_value_head_dim=128, linear_conv_kernel_dim=4, num_experts=512, num_experts_per_tok=10,
        full_attention_interval=4, max_position_embeddings=262144)),
}


def is_preset(name: str) -> bool:
    return name in PRESETS


def build_config(name: str, overrides: dict[str, Any] | None = None):
    """A transformers config for preset `name` with `overrides` applied (layer_types follow the depth)."""
    from transformers import AutoConfig

    preset = PRESETS[name]
    kwargs = dict(preset["config"])
    kwargs.update(overrides or {})
    if preset["model_type"] == "olmo3" and "layer_types" not in (overrides or {}):
        kwargs["layer_types"] = ["full_attention"] * int(kwargs["num_hidden_layers"])
    if preset["model_type"] == "olmo_hybrid" and "layer_types" not in (overrides or {}):
        n = int(kwargs["num_hidden_layers"])
        kwargs["layer_types"] = ["full_attention" if i % 4 == 3 else "linear_attention" for i in range(n)]
    return AutoConfig.for_model(preset["model_type"], **kwargs)
