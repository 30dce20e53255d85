"""The `vllm` backend: vLLM's offline engine (`vllm.LLM`), tensor parallel, with hybrid-safe settings.

vLLM is imported lazily, only when a `VLLMGenerator` is built; without it the error is a one-line
`UserError` saying how to install it (`pip install -e '.[vllm]'`) or which backend to use instead.

Hybrid-safe engine settings (`engine_kwargs`, unit-tested without vLLM):
* `mamba_ssm_cache_dtype="float32"`: the recurrent (GDN / Mamba) state is cached in fp32 whatever the
  model dtype; a bf16 state drifts over long generations (the same policy as `models.check_precision`).
* `disable_cascade_attn=True`: cascade attention has shown numerical mismatches; the teacher's
  log-probs must match a training-side forward.
* `enable_prefix_caching=False`: prefix caching of recurrent state is not exact on every vLLM version.
* `enforce_eager`: None picks CUDA graphs on vLLM >= 0.10 (V1 engine graphs hybrid layers) and eager
  mode before it (the V0 engine needed it for recurrent layers); true/false forces it.
* `max_logprobs` raised to the teacher's `top_logprobs`; logprobs are the raw model distribution.
Options this vLLM does not know (older or newer releases) are dropped with a warning rather than
crashing (`supported_kwargs`).

Generation uses `LLM.chat` (the model's chat template, or the teacher's `chat_template`), one
`SamplingParams` per prompt with a seed derived from (sampling seed, prompt) so re-runs match.
"""

from __future__ import annotations

import hashlib
import json
import warnings

from hybrid_posttrain.errors import UserError
from hybrid_posttrain.generation.base import Completion, Sampling


def _version_tuple(v: str | None) -> tuple[int, ...]:
    out = []
    for part in (v or "0").split(".")[:3]:
        digits = "".join(ch for ch in part if ch.isdigit())
        out.append(int(digits or 0))
    return tuple(out)


def engine_kwargs(model: str, tokenizer: str | None = None, dtype: str = "auto", tensor_parallel_size: int = 1,
                  gpu_memory_utilization: float = 0.85, max_model_len: int | None = None,
                  enforce_eager: bool | None = None, top_logprobs: int = 0, seed: int = 0,
                  vllm_version: str | None = None) -> dict:
    """The keyword arguments of `vllm.LLM(...)` for a hybrid teacher (see the module docstring)."""
    if enforce_eager is None:
        enforce_eager = _version_tuple(vllm_version) < (0, 10) if vllm_version else False
    kw = dict(model=model, tokenizer=tokenizer or model, dtype=dtype, tensor_parallel_size=tensor_parallel_size,
              gpu_memory_utilization=gpu_memory_utilization, enforce_eager=bool(enforce_eager), seed=seed,
              mamba_ssm_cache_dtype="float32", disable_cascade_attn=True, enable_prefix_caching=False,
              max_logprobs=max(20, int(top_logprobs)), logprobs_mode="raw_logprobs", trust_remote_code=False)
    if max_model_len is not None:
        kw["max_model_len"] = max_model_len
    return kw


def supported_kwargs(kwargs: dict, engine_args_cls) -> dict:
    """Keep the options `engine_args_cls` (vllm.EngineArgs) declares; warn about the others."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(engine_args_cls)} if dataclasses.is_dataclass(engine_args_cls) \
        else set(kwargs)
    dropped = sorted(k for k in kwargs if k not in names)
    if dropped:
        warnings.warn(f"this vLLM does not know {', '.join(dropped)}; running without them", stacklevel=2)
    return {k: v for k, v in kwargs.items() if k in names}


def import_vllm():
    try:
        import vllm  # noqa: F401
    except ImportError:
        raise UserError("the vllm backend needs vLLM, which is not installed here: `pip install -e '.[vllm]'` "
                        "(CUDA machines), or use backend: hf (any machine) or openai (a running `vllm serve`)"
                        ) from None
    return vllm


def sampling_params_kwargs(sampling: Sampling, seed: int) -> dict:
    """Keyword arguments of `vllm.SamplingParams` for one prompt."""
    kw = dict(n=sampling.n, temperature=sampling.temperature, top_p=sampling.top_p if sampling.temperature else 1.0,
              max_tokens=sampling.max_new_tokens, seed=seed, logprobs=max(1, sampling.top_logprobs))
    return kw


class VLLMGenerator:
    """vLLM offline generation for teachers (see the module docstring)."""

    def __init__(self, model: str, tokenizer: str | None = None, dtype: str = "auto", tensor_parallel_size: int = 1,
                 gpu_memory_utilization: float = 0.85, max_model_len: int | None = None,
                 enforce_eager: bool | None = None, chat_template: str | None = None,
                 system_prompt: str | None = None, name: str | None = None, top_logprobs: int = 64, seed: int = 0,
                 **_ignored):
        vllm = import_vllm()
        kw = engine_kwargs(model, tokenizer, dtype, tensor_parallel_size, gpu_memory_utilization, max_model_len,
                           enforce_eager, top_logprobs, seed, getattr(vllm, "__version__", None))
        self.llm = vllm.LLM(**supported_kwargs(kw, vllm.EngineArgs))
        self._vllm = vllm
        self.name = name or model
        self.chat_template = chat_template
        self.system_prompt = system_prompt

    def generate(self, prompts: list[list[dict]], sampling: Sampling, progress: bool = True
                 ) -> list[list[Completion]]:
        convs = []
        params = []
        for msgs in prompts:
            if self.system_prompt and not any(m.get("role") == "system" for m in msgs):
                msgs = [{"role": "system", "content": self.system_prompt}] + list(msgs)
            convs.append(msgs)
            h = hashlib.sha256(json.dumps([sampling.seed, msgs], sort_keys=True).encode()).digest()
            params.append(self._vllm.SamplingParams(**sampling_params_kwargs(
                sampling, int.from_bytes(h[:4], "little") & 0x7FFFFFFF)))
        outs = self.llm.chat(convs, params, chat_template=self.chat_template, add_generation_prompt=True,
                             use_tqdm=progress)
        result = []
        for ro in outs:
            comps = []
            for o in ro.outputs:
                ids = list(o.token_ids)
                lps, tops = None, None
                if o.logprobs:
                    lps = [step[t].logprob for step, t in zip(o.logprobs, ids, strict=False)]
                    if sampling.top_logprobs:
                        tops = [dict(sorted(((int(k), float(v.logprob)) for k, v in step.items()),
                                            key=lambda kv: -kv[1])[: sampling.top_logprobs]) for step in o.logprobs]
                comps.append(Completion(text=o.text, n_tokens=len(ids), token_ids=ids, logprobs=lps, top_logprobs=tops,
                                        finish_reason="length" if o.finish_reason == "length" else "stop",
                                        meta={"prompt_tokens": len(ro.prompt_token_ids or [])}))
            result.append(comps)
        return result

    def close(self) -> None:
        self.llm = None
