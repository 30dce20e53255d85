"""DPO packing invariant on tiny-hybrid: the packed chosen+rejected forward == the padded one.

`stages/dpo.py` runs TRL's DPO forwards (policy and reference) as one [1, T] row with position_ids restarting
per sequence. Here the same collated batch goes through a packed and an unpacked `PackedDPOTrainer`: per-token
log-probs, chosen/rejected sequence log-probs, the DPO loss and every gradient must agree. The check is shown
to catch a leak: with transformers' own GDN functions (`unroute_hybrid_layers`, boundaries ignored) the packed
log-probs differ from the padded ones.
"""

import copy

import pytest
import torch

from hybrid_posttrain.models import load_model
from hybrid_posttrain.models.hybrid import route_hybrid_layers, unroute_hybrid_layers
from hybrid_posttrain.recipe import ToyworldData
from hybrid_posttrain.stages.dpo import make_dpo_trainer_class, preference_rows

torch.set_num_threads(1)


class _Stage:  # the fields `preference_rows` reads
    class data:  # noqa: N801
        train = "toyworld:preference"
        toyworld = ToyworldData(train_depths=[4, 5, 6], n_per_depth=10)
        max_samples = 4


def _trainer(model, ref, tok, rows, pack: bool, tmp_path, loss_type="sigmoid"):
    from datasets import Dataset
    from trl import DPOConfig

    args = DPOConfig(output_dir=str(tmp_path / f"pack{pack}"), per_device_train_batch_size=len(rows),
                     max_length=256, beta=0.5, loss_type=[loss_type], report_to="none", use_cpu=True,
                     bf16=False, gradient_checkpointing=False, logging_steps=1, disable_tqdm=True)
    cls = make_dpo_trainer_class()
    return cls(model=model, ref_model=ref, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok,
               pack=pack)


@pytest.fixture(scope="module")
def setup():
    route_hybrid_layers("torch")
    model, tok = load_model("tiny-hybrid", dtype="float32", kernels="torch", seed=0)
    ref = copy.deepcopy(model)
    with torch.no_grad():  # a reference that differs from the policy, so the loss depends on the log-probs
        g = torch.Generator().manual_seed(1)
        for p in ref.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g))
    rows = preference_rows(_Stage, 0)
    return model, ref, tok, rows


def _forward(trainer, batch):
    model = trainer.model
    model.zero_grad()
    trainer._metrics["train"].clear()
    loss = trainer.compute_loss(model, batch)
    loss.backward()
    metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    mask = batch["completion_mask"]
    labels = batch["input_ids"].masked_fill(mask == 0, -100)
    with torch.no_grad():
        lp = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels,
                   fused_lm_head=True, use_cache=False).log_probs
    return loss.detach(), metrics, grads, lp * mask[:, 1:]


@pytest.mark.parametrize("loss_type", ["sigmoid", "sigmoid_norm"])
def test_packed_dpo_equals_unpacked(setup, tmp_path, loss_type):
    model, ref, tok, rows = setup
    unpacked = _trainer(copy.deepcopy(model), copy.deepcopy(ref), tok, rows, False, tmp_path, loss_type)
    packed = _trainer(copy.deepcopy(model), copy.deepcopy(ref), tok, rows, True, tmp_path, loss_type)
    batch = next(iter(unpacked.get_train_dataloader()))
    lengths = batch["attention_mask"].sum(1)
    assert lengths.unique().numel() > 1, "the batch must hold sequences of different lengths (real padding)"
    u_loss, u_m, u_g, u_lp = _forward(unpacked, batch)
    p_loss, p_m, p_g, p_lp = _forward(packed, batch)
    assert torch.allclose(p_lp, u_lp, atol=1e-4, rtol=1e-5), (p_lp - u_lp).abs().max()
    for key in ("logps/chosen", "logps/rejected", "rewards/margins"):
        assert p_m[key] == pytest.approx(u_m[key], abs=1e-3, rel=1e-5), key
    assert abs(u_loss.item() - 0.6931) > 1e-3, "policy == reference would make the loss ignore the log-probs"
    assert torch.allclose(p_loss, u_loss, atol=1e-5, rtol=1e-5), (p_loss, u_loss)
    assert u_g.keys() == p_g.keys()
    worst = max(((p_g[n] - u_g[n]).norm() / (u_g[n].norm() + 1e-12)).item() for n in u_g)
    assert worst < 1e-3, worst
    gdn = [n for n in u_g if "linear_attn" in n]
    assert gdn and all(u_g[n].abs().sum() > 0 for n in gdn)


def test_packed_dpo_check_catches_a_leak(setup, tmp_path, monkeypatch):
    """Without our routing the boundaries do not reach the GDN layers: transformers' torch conv refuses packed
    boundaries outright, and given position_ids alone (attention still masked per sequence) the recurrent and
    conv state leaks across sequences, which the invariant sees."""
    import hybrid_posttrain.stages.dpo as dpo

    model, ref, tok, rows = setup
    unpacked = _trainer(copy.deepcopy(model), copy.deepcopy(ref), tok, rows, False, tmp_path)
    packed = _trainer(copy.deepcopy(model), copy.deepcopy(ref), tok, rows, True, tmp_path)
    batch = next(iter(unpacked.get_train_dataloader()))
    *_, u_lp = _forward(unpacked, batch)
    unroute_hybrid_layers()
    try:
        with pytest.raises(ValueError, match="packed sequences"):
            _forward(packed, batch)
        monkeypatch.setattr(dpo, "boundary_kwargs", lambda pos: {})
        *_, leaky_lp = _forward(packed, batch)
    finally:
        route_hybrid_layers("torch")
        monkeypatch.undo()
    assert (leaky_lp - u_lp).abs().max() > 1e-2
    *_, p_lp = _forward(packed, batch)  # routing and boundaries restored: agreement is back
    assert torch.allclose(p_lp, u_lp, atol=1e-4, rtol=1e-5)
