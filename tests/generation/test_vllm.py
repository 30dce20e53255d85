"""The `vllm` backend where vLLM cannot run: the clear error when it is absent, and the engine settings."""

from __future__ import annotations

import dataclasses
import importlib.util

import pytest

from hybrid_posttrain.errors import UserError
from hybrid_posttrain.generation import Sampling, make_generator
from hybrid_posttrain.generation.vllm import engine_kwargs, sampling_params_kwargs, supported_kwargs


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_absent_vllm_is_a_one_line_user_error():
    with pytest.raises(UserError) as e:
        make_generator("vllm", model="some/model")
    msg = str(e.value)
    assert "vLLM" in msg and "pip install" in msg and "backend: hf" in msg and "\n" not in msg


def test_hpt_generate_with_a_vllm_teacher_exits_2_when_vllm_is_absent(tmp_path, capsys):
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    from hybrid_posttrain.cli import main

    spec = tmp_path / "g.yaml"
    spec.write_text("kind: generation\nname: v\nteachers:\n  - {name: big, backend: vllm, model: some/model}\n"
                    "prompts: {source: 'toyworld:programs', depths: [2], n_per_depth: 2}\n")
    assert main(["generate", str(spec), "--output-dir", str(tmp_path / "o")]) == 2
    assert "pip install" in capsys.readouterr().err


def test_engine_kwargs_are_hybrid_safe():
    kw = engine_kwargs("org/hybrid-7b", dtype="bfloat16", tensor_parallel_size=4, max_model_len=8192,
                       top_logprobs=64, vllm_version="0.11.0")
    assert kw["mamba_ssm_cache_dtype"] == "float32"
    assert kw["disable_cascade_attn"] is True
    assert kw["enable_prefix_caching"] is False
    assert kw["tensor_parallel_size"] == 4 and kw["dtype"] == "bfloat16" and kw["max_model_len"] == 8192
    assert kw["max_logprobs"] == 64 and kw["logprobs_mode"] == "raw_logprobs"
    assert kw["enforce_eager"] is False and kw["tokenizer"] == "org/hybrid-7b"
    assert engine_kwargs("m", vllm_version="0.9.2")["enforce_eager"] is True  # V0 engine: eager for recurrent layers
    assert engine_kwargs("m", enforce_eager=True, vllm_version="0.11.0")["enforce_eager"] is True
    assert engine_kwargs("m")["max_logprobs"] == 20 and "max_model_len" not in engine_kwargs("m")


def test_unknown_engine_options_are_dropped_with_a_warning():
    @dataclasses.dataclass
    class OldEngineArgs:
        model: str = ""
        tensor_parallel_size: int = 1
        mamba_ssm_cache_dtype: str = "auto"

    kw = engine_kwargs("m", tensor_parallel_size=2)
    with pytest.warns(UserWarning, match="disable_cascade_attn"):
        kept = supported_kwargs(kw, OldEngineArgs)
    assert kept == {"model": "m", "tensor_parallel_size": 2, "mamba_ssm_cache_dtype": "float32"}


def test_sampling_params():
    kw = sampling_params_kwargs(Sampling(temperature=0.7, top_p=0.9, max_new_tokens=99, n=4, top_logprobs=8), seed=5)
    assert kw == dict(n=4, temperature=0.7, top_p=0.9, max_tokens=99, seed=5, logprobs=8)
    assert sampling_params_kwargs(Sampling(), seed=1)["top_p"] == 1.0
