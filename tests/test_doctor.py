"""`hpt doctor`: kernels, dtypes and prefill-vs-decode agreement of a hybrid model.

The report runs on tiny-hybrid and exits 0 with every section; the agreement check agrees to fp32 rounding
for a correct model and catches a broken decode path (a recurrent step that mis-scales its state); a bad model
name is a one-line user error.
"""

import argparse
import importlib

import pytest
import torch

from hybrid_posttrain.doctor import doctor_prompts, gdn_param_dtypes, main, prefill_vs_decode, state_dtypes
from hybrid_posttrain.errors import UserError
from hybrid_posttrain.models import load_model

torch.set_num_threads(1)


def test_doctor_reports_tiny_hybrid(capsys):
    rc = main(argparse.Namespace(model="tiny-hybrid", kernels="torch", dtype="float32"))
    out = capsys.readouterr().out
    assert rc == 0
    for section in ("GDN kernels", "GDN parameter dtypes", "Recurrent state", "Log-prob agreement"):
        assert section in out
    assert "active backend (routing)" in out and "torch" in out
    from hybrid_posttrain.kernels.gdn.out_gluon import status

    why = status()  # this machine's: the CPU here ("no CUDA GPU")
    assert "hpt Gluon kernels" in out and ("Gluon (Hopper)" if why is None else " ".join(why.split()[:3])) in out
    assert "hybrid_posttrain.models.hybrid._conv_fn" in out  # prefill conv routed through our boundary conv
    assert "must be fp32" not in out


@pytest.fixture(scope="module")
def sharp_model():
    model, tok = load_model("tiny-hybrid", dtype="float32", kernels="torch", seed=0)
    with torch.no_grad():  # a peaked distribution, so hidden-state errors show in the log-probs
        model.lm_head.weight.mul_(40.0)
    return model.eval(), tok


def test_prefill_matches_decode_and_catches_a_broken_decode(sharp_model, monkeypatch):
    model, tok = sharp_model
    ids = torch.tensor([doctor_prompts(tok)[1]])
    good = prefill_vs_decode(model, ids)
    assert good["tokens"] == ids.shape[1] - 1
    assert good["max"] < 1e-3, good
    mod = importlib.import_module("transformers.models.olmo_hybrid.modeling_olmo_hybrid")
    original = mod.torch_recurrent_gated_delta_rule

    def leaky(*args, initial_state=None, **kwargs):  # forgets half of the state at every step
        return original(*args, initial_state=None if initial_state is None else 0.5 * initial_state, **kwargs)

    monkeypatch.setattr(mod, "torch_recurrent_gated_delta_rule", leaky)
    bad = prefill_vs_decode(model, ids)
    assert bad["max"] > 100 * max(good["max"], 1e-6), (good, bad)


def test_dtypes_follow_the_policy(sharp_model):
    model, tok = sharp_model
    rows = gdn_param_dtypes(model)
    names = {r[0] for r in rows}
    assert {"A_log", "dt_bias"} <= names and all(r[3] for r in rows)
    assert all(n == 3 for _, _, n, _ in rows)  # 3 GDN layers in tiny-hybrid, every parameter counted
    states = state_dtypes(model, torch.tensor([doctor_prompts(tok)[0]]))
    assert len(states) == 3 and all(rec == "float32" for _, rec, _ in states)


def test_bad_model_is_user_error():
    with pytest.raises(UserError, match="does not exist"):
        main(argparse.Namespace(model="./no/such/model", kernels="auto", dtype="auto"))
