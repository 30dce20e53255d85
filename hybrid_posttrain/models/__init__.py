"""Models: presets, loading from a preset / local path / hub id, the precision policy, the hybrid patches.

`load_model(name, ...)` returns (model, tokenizer) ready for a stage: GDN layers routed to the chosen
kernel backend with document boundaries (`models/hybrid.py`), and the precision policy applied and
checked (`A_log`, `dt_bias` and the gated norms of every GDN layer stay fp32 whatever the model dtype).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from hybrid_posttrain.errors import UserError
from hybrid_posttrain.models.hybrid import gdn_layers, install_boundary_hook, route_hybrid_layers
from hybrid_posttrain.models.presets import PRESETS, TOKENIZER_DIR, build_config, is_preset

__all__ = ["load_model", "load_tokenizer", "apply_precision_policy", "check_precision", "resolve_dtype",
           "PRESETS", "fp32_parameter_names"]

FP32_SUFFIXES = ("A_log", "dt_bias")


def resolve_dtype(dtype: str) -> torch.dtype:
    if dtype == "auto":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def fp32_parameter_names(model: torch.nn.Module) -> list[str]:
    """Parameters the policy keeps in fp32: A_log, dt_bias and the gated norm of every GDN layer."""
    names = []
    for lname, layer in gdn_layers(model):
        for pname, _ in layer.named_parameters():
            if pname.endswith(FP32_SUFFIXES) or "norm" in pname:
                names.append(f"{lname}.{pname}" if lname else pname)
    return names


def apply_precision_policy(model: torch.nn.Module) -> list[str]:
    """Cast the policy's parameters back to fp32 (after a bf16 load or cast); returns their names."""
    names = set(fp32_parameter_names(model))
    for name, p in model.named_parameters():
        if name in names and p.dtype != torch.float32:
            p.data = p.data.float()
    return sorted(names)


def check_precision(model: torch.nn.Module) -> list[str]:
    """Names of policy parameters that are not fp32 (empty when the policy holds)."""
    params = dict(model.named_parameters())
    return [n for n in fp32_parameter_names(model) if params[n].dtype != torch.float32]


def load_tokenizer(name: str, tokenizer: str | None = None):
    from transformers import AutoTokenizer

    src = tokenizer or (PRESETS[name]["tokenizer"] if is_preset(name) else name)
    if src is None:
        raise UserError(f"preset {name!r} ships no tokenizer; set model.tokenizer to a local path or hub id")
    try:
        tok = AutoTokenizer.from_pretrained(src)
    except OSError as e:
        raise UserError(f"cannot load tokenizer {src!r}: {str(e).splitlines()[0]}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(name: str, overrides: dict | None = None, dtype: str = "auto", kernels: str = "auto",
               tokenizer: str | None = None, attn_implementation: str = "sdpa", seed: int = 0,
               with_tokenizer: bool = True):
    """(model, tokenizer) for a preset, a local path or a hub id.

    Presets are initialised from `seed`; paths and hub ids load their weights. Raises UserError for a
    name that is neither (the message lists the presets).
    """
    from transformers import AutoModelForCausalLM

    torch_dtype = resolve_dtype(dtype)
    try:
        route_hybrid_layers(kernels)
    except (RuntimeError, ValueError) as e:
        raise UserError(f"model.kernels: {e}") from None
    if is_preset(name):
        config = build_config(name, overrides)
        config._attn_implementation = attn_implementation
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model = model.to(torch_dtype)
    else:
        looks_local = os.path.sep in name or name.startswith(".") or Path(name).exists()
        if looks_local and not Path(name).exists():
            raise UserError(f"model path {name!r} does not exist; give a preset ({', '.join(PRESETS)}), "
                            f"a local model folder or a hub id")
        try:
            model = AutoModelForCausalLM.from_pretrained(name, dtype=torch_dtype,
                                                         attn_implementation=attn_implementation,
                                                         **({} if not overrides else overrides))
        except OSError as e:
            raise UserError(f"cannot load model {name!r}: {str(e).splitlines()[0]} (presets: "
                            f"{', '.join(PRESETS)})") from None
    apply_precision_policy(model)
    install_boundary_hook(model)
    bad = check_precision(model)
    if bad:
        raise RuntimeError(f"precision policy violated after loading: {bad[:3]} are not fp32")
    tok = None
    if with_tokenizer:
        tok_src = tokenizer
        if tok_src is None and not is_preset(name):
            tok_src = name
        if tok_src is None and is_preset(name) and PRESETS[name]["tokenizer"] is None:
            tok_src = str(TOKENIZER_DIR)
        tok = load_tokenizer(name, tok_src)
    return model, tok
