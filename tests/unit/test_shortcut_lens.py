"""The linear shortcut lens (docs/SPEC.md §15.2): the transform plumbing against the logit lens, a known
identity on a model whose last layer does nothing, the stored fit, and the probe in a run."""

from __future__ import annotations

import types

import pytest
import torch

from effdepth import engine
from effdepth.arch import taps
from effdepth.capture import capture
from effdepth.linear import lens
from effdepth.probes.logit_lens import lens_metrics
from tests.tiny import random_ids, tiny_model
from tests.unit.test_linear import _CharTokenizer


def _loaded(model, name: str = "tiny") -> types.SimpleNamespace:
    config = model.config
    return types.SimpleNamespace(model=model, tokenizer=_CharTokenizer(), max_context=128, dtype="float32",
                                 n_layers=config.num_hidden_layers, d_model=config.hidden_size,
                                 spec=types.SimpleNamespace(name=name, fingerprint=f"fp-{name}"))


def test_an_identity_transform_is_the_logit_lens():
    model = tiny_model("llama")
    trace = capture(model, random_ids(24))
    plain, _ = lens_metrics(trace, taps(model))
    same, _ = lens_metrics(trace, taps(model), transform=lambda rows, layers: rows.clone(), budget_bytes=2**16)
    for name in plain:
        assert torch.equal(plain[name], same[name]), name


def test_the_lens_maps_each_row_with_its_own_layer():
    gen = torch.Generator().manual_seed(0)
    weight, bias = torch.randn(3, 4, 4, generator=gen), torch.randn(3, 4, generator=gen)
    fitted = lens.ShortcutLens(weight=weight, bias=bias)
    rows, layers = torch.randn(7, 4, generator=gen), torch.tensor([2, 0, 1, 2, 0, 0, 1])
    expected = torch.stack([rows[i] @ weight[layers[i]] + bias[layers[i]] for i in range(7)])
    assert torch.allclose(fitted.transform(rows, layers), expected, atol=1e-6)
    with pytest.raises(ValueError, match="weight has shape"):
        lens.ShortcutLens(weight=weight[:, :3], bias=bias)


def _idle_last_layer(family: str = "qwen2"):
    """A tiny model whose last layer adds nothing (zero output projections): h_{L-1} = h_L exactly."""
    model = tiny_model(family)
    last = model.model.layers[-1]
    with torch.no_grad():
        last.self_attn.o_proj.weight.zero_()
        last.mlp.down_proj.weight.zero_()
    return model


def test_where_the_residual_is_already_final_the_fitted_lens_is_the_identity_map():
    model = _idle_last_layer()
    fitted = lens.fit_shortcut_lens(_loaded(model), alpha=1e-9, max_tokens=3000)
    n_layers, d_model = model.config.num_hidden_layers, model.config.hidden_size
    assert fitted.weight.shape == (n_layers, d_model, d_model)
    assert torch.allclose(fitted.weight[-1], torch.eye(d_model), atol=1e-3)
    assert fitted.bias[-1].abs().max() < 1e-3
    kl = fitted.meta["held_out_kl"]
    assert kl["logit"][-1] < 1e-9 and kl["shortcut"][-1] < 1e-5  # both read h_L itself there
    assert fitted.meta["n_fit_tokens"] == 3000 and fitted.meta["n_held_tokens"] > 100
    # earlier layers are not h_L; the fit reads them better than decoding them as if they were
    assert sum(kl["shortcut"][:-1]) < sum(kl["logit"][:-1])


def test_a_lens_is_fitted_once_and_read_back_from_its_file(tmp_path, monkeypatch):
    model = _idle_last_layer()
    calls = []
    real_fit = lens.fit_shortcut_lens
    monkeypatch.setattr(lens, "fit_shortcut_lens", lambda *a, **k: calls.append(1) or real_fit(*a, **k))
    loaded = _loaded(model, "file-test")
    first = lens.shortcut_lens(loaded, tmp_path, max_tokens=500)
    assert calls == [1] and len(list(tmp_path.glob("*.safetensors"))) == 1
    lens._LENSES.clear()  # a new process: the file is read, nothing is fitted
    second = lens.shortcut_lens(loaded, tmp_path, max_tokens=500)
    assert calls == [1]
    assert torch.equal(first.weight, second.weight) and second.meta["held_out_kl"] == first.meta["held_out_kl"]
    assert second.meta["recipe"] == lens.recipe(max_tokens=500)


def test_a_run_with_the_shortcut_lens_holds_both_lenses_and_their_ed(word_model, tmp_path, monkeypatch):
    monkeypatch.setenv("EFFDEPTH_CACHE_DIR", str(tmp_path / "cache"))
    lens._LENSES.clear()
    text = "w1 w2 w3 w4 w5 w6 w7 w8 w9 w10 w11 w12 w13 w14"
    config = engine.ProbeConfig(probes=("logit_lens", "shortcut_lens"))
    result = engine.run_probes(word_model, text, config)
    metrics = set(result.tables["layer_token"]["metric"])
    assert {"kl", "overlap", "shortcut_kl", "shortcut_overlap", "shortcut_entropy", "shortcut_rank"} <= metrics
    assert {"shortcut_kl", "shortcut_overlap", "kl", "overlap"} <= set(result.tables["ed"]["probe"])
    assert result.meta["shortcut_fit"]["recipe"] == lens.recipe()
    assert result.meta["probe_config"]["shortcut_fit"] == lens.recipe()
    assert list((tmp_path / "cache" / "lenses").glob("*.safetensors"))
    plain = engine.ProbeConfig(probes=("logit_lens",))
    assert engine.run_key("f", text, "float32", plain, False) != engine.run_key("f", text, "float32", config, False)
    # reused from the stored run: the shortcut stage is not run again
    again = engine.run_probes(word_model, text, config, reuse=result)
    layer_token = again.tables["layer_token"]
    assert layer_token[layer_token["metric"] == "shortcut_kl"]["value"].tolist() == \
        result.tables["layer_token"].query("metric == 'shortcut_kl'")["value"].tolist()
    assert again.meta["shortcut_fit"] == result.meta["shortcut_fit"]
