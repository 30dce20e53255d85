"""Log-prob agreement: how far two engines' token log-probs for the same tokens are apart.

Used in two places:
* RL (`stages/rl.py`): every step, the rollout engine's log-prob of each sampled token (HF `generate` with a
  cache, i.e. recurrent decode for GDN layers, or vLLM) against the trainer's (one chunked forward over prompt +
  completion). A gap means the importance-sampling correction has work to do; a large one means the rollout
  engine and the trainer do not compute the same model (a kernel, a dtype or a cache bug).
* `hpt doctor` (`doctor.py`): chunked prefill against token-by-token recurrent decode of the same model.

`token_logprobs(logits, tokens, temperature)` is the one definition of a token log-prob (log-softmax of the
temperature-scaled logits, in fp32); `logprob_agreement(a, b, mask)` gives the mean and max absolute difference
over the masked tokens.
"""

from __future__ import annotations

import torch


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log p(token) under softmax(logits / temperature); logits [..., V], tokens [...] -> [...] (fp32)."""
    lp = torch.log_softmax(logits.float() / temperature, dim=-1)
    return lp.gather(-1, tokens.long().unsqueeze(-1)).squeeze(-1)


def logprob_agreement(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, float]:
    """{"mean", "max", "tokens"}: absolute difference |a - b| over the tokens where `mask` is set.

    NaN entries (a token one engine could not score) are left out rather than counted as agreement.
    """
    diff = (a.float() - b.float()).abs()
    keep = torch.ones_like(diff, dtype=torch.bool) if mask is None else mask.bool()
    keep = keep & ~torch.isnan(diff)
    d = diff[keep]
    if d.numel() == 0:
        return {"mean": 0.0, "max": 0.0, "tokens": 0}
    return {"mean": float(d.mean()), "max": float(d.max()), "tokens": int(d.numel())}
