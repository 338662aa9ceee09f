"""Invariants and reference agreement on the real default model (SmolLM2-135M, 30 layers)."""

import numpy as np
import pytest
import torch

from effdepth import datasets, engine
from effdepth.arch import taps
from effdepth.capture import Replayer, capture, skip_layer
from effdepth.models import DEFAULT_MODEL, load_model
from effdepth.probes import skip

pytestmark = pytest.mark.slow  # every test here runs on the real smollm2-135m (fixture smol)


@pytest.fixture(scope="module")
def smol():
    return load_model(DEFAULT_MODEL)


@pytest.fixture(scope="module")
def gsm8k_ids(smol):
    text = datasets.get_item("gsm8k", 0).text
    return engine.tokenize(smol, text)[None, :64]


def test_real_model_invariants(smol, gsm8k_ids):
    trace = capture(smol.model, gsm8k_ids)
    assert trace.n_layers == 30 and trace.resid.shape[-1] == 576
    recomposed = trace.resid[:-1] + trace.attn + trace.mlp
    scale = trace.resid.abs().amax(dim=-1, keepdim=True)[1:]
    assert ((trace.resid[1:] - recomposed).abs() / scale).max() < 1e-5
    with torch.no_grad():
        lens_last = taps(smol.model).to_logits(trace.resid[-1])
    assert torch.allclose(lens_last, trace.logits, atol=1e-4)


def test_real_model_skip_agrees_with_plain_loop(smol, gsm8k_ids):
    model, ids = smol.model, gsm8k_ids
    trace = capture(model, ids)
    split = 24
    result = skip.skip_effects(Replayer(model, ids), splits=[split], variants=["future"])
    m = result.matrix
    for s in (0, 7, 29):
        with skip_layer(model, s, slice(1, split)):
            edited = capture(model, ids)
        clean_c = trace.contrib[:, split:]
        ref = ((edited.contrib[:, split:] - clean_c).norm(dim=-1)
               / clean_c.norm(dim=-1).clamp_min(1e-6)).amax(-1).numpy()
        got = m[(m.variant == "future") & (m.split == split) & (m.skipped == s)].sort_values("affected")
        np.testing.assert_allclose(got["value"].to_numpy(), ref, atol=1e-4)
    noise = m[m.variant == "noise_future"]["value"].max()
    assert noise < 1e-4, noise


def test_real_model_run_probes_end_to_end(smol):
    text = "The spouse of the performer of Imagine is Yoko Ono"
    result = engine.run_probes(smol, text, engine.ProbeConfig(splits=(8,)))
    ed = result.tables["ed"].set_index(["probe", "rule"])
    assert {"cosine", "kl", "overlap", "skip"} <= set(ed.index.get_level_values(0))
    p1 = ed.xs("p1", level="rule")["edr"]
    assert p1.notna().sum() >= 2, p1  # at least two probes find a transition on this prompt (not all NaN)
    for value in ed["edr"].dropna():
        assert 0 < value <= 1
    kl = result.layer_curve("kl")
    assert len(kl) == 30 and kl.iloc[0] > kl.iloc[-1]  # the lens converges to the output
    assert result.meta["n_tokens"] == len(result.tables["tokens"])


def test_shortcut_lens_reads_early_layers_better_and_the_last_like_the_logit_lens(smol):
    """On the real model, fitted on the shipped text's fit part and scored on its held-out part: the shortcut
    lens lowers the mean KL to the output at the early layers, and at layer L-1 it is no worse than the
    identity map (the plain logit lens is one of the maps the fit chooses from). SmolLM2's last layer does
    much work (logit-lens KL ~1.4 nats at L-1), so the fitted map there is not near the identity; the tiny
    model with an idle last layer (tests/unit/test_shortcut_lens.py) checks that case."""
    from effdepth.linear import lens

    fitted = lens.fit_shortcut_lens(smol, max_tokens=6000)
    kl = fitted.meta["held_out_kl"]
    n_layers = smol.n_layers
    early = range(1, n_layers // 3)
    assert all(kl["shortcut"][l] < kl["logit"][l] for l in early), (kl["shortcut"][:10], kl["logit"][:10])
    assert np.mean([kl["shortcut"][l] for l in early]) < 0.7 * np.mean([kl["logit"][l] for l in early])
    last = n_layers - 1
    assert kl["shortcut"][last] <= kl["logit"][last] * 1.05 + 1e-3
