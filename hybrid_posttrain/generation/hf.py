"""The `hf` backend: transformers generation for any local (or hub) causal LM, batched with left padding.

`HFGenerator(model, tokenizer=None, batch_size=16, device=None, dtype="auto", kernels="auto")` takes a
model path / hub id / preset name (loaded through `hybrid_posttrain.models.load_model`, so hybrid GDN
layers get the precision policy and kernel routing) or an already-built `PreTrainedModel` (then
`tokenizer` is required). Each prompt is a chat (`[{"role", "content"}, ...]`); the tokenizer's chat
template is applied with `add_generation_prompt=True` (or `chat_template=` a Jinja string; a
`system_prompt=` is prepended when the chat has none).

* temperature 0 is greedy (then the n samples of a prompt are copies of one decode); otherwise sampling
  with temperature / top_p, seeded per batch from `sampling.seed`, so a call is reproducible.
* prompts are sorted by length before batching (less padding), results come back in input order.
* every completion carries its token ids, token count, finish reason ("stop" at EOS, "length" at
  max_new_tokens), the log-prob of each generated token under the model's raw distribution (temperature
  1, before any sampling warper) and, when `sampling.top_logprobs = k > 0`, the top-k {token id: log-prob}
  of each step (for logit distillation). They are recorded by a forward hook one step at a time, so
  memory does not grow with vocab x length.
"""

from __future__ import annotations

import time

import torch

from hybrid_posttrain.errors import UserError
from hybrid_posttrain.generation.base import Completion, Sampling


class _StepRecorder:
    """Forward hook on the LM: after each forward, log-softmax of the last position's logits.

    The token chosen at step t is the last input id of the forward at step t+1 (and the last token of the
    finished sequence for the final step), so only one step's full distribution is kept at a time.
    """

    def __init__(self, top_k: int):
        self.top_k = top_k
        self.prev: torch.Tensor | None = None  # [B, V] log-probs of the previous step
        self.chosen_lp: list[torch.Tensor] = []  # per step [B]
        self.top_vals: list[torch.Tensor] = []
        self.top_ids: list[torch.Tensor] = []

    def __call__(self, module, args, kwargs, output):
        logits = output.logits if hasattr(output, "logits") else output[0]
        input_ids = kwargs.get("input_ids")
        if input_ids is None and args:
            input_ids = args[0]
        if self.prev is not None and input_ids is not None:
            self.chosen_lp.append(self.prev.gather(1, input_ids[:, -1:].to(self.prev.device)).squeeze(1).cpu())
        lp = torch.log_softmax(logits[:, -1, :].float(), dim=-1)
        if self.top_k > 0:
            v, i = lp.topk(min(self.top_k, lp.shape[-1]), dim=-1)
            self.top_vals.append(v.cpu())
            self.top_ids.append(i.cpu())
        self.prev = lp

    def finish(self, last_tokens: torch.Tensor) -> None:
        if self.prev is not None:
            self.chosen_lp.append(self.prev.gather(1, last_tokens[:, None].to(self.prev.device)).squeeze(1).cpu())
            self.prev = None


