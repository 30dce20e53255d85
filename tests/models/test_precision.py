"""Precision policy: A_log, dt_bias and the gated norms of GDN layers stay fp32 under a bf16 load."""

import torch

from hybrid_posttrain.models import check_precision, fp32_parameter_names, load_model


def test_bf16_load_keeps_policy_params_fp32(tmp_path):
    model, tok = load_model("tiny-hybrid", dtype="bfloat16", kernels="torch")
    names = fp32_parameter_names(model)
    assert any(n.endswith("A_log") for n in names) and any(n.endswith("dt_bias") for n in names)
    assert any("o_norm" in n for n in names)
    params = dict(model.named_parameters())
    assert all(params[n].dtype == torch.float32 for n in names)
    assert params["model.embed_tokens.weight"].dtype == torch.bfloat16
    assert check_precision(model) == []
    # a plain cast breaks the policy and the check sees it
    model.to(torch.bfloat16)
    assert set(check_precision(model)) == set(names)
    # and a reload from disk restores it
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    again, _ = load_model(str(tmp_path), dtype="bfloat16", kernels="torch")
    assert check_precision(again) == []
    out = again(input_ids=torch.tensor([[5, 6, 7, 8]])).logits
    assert torch.isfinite(out.float()).all()
