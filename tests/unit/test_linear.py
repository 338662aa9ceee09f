"""The closed-form ridge fits and the shallow → deep linear maps (docs/SPEC.md §15.1): known values, a
recovered linear target, a map of a model onto itself, the tokenizer check, the store and the CLI."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest
import torch

from effdepth import linear, mapstore
from effdepth.contract import LinearMap
from effdepth.errors import PromptError
from effdepth.linear.collect import Rows
from effdepth.ridge import RidgeSums, relative_error
from effdepth.store import Store
from tests.tiny import VOCAB, tiny_model


def _sums(x: torch.Tensor, y: torch.Tensor, chunk: int) -> RidgeSums:
    sums = RidgeSums(x.shape[1], y.shape[1])
    for start in range(0, len(x), chunk):
        sums.add(x[start:start + chunk], y[start:start + chunk])
    return sums


def test_ridge_recovers_an_affine_map_whatever_the_feature_scales():
    gen = torch.Generator().manual_seed(0)
    scales = torch.tensor([1e-2, 1.0, 30.0, 1e3, 5.0, 0.3])  # residual streams hold features 1000× the rest
    x = (torch.randn(3000, 6, generator=gen) * scales + 4.0).double()  # float64 data: the fit's own precision
    weight, bias = torch.randn(6, 3, generator=gen), torch.randn(3, generator=gen)
    y = x @ weight.double() + bias.double()
    fitted = _sums(x, y, chunk=257).solve(alpha=1e-12)
    assert torch.allclose(fitted.weight, weight, rtol=1e-3, atol=1e-3)
    assert torch.allclose(fitted.bias, bias, atol=1e-2)
    assert relative_error(fitted(x.float()), y).max() < 1e-5


def test_ridge_sums_do_not_depend_on_the_chunking():
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(500, 4, generator=gen), torch.randn(500, 2, generator=gen)
    one, many = _sums(x, y, 500).solve(0.1), _sums(x, y, 7).solve(0.1)
    assert torch.allclose(one.weight, many.weight, atol=1e-6) and torch.allclose(one.bias, many.bias, atol=1e-6)


def test_ridge_penalty_has_its_closed_form():
    """One feature, y = 2x: the penalty alpha·n·var gives w = 2 / (1 + alpha), b = mean(y) − w·mean(x)."""
    x = torch.tensor([[1.0], [2.0], [4.0], [7.0]])
    fitted = _sums(x, 2 * x, 4).solve(alpha=0.25)
    assert float(fitted.weight) == pytest.approx(2 / 1.25, rel=1e-6)
    assert float(fitted.bias) == pytest.approx(2 * 3.5 - 2 / 1.25 * 3.5, rel=1e-6)


def _rows(resid: torch.Tensor) -> Rows:
    return Rows(resid=resid, windows=[list(range(resid.shape[1] + 1))])


def test_a_target_that_is_a_linear_function_of_one_source_depth_is_recovered():
    gen = torch.Generator().manual_seed(2)
    n_fit, n_held, d_a, d_b = 1500, 400, 6, 5
    source = torch.randn(4, n_fit + n_held, d_a, generator=gen)  # depths 0..3, independent
    maps = [(torch.randn(d_a, d_b, generator=gen), torch.randn(d_b, generator=gen)) for _ in range(3)]
    target = torch.stack([source[2] @ w + b for w, b in maps] + [torch.randn(n_fit + n_held, d_b, generator=gen)])
    error = linear.fit_errors(_rows(source[:, :n_fit]), _rows(target[:, :n_fit]), _rows(source[:, n_fit:]),
                              _rows(target[:, n_fit:]), alpha=1e-9)
    assert error.shape == (4, 4)
    assert error[2, :3].max() < 1e-4  # the known map, recovered on held-out rows
    others = np.delete(error[:, :3], 2, axis=0)
    assert others.min() > 0.3  # the other source depths cannot explain it
    assert error[:, 3].min() > 0.9  # independent noise is not predictable from any depth
    held = LinearMap(meta={"source_layers": 3, "target_layers": 3, "map_id": "m"}, error=error)
    assert held.best_target()[2] in (0, 1, 2)
    assert held.diagonal().tolist() == [0.0, 1.0, 2.0, 3.0]


class _CharTokenizer:
    """One id per character (mod the tiny vocabulary), a BOS-free tokenizer for tiny models."""

    def __init__(self, offset: int = 0) -> None:
        self.offset = offset

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict:
        return {"input_ids": [(ord(c) + self.offset) % VOCAB for c in text]}

    def get_vocab(self) -> dict:
        return {chr(i + self.offset): i for i in range(VOCAB)}

    def __len__(self) -> int:
        return VOCAB


def _loaded(model, name: str, tokenizer=None) -> types.SimpleNamespace:
    config = model.config
    return types.SimpleNamespace(model=model, tokenizer=tokenizer or _CharTokenizer(), max_context=128,
                                 dtype="float32", n_layers=config.num_hidden_layers, d_model=config.hidden_size,
                                 spec=types.SimpleNamespace(name=name, fingerprint=f"fp-{name}"))


def test_a_map_of_a_model_onto_itself_is_exact_on_the_diagonal():
    model = tiny_model("qwen2")
    result = linear.linear_map(lambda: _loaded(model, "a"), lambda: _loaded(model, "a"), max_tokens=4000,
                               alpha=1e-8)
    n = model.config.num_hidden_layers + 1
    assert result.error.shape == (n, n)
    diagonal = np.diag(result.error)
    assert diagonal.max() < 1e-3, diagonal
    off = result.error[~np.eye(n, dtype=bool)]
    assert off.min() > 10 * diagonal.max()  # other depths are not the same vectors
    assert result.meta["n_fit_tokens"] == 4000 and result.meta["n_held_tokens"] > 100
    assert result.best_target().tolist() == list(range(n))
    assert result.map_id == linear.map_key("fp-a", "fp-a", "float32", "float32", result.meta["corpus"], 4000, 1e-8)


def test_rows_spilled_to_a_file_read_back_exactly_and_give_the_same_map(monkeypatch, tmp_path):
    """Past SPILL_FROM_BYTES the rows live in an unlinked file (nothing left in its folder); every layer and
    block reads back bit for bit, and the map and the shortcut lens fitted on them equal the in-memory ones."""
    from effdepth.linear import collect, lens

    model = tiny_model("qwen2")
    windows = collect.token_windows(_CharTokenizer(), False, 900, max_context=128)
    kept = collect.residual_rows(model, windows)
    spilled = collect.residual_rows(model, windows, spill_from=0, directory=str(tmp_path))
    assert kept.resid is not None and spilled.resid is None and spilled.file is not None
    assert list(tmp_path.iterdir()) == []  # unlinked at once: a crash leaves nothing behind
    assert spilled.shape == kept.shape and spilled.n_rows == 900
    for depth in range(kept.shape[0]):
        assert torch.equal(spilled.layer(depth), kept.resid[depth])
    assert torch.equal(spilled.layer(-1, 17, 300), kept.resid[-1, 17:300])
    assert torch.equal(spilled.depths(5, 700), kept.depths(5, 700))
    assert torch.equal(kept.depths(5, 700).reshape(695, kept.shape[0], -1)[:, 2], kept.resid[2, 5:700])

    in_memory = linear.linear_map(lambda: _loaded(model, "a"), lambda: _loaded(model, "b"), max_tokens=900)
    monkeypatch.setattr(collect, "SPILL_FROM_BYTES", 0)
    on_disk = linear.linear_map(lambda: _loaded(model, "a"), lambda: _loaded(model, "b"), max_tokens=900)
    np.testing.assert_array_equal(on_disk.error, in_memory.error)
    lens_on_disk = lens.fit_shortcut_lens(_loaded(model, "a"), max_tokens=900)
    monkeypatch.setattr(collect, "SPILL_FROM_BYTES", 1 << 40)
    lens_in_memory = lens.fit_shortcut_lens(_loaded(model, "a"), max_tokens=900)
    assert torch.equal(lens_on_disk.weight, lens_in_memory.weight)
    assert lens_on_disk.meta["held_out_kl"] == lens_in_memory.meta["held_out_kl"]


def test_the_fit_never_raises_the_peak_above_loading_the_larger_model_of_the_demo_pair():
    """With the rows in a file, the fit of one source depth against every target depth (~1.6 GB for the demo
    pair) stays under loading either model, so the estimated peak is the load's (the 1.5B's weights)."""
    from effdepth import models
    from effdepth.datasets import corpus
    from effdepth.models.memory import estimate_memory_bytes

    source, target = models.resolve_model("qwen2.5-coder-0.5b"), models.resolve_model("qwen2.5-coder-1.5b")
    n_rows = corpus.estimated_tokens()
    for target_dtype in ("bfloat16", "float32"):
        peak = linear.peak_bytes(source, target, "float32", target_dtype, n_rows, dequantise=False)
        load = max(estimate_memory_bytes(source, "float32", False), estimate_memory_bytes(target, target_dtype, False))
        assert peak == load, (target_dtype, peak, load)


def test_two_models_with_different_tokenizers_get_a_clear_error_naming_both():
    model = tiny_model("llama")
    with pytest.raises(PromptError, match=r"same tokenizer.*src-model.*tgt-model"):
        linear.linear_map(lambda: _loaded(model, "src-model"),
                          lambda: _loaded(model, "tgt-model", tokenizer=_CharTokenizer(offset=3)), max_tokens=50)


def test_maps_are_stored_listed_and_deleted(tmp_path):
    store = Store(tmp_path / "cache.duckdb")
    assert mapstore.maps(store).empty and mapstore.get_map(store, "map-x") is None
    meta = {"map_id": "map-x", "source_name": "a", "target_name": "b", "source_dtype": "float32",
            "target_dtype": "bfloat16", "source_layers": 2, "target_layers": 3, "n_fit_tokens": 10,
            "n_held_tokens": 4, "seconds": 1.5}
    error = np.arange(12, dtype=float).reshape(3, 4) / 10
    mapstore.put_map(store, LinearMap(meta=meta, error=error))
    back = mapstore.get_map(store, "map-x")
    assert np.array_equal(back.error, error) and back.meta["target_dtype"] == "bfloat16"
    listing = mapstore.maps(store)
    assert listing["map_id"].tolist() == ["map-x"] and listing["n_fit_tokens"].tolist() == [10]
    assert len(store) == 0  # a map is not a run
    assert mapstore.delete_map(store, "map-x") and mapstore.get_map(store, "map-x") is None


def test_cli_linmap_fits_caches_and_writes_the_json(word_model_dir, tmp_path, capsys):
    from effdepth.cli import main

    cache = str(tmp_path / "c.duckdb")
    argv = ["linmap", "--source", str(word_model_dir), "--target", str(word_model_dir), "--tokens", "300",
            "--target-dtype", "bfloat16", "--cache", cache, "-q", "--json", "-"]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    n = first["source_layers"] + 1
    assert len(first["error"]) == n and all(len(row) == n for row in first["error"])
    assert first["n_fit_tokens"] == 300 and first["n_held_tokens"] > 0 and first["from_cache"] is False
    assert max(first["error"][s][s] for s in range(n)) < 5e-2  # onto its own bfloat16 residuals
    assert main(argv) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["from_cache"] is True and second["error"] == first["error"]
    assert main(["linmap", "--source", str(word_model_dir), "--target", str(word_model_dir), "--tokens", "3",
                 "--cache", cache, "-q"]) == 2
    assert "--tokens must be" in capsys.readouterr().err
    same = ["linmap", "--source", str(word_model_dir), "--target", str(word_model_dir), "--cache", cache, "-q"]
    assert main(same) == 2  # refused before any load: the identity
    assert "the same model" in capsys.readouterr().err
    assert main(["linmap", "--source", "smollm2-135m", "--target", "qwen2.5-coder-0.5b", "--cache", cache]) == 2
    said = capsys.readouterr().err
    assert "smollm2-135m reads smollm2 tokens and qwen2.5-coder-0.5b qwen2.5 tokens" in said


def test_cli_demo_precomputes_the_talk_set_and_resumes(tmp_path, capsys, monkeypatch):
    """``effdepth demo`` on two tiny models: every example prompt, the pair's sweeps and its linear map land in
    the cache; a second call finds them all and computes nothing."""
    from effdepth import app
    from effdepth.cli import main
    from tests import app_support

    monkeypatch.setenv("EFFDEPTH_CACHE_DIR", str(tmp_path / "cache-dir"))
    a = str(app_support.build_tiny_dir(tmp_path / "tiny-a", seed=1))
    b = str(app_support.build_tiny_dir(tmp_path / "tiny-b", seed=2, n_layers=4))
    cache = tmp_path / "demo.duckdb"
    argv = ["demo", "--models", a, "--pair", f"{a},{b}", "--sweep-n", "2", "--cache", str(cache), "-q"]
    assert main(argv + ["--plan"]) == 0
    planned = capsys.readouterr().out
    assert "hops sweep of" in planned and "linear map" in planned and not cache.exists()
    assert main(argv) == 0
    store = Store(cache)
    runs = store.runs()
    examples = runs[runs["dataset"].isna()]
    assert sorted(examples["prompt_text"]) == sorted(app.EXAMPLES.values())
    hops = runs[runs["dataset"] == "hops"]
    assert sorted(hops["model_name"].value_counts().tolist()) == [2, 2]
    assert len(mapstore.maps(store)) == 1
    before = (len(store), len(mapstore.maps(store)))
    assert main(argv) == 0
    assert (len(store), len(mapstore.maps(store))) == before
    assert main(["demo", "--pair", "only-one", "--cache", str(cache), "--plan"]) == 2
    capsys.readouterr()
    assert main(["demo", "--models", "no-such-model", "--pair", f"{a},{b}", "--cache", str(cache), "--plan"]) == 2
    assert "no-such-model" in capsys.readouterr().err  # named before any plan or work