class HFGenerator:
    """transformers `generate`, batched, left-padded (see the module docstring)."""

    def __init__(self, model, tokenizer=None, batch_size: int = 16, device: str | None = None,
                 dtype: str = "auto", kernels: str = "auto", chat_template: str | None = None,
                 system_prompt: str | None = None, name: str | None = None, **_ignored):
        if batch_size < 1:
            raise UserError(f"batch_size must be >= 1 (got {batch_size})")
        if isinstance(model, str):
            from hybrid_posttrain.models import load_model

            loaded, tok = load_model(model, dtype=dtype, kernels=kernels, tokenizer=tokenizer
                                     if isinstance(tokenizer, str) else None)
            self.name = name or model
            model = loaded
            if tokenizer is None or isinstance(tokenizer, str):
                tokenizer = tok
        else:
            if tokenizer is None:
                raise UserError("HFGenerator(model=<a PreTrainedModel>) also needs tokenizer=")
            self.name = name or getattr(model, "name_or_path", None) or type(model).__name__
        if isinstance(tokenizer, str):
            from hybrid_posttrain.models import load_tokenizer

            tokenizer = load_tokenizer(tokenizer)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        if chat_template is not None:
            self.tokenizer.chat_template = chat_template
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.batch_size = batch_size
        self.system_prompt = system_prompt
        eos = getattr(self.model.generation_config, "eos_token_id", None)
        eos = eos if eos is not None else self.tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        if self.tokenizer.eos_token_id is not None:
            self.eos_ids.add(self.tokenizer.eos_token_id)

    # --- prompt encoding
    def encode(self, messages: list[dict]) -> list[int]:
        """Token ids of the chat with the generation prompt appended."""
        if self.system_prompt and not any(m.get("role") == "system" for m in messages):
            messages = [{"role": "system", "content": self.system_prompt}] + list(messages)
        if not getattr(self.tokenizer, "chat_template", None):
            raise UserError(f"tokenizer of {self.name!r} has no chat template; give the teacher a chat_template")
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _batch(self, prompts_ids: list[list[int]], sampling: Sampling, seed: int, n_rep: int):
        """Generate for one batch; returns a list (per prompt) of n_rep Completions."""
        pad = self.tokenizer.pad_token_id
        rows = [ids for ids in prompts_ids for _ in range(n_rep)]
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            input_ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r):] = 1
        greedy = sampling.temperature == 0
        kwargs = dict(max_new_tokens=sampling.max_new_tokens, pad_token_id=pad, eos_token_id=sorted(self.eos_ids),
                      do_sample=not greedy, return_dict_in_generate=True)
        if greedy:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=None)
        rec = _StepRecorder(sampling.top_logprobs)
        # generate() on a PEFT wrapper runs the base model's forward: hook the module that actually runs
        target = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        handle = target.register_forward_hook(rec, with_kwargs=True)
        try:
            torch.manual_seed(seed)
            with torch.inference_mode():
                out = self.model.generate(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device),
                                          **kwargs)
        finally:
            handle.remove()
        gen = out.sequences[:, width:].cpu()
        rec.finish(gen[:, -1])
        lp = torch.stack(rec.chosen_lp, 1) if rec.chosen_lp else None
        if lp is not None and lp.shape[1] != gen.shape[1]:  # a model whose forward we could not observe
            lp, rec.top_vals = None, []
        top_v = torch.stack(rec.top_vals, 1) if rec.top_vals else None
        top_i = torch.stack(rec.top_ids, 1) if rec.top_ids else None
        results = []
        for i in range(len(rows)):
            ids = gen[i].tolist()
            finish = "length"
            for j, t in enumerate(ids):
                if t in self.eos_ids:
                    ids = ids[: j + 1]
                    finish = "stop"
                    break
            n = len(ids)
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            top = None
            if top_v is not None:
                top = [dict(zip(top_i[i, j].tolist(), top_v[i, j].tolist(), strict=False)) for j in range(n)]
            results.append(Completion(text=text, n_tokens=n, finish_reason=finish, token_ids=ids,
                                      logprobs=lp[i, :n].tolist() if lp is not None else None, top_logprobs=top))
        return [results[k * n_rep:(k + 1) * n_rep] for k in range(len(prompts_ids))]

    # --- the Generator protocol
    def generate(self, prompts: list[list[dict]], sampling: Sampling, progress: bool = True
                 ) -> list[list[Completion]]:
        from tqdm.auto import tqdm

        encoded = [self.encode(p) for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
        greedy = sampling.temperature == 0
        n_rep = 1 if greedy else sampling.n
        per_batch = max(1, self.batch_size // n_rep)  # rows per generate call stay <= batch_size
        out: list[list[Completion] | None] = [None] * len(prompts)
        bar = tqdm(total=len(prompts), desc=f"hf {self.name}", disable=not progress, leave=False)
        for b, start in enumerate(range(0, len(order), per_batch)):
            idx = order[start:start + per_batch]
            t0 = time.perf_counter()
            res = self._batch([encoded[i] for i in idx], sampling, seed=sampling.seed * 100003 + b, n_rep=n_rep)
            dt = time.perf_counter() - t0
            for i, comps in zip(idx, res, strict=False):
                if greedy and sampling.n > 1:
                    comps = [comps[0]] + [Completion(**{**c.__dict__, "meta": dict(c.meta)})
                                          for c in comps * (sampling.n - 1)]
                for c in comps:
                    c.meta["seconds"] = dt / max(1, len(idx) * len(comps))
                    c.meta["prompt_tokens"] = len(encoded[i])
                out[i] = comps
            bar.update(len(idx))
        bar.close()
        return out  # type: ignore[return-value]

    def close(self) -> None:
        self.model = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
