"""Probe numbers: invariants, agreement with slow obvious references, and known values.

Every family gets a tiny random model built from a config (tests/tiny.py). The references below are
written the plain way — per-token Python loops, hooks on a full forward per variant — so they share
no code with effdepth's vectorised, batched implementations.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from effdepth import checks
from effdepth.arch import check_supported, first_tensor, taps
from effdepth.capture import Replayer, capture, skip_layer
from effdepth.errors import UnsupportedArchitectureError
from effdepth.probes import cosine, logit_lens, skip
from tests.tiny import FAMILIES, random_ids, tiny_model

T = 40


@pytest.fixture(scope="module", params=FAMILIES)
def family_model(request):
    model = tiny_model(request.param)
    ids = random_ids(T)
    return request.param, model, ids, capture(model, ids)


# ----------------------------------------------------------------------------------- invariants

def test_residual_decomposes_into_attention_plus_mlp(family_model):
    _, _, _, trace = family_model
    lhs = trace.resid[1:]
    rhs = trace.resid[:-1] + trace.attn + trace.mlp
    scale = lhs.abs().max()
    assert torch.allclose(lhs, rhs, atol=1e-5 * scale), (lhs - rhs).abs().max()


def test_layer_inputs_match_hidden_states(family_model):
    _, model, ids, trace = family_model
    with torch.no_grad():
        hidden = model(input_ids=ids, output_hidden_states=True).hidden_states
    # transformers 5: hidden_states[l] is the input of layer l for l < L; the last entry is normed.
    for layer in range(trace.n_layers):
        assert torch.allclose(trace.resid[layer], hidden[layer][0].float(), atol=1e-6)


def test_mlp_tap_is_what_the_mlp_branch_adds(family_model):
    """Recompute m_l from ĥ_l = h_l + a_l with the family's own MLP branch: checks a_l and m_l taps."""
    family, model, _, trace = family_model
    model_taps = taps(model)
    for layer_index, layer in enumerate(model_taps.layers):
        h_mid = (trace.resid[layer_index] + trace.attn[layer_index])[None]
        with torch.no_grad():
            if family == "gpt2":
                expected = layer.mlp(layer.ln_2(h_mid))
            elif family == "gemma3_text":
                expected = layer.post_feedforward_layernorm(layer.mlp(layer.pre_feedforward_layernorm(h_mid)))
            elif family == "olmo2":
                expected = layer.post_feedforward_layernorm(layer.mlp(h_mid))
            else:
                expected = layer.mlp(layer.post_attention_layernorm(h_mid))
        assert torch.allclose(expected[0], trace.mlp[layer_index], atol=1e-5), family


def test_logit_lens_of_last_residual_is_the_model_output(family_model):
    _, model, _, trace = family_model
    with torch.no_grad():
        z = taps(model).to_logits(trace.resid[-1])
    assert torch.allclose(z, trace.logits, atol=1e-5)


def test_skipping_nothing_changes_nothing(family_model):
    _, model, ids, trace = family_model
    with skip_layer(model, 1, positions=torch.zeros(T, dtype=torch.bool)):
        again = capture(model, ids)
    assert torch.equal(again.logits, trace.logits)
    replayer = Replayer(model, ids)
    result = skip.skip_effects(replayer, splits=[8, 24], variants=skip.VARIANTS)
    noise = result.matrix[result.matrix["variant"].str.startswith("noise")]
    assert len(noise) and noise["value"].max() < 1e-4
    noise_out = result.output[result.output["variant"].str.startswith("noise")]
    assert noise_out["value"].max() < 1e-5


def test_skip_context_manager_always_restores(family_model):
    _, model, ids, trace = family_model
    model_taps = taps(model)

    def hook_counts():
        return [(len(layer._forward_hooks), len(layer._forward_pre_hooks)) for layer in model_taps.layers]

    before = hook_counts()  # transformers may keep hooks of its own on layers
    with pytest.raises(RuntimeError):
        with skip_layer(model, 2):
            assert hook_counts() != before
            raise RuntimeError("boom")
    assert hook_counts() == before
    assert torch.equal(capture(model, ids).logits, trace.logits)


# ----------------------------------------------------------------------------- references

def _reference_cosine(trace):
    """Per (layer, token) loop over the §4 formulas."""
    L, n = trace.n_layers, trace.n_tokens
    out = {k: np.zeros((L, n)) for k in ("rc_att", "rc_mlp", "rc_layer", "cos_att", "cos_mlp",
                                          "cos_layer", "cos_io")}
    for l in range(L):
        for i in range(n):
            h = trace.resid[l, i].double()
            a = trace.attn[l, i].double()
            m = trace.mlp[l, i].double()
            h_next = trace.resid[l + 1, i].double()
            c = h_next - h

            def cos(x, y):
                return float(x @ y / (max(x.norm(), 1e-6) * max(y.norm(), 1e-6)))

            out["rc_att"][l, i] = float(a.norm() / max(h.norm(), 1e-6))
            out["rc_mlp"][l, i] = float(m.norm() / max((h + a).norm(), 1e-6))
            out["rc_layer"][l, i] = float(c.norm() / max(h.norm(), 1e-6))
            out["cos_att"][l, i] = cos(a, h)
            out["cos_mlp"][l, i] = cos(m, h + a)
            out["cos_layer"][l, i] = cos(c, h)
            out["cos_io"][l, i] = cos(h_next, h)
    return out


def test_cosine_matches_reference(family_model):
    _, _, _, trace = family_model
    frame = cosine.contributions(trace)
    for metric, expected in _reference_cosine(trace).items():
        got = (frame[frame.metric == metric].pivot(index="layer", columns="pos", values="value")
               .to_numpy())
        np.testing.assert_allclose(got, expected, atol=2e-5, err_msg=metric)


def test_logit_lens_matches_reference(family_model):
    _, model, _, trace = family_model
    model_taps = taps(model)
    frame, top = logit_lens.logit_lens(trace, model_taps)
    final = trace.logits.double()
    final_top = [set(row.topk(5).indices.tolist()) for row in final]
    for l in (0, 2, trace.n_layers - 1):
        with torch.no_grad():
            z = model_taps.unembed(model_taps.final_norm(trace.resid[l][None]))[0].double()
        if model_taps.logit_softcap:
            z = torch.tanh(z / model_taps.logit_softcap) * model_taps.logit_softcap
        for i in range(0, trace.n_tokens, 7):
            p = torch.softmax(z[i], -1)
            q = torch.softmax(final[i], -1)
            kl = float((p * (p.log() - q.log())).sum())
            overlap = len(set(z[i].topk(5).indices.tolist()) & final_top[i]) / 5
            entropy = float(-(p * p.log()).sum())
            order = torch.argsort(z[i], descending=True).tolist()
            rank = order.index(int(final[i].argmax())) + 1
            row = frame[(frame.layer == l) & (frame.pos == i)].set_index("metric")["value"]
            assert row["kl"] == pytest.approx(kl, abs=1e-5, rel=1e-4)
            assert row["overlap"] == pytest.approx(overlap)
            assert row["entropy"] == pytest.approx(entropy, abs=1e-4)
            assert row["rank"] == rank
            best = top[(top.layer == l) & (top.pos == i) & (top["rank"] == 1)]
            assert int(best.token_id.iloc[0]) == order[0]


def _measured(n_tokens, split, keep):
    """The positions a variant measures: >= split (all for the current effect), within ``keep`` if given."""
    mask = torch.arange(n_tokens) >= (split or 0)
    return mask if keep is None else mask & keep


def _reference_skip(model, ids, trace, s, split, keep=None, first=1):
    """Plain loop: one full hooked forward with layer s skipped at positions first..split-1 (first.. for
    the current effect); R(s, ·) and O(s)."""
    window = slice(first, split) if split else slice(first, None)
    with skip_layer(model, s, window):
        edited = capture(model, ids)
    measured = _measured(trace.n_tokens, split, keep)
    clean_c = trace.contrib[:, measured]
    diff = (edited.contrib[:, measured] - clean_c).norm(dim=-1) / clean_c.norm(dim=-1).clamp_min(1e-6)
    out = (torch.softmax(edited.logits, -1) - torch.softmax(trace.logits, -1)).norm(dim=-1)[measured]
    return diff.amax(-1).numpy(), float(out.max())


def _reference_local(model, ids, trace, s, split, keep=None, first=1):
    """Hooks: every layer i > s gets input h_i - c_s in the window; its contribution is read there."""
    model_taps = taps(model)
    window = torch.zeros(trace.n_tokens, dtype=torch.bool)
    window[first:split if split else None] = True
    removed = trace.contrib[s] * window[:, None]
    contribs = trace.contrib.clone()
    handles = []
    for i, layer in enumerate(model_taps.layers):
        if i < s:
            continue

        def pre(_m, args, kwargs, i=i):
            new_input = (trace.resid[i] - removed)[None]
            if args:
                return (new_input, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": new_input}

        def post(_m, _args, output, i=i):
            if i > s:
                contribs[i] = first_tensor(output)[0] - (trace.resid[i] - removed)
            return (trace.resid[i + 1] - removed)[None]  # overwrite every output from s on: no cascade

        if i > s:
            handles.append(layer.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(layer.register_forward_hook(post))
    try:
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0]
    finally:
        for h in handles:
            h.remove()
    measured = _measured(trace.n_tokens, split, keep)
    clean_c = trace.contrib[:, measured]
    diff = (contribs[:, measured] - clean_c).norm(dim=-1) / clean_c.norm(dim=-1).clamp_min(1e-6)
    out = (torch.softmax(logits, -1) - torch.softmax(trace.logits, -1)).norm(dim=-1)[measured]
    return diff.amax(-1).numpy(), float(out.max())


@pytest.mark.parametrize("variant", ["future", "current", "local_future", "local_current"])
def test_skip_matches_plain_loop(family_model, variant):
    family, model, ids, trace = family_model
    splits = [8, 16, 32]
    result = skip.skip_effects(Replayer(model, ids), splits=splits, variants=[variant],
                               max_batch_tokens=3 * T)  # small batches: exercises chunking
    matrix, output = result.matrix, result.output
    reference = _reference_local if variant.startswith("local") else _reference_skip
    for split in (splits if variant.endswith("future") else [None]):
        for s in range(trace.n_layers):
            ref_r, ref_o = reference(model, ids, trace, s, split)
            key = (matrix.variant == variant) & (matrix.split == (split or 0)) & (matrix.skipped == s)
            got = matrix[key].sort_values("affected")["value"].to_numpy()
            if variant.startswith("local"):
                ref_r[: s + 1] = 0.0  # layer s's own contribution is read before the overwrite (§6.3)
            np.testing.assert_allclose(got, ref_r, atol=1e-4, err_msg=f"{family} {variant} s={s} t={split}")
            got_o = output[(output.variant == variant) & (output.split == (split or 0))
                           & (output.skipped == s)]["value"].item()
            assert got_o == pytest.approx(ref_o, abs=1e-5)
    if variant.endswith("future"):
        reduced = matrix[(matrix.variant == variant) & (matrix.split == -1)]
        per_split = matrix[(matrix.variant == variant) & (matrix.split > 0)]
        expected = per_split.groupby(["skipped", "affected"])["value"].max()
        np.testing.assert_allclose(reduced.set_index(["skipped", "affected"])["value"].sort_index(),
                                   expected.sort_index())


@pytest.mark.parametrize("variant", ["future", "current", "local_future", "local_current"])
def test_windowed_skip_matches_plain_loop_at_the_measured_positions(family_model, variant):
    """With measured positions, the layer is skipped from the first measured position on, and R and O are
    the plain loop's maxima over the measured positions only: packed and unpacked, with a Replayer over the
    whole text or over the window alone (its queries attend to the clean keys / values before it)."""
    family, model, ids, trace = family_model
    measured = list(range(20, T, 3))  # 20, 23, ..., a stride inside the last part of the text
    keep = torch.zeros(T, dtype=torch.bool)
    keep[measured] = True
    whole = Replayer(model, ids, logit_positions=measured)  # the clean logits only where measured
    window = Replayer(model, ids, logit_positions=measured, window=(18, T), chunk=7)  # starts before them
    assert window.offset == 18 and window.trace.n_tokens == T - 18 and window.n_text == T
    reference = _reference_local if variant.startswith("local") else _reference_skip
    expected = {(split, s): reference(model, ids, trace, s, split, keep, first=20)
                for split in ([24, 32] if variant.endswith("future") else [None]) for s in range(trace.n_layers)}
    for replayer, pack in ((whole, True), (whole, False), (window, True), (window, False)):
        result = skip.skip_effects(replayer, splits=[24, 32], variants=[variant], measured=measured, pack=pack)
        for (split, s), (ref_r, ref_o) in expected.items():
            ref_r = ref_r.copy()
            if variant.startswith("local"):
                ref_r[: s + 1] = 0.0
            key = ((result.matrix.variant == variant) & (result.matrix.split == (split or 0))
                   & (result.matrix.skipped == s))
            got = result.matrix[key].sort_values("affected")["value"].to_numpy()
            where = f"{family} {variant} s={s} t={split} offset={replayer.offset} pack={pack}"
            np.testing.assert_allclose(got, ref_r, atol=1e-5, rtol=1e-5, err_msg=where)
            out = result.output
            got_o = out[(out.variant == variant) & (out.split == (split or 0)) & (out.skipped == s)]["value"]
            assert got_o.item() == pytest.approx(ref_o, abs=1e-5), where
    drawn = skip.draw_splits(T, measured=measured)
    assert drawn and all(28 <= t <= measured[-1] - 4 for t in drawn)
    with pytest.raises(ValueError, match="no measured position at or after"):
        skip.skip_effects(whole, splits=[T - 1], variants=["future"], measured=measured[:2])
    with pytest.raises(ValueError, match="no measured position before them"):
        skip.skip_effects(whole, splits=[20], variants=["future"], measured=measured)
    with pytest.raises(ValueError, match="outside the replayed window"):
        skip.skip_effects(window, splits=[24], variants=["future"], measured=[10, *measured])


def test_packed_skips_equal_one_sequence_per_split(family_model):
    """The packed path (shared prefix + per-split suffixes) gives the unpacked numbers, all variants at once."""
    family, model, ids, _ = family_model
    replayer = Replayer(model, ids)
    splits = [8, 16, 32]
    view = skip._packed_view(replayer, splits, *skip._packed_layout(T, splits, True))
    assert view is not None, f"{family}: layer calls could not be packed"
    # 3 splits + current: T + sum(T - t) slots instead of 4 sequences of T
    assert view is not replayer and len(skip._packed_layout(T, splits, True)[0]) == T + sum(T - t for t in splits)
    packed = skip.skip_effects(replayer, splits=splits, pack=True)
    plain = skip.skip_effects(replayer, splits=splits, pack=False)
    for name, keys in (("matrix", ["variant", "split", "skipped", "affected"]),
                       ("output", ["variant", "split", "skipped"])):
        a = getattr(packed, name).sort_values(keys).reset_index(drop=True)
        b = getattr(plain, name).sort_values(keys).reset_index(drop=True)
        assert a[keys].equals(b[keys])
        np.testing.assert_allclose(a["value"], b["value"], atol=2e-5, err_msg=f"{family} {name}")
    assert set(packed.matrix.variant) == {*skip.VARIANTS, "noise_future", "noise_current",
                                          "noise_local_future", "noise_local_current"}


@pytest.mark.parametrize("family", ["llama", "gemma3_text", "gpt2"])
def test_packed_skips_with_eager_attention_and_additive_masks(family):
    """Eager attention takes additive float masks (GPT-2 positionally): the packed mask follows suit."""
    import transformers as tf

    from tests.tiny import CONFIGS, scale_init

    model = scale_init(tf.AutoModelForCausalLM.from_config(CONFIGS[family](), attn_implementation="eager")).eval()
    replayer = Replayer(model, random_ids(T))
    assert skip._packed_view(replayer, [8, 24], *skip._packed_layout(T, [8, 24], True)) is not None
    packed = skip.skip_effects(replayer, splits=[8, 24], variants=["future", "current"])
    plain = skip.skip_effects(replayer, splits=[8, 24], variants=["future", "current"], pack=False)
    keys = ["variant", "split", "skipped", "affected"]
    np.testing.assert_allclose(packed.matrix.sort_values(keys)["value"], plain.matrix.sort_values(keys)["value"],
                               atol=2e-5)


def test_packed_layout_masks_each_split_to_its_own_window():
    """A suffix slot of split t sees the prefix below t and its own suffix, causally; never another split."""
    pos, group = skip._packed_layout(12, [4, 8], with_current=False)
    assert pos.tolist() == [*range(8), *range(4, 12), *range(8, 12)]
    assert group.tolist() == [0] * 8 + [1] * 8 + [2] * 4
    model = tiny_model("llama")
    view = skip._packed_view(Replayer(model, random_ids(12)), [4, 8], pos, group)
    mask = view._calls[0].kwargs["attention_mask"][0, 0]  # [N, N] bool
    sees = lambda a: set(mask[a].nonzero()[:, 0].tolist())  # noqa: E731
    assert sees(8) == {0, 1, 2, 3, 8}  # split 4, position 4: prefix 0..3 and itself
    assert sees(10) == {0, 1, 2, 3, 8, 9, 10}  # split 4, position 6
    assert sees(16) == {*range(8), 16}  # split 8, position 8
    assert sees(5) == set(range(6))  # a prefix slot: causal within the prefix
    cos = view._calls[0].kwargs["position_embeddings"][0]
    clean_cos = Replayer(model, random_ids(12))._calls[0].kwargs["position_embeddings"][0]
    torch.testing.assert_close(cos[0, 8], clean_cos[0, 4])  # slot 8 carries rotary position 4


def test_unpackable_layer_call_falls_back_to_the_unpacked_path():
    """A per-token layer argument effdepth does not know makes packing refuse (and the skips still run)."""
    model = tiny_model("llama")
    replayer = Replayer(model, random_ids(T))
    replayer._calls = [type(c)(c.args, {**c.kwargs, "mystery": torch.zeros(1, T)}) for c in replayer._calls]
    assert replayer.packed(torch.arange(T), torch.ones(T, T, dtype=torch.bool)) is None
    flash = Replayer(model, random_ids(T))
    flash.model = SimpleNamespace(config=SimpleNamespace(_attn_implementation="flash_attention_2"))
    assert flash.packed(torch.arange(T), torch.ones(T, T, dtype=torch.bool)) is None  # no arbitrary masks
    result = skip.skip_effects(replayer, splits=[8, 16], variants=["future"])
    assert result.matrix[result.matrix.variant == "future"]["value"].max() > 0


# ----------------------------------------------------------------------------- known values

def test_future_matrix_is_zero_on_and_below_diagonal_and_current_diagonal_is_one():
    model = tiny_model("llama")
    result = skip.skip_effects(Replayer(model, random_ids(T)), splits=[16], variants=["future", "current"])
    m = result.matrix
    future = m[(m.variant == "future") & (m.split == -1)]
    assert future[future.affected <= future.skipped]["value"].abs().max() == 0.0
    assert future[future.affected > future.skipped]["value"].min() > 0.0
    current = m[(m.variant == "current") & (m.split == -1)]
    diagonal = current[current.affected == current.skipped]["value"]
    np.testing.assert_allclose(diagonal, 1.0)


def test_known_values_on_a_model_with_an_identity_layer():
    """Zeroing layer 2's output projections makes it the identity: a_2 = m_2 = 0 exactly."""
    model = tiny_model("llama")
    layer = model.model.layers[2]
    with torch.no_grad():
        layer.self_attn.o_proj.weight.zero_()
        layer.mlp.down_proj.weight.zero_()
    ids = random_ids(T)
    trace = capture(model, ids)
    frame = cosine.contributions(trace)
    at2 = frame[frame.layer == 2].groupby("metric")["value"].max()
    assert at2["rc_att"] == 0 and at2["rc_mlp"] == 0 and at2["rc_layer"] == 0
    assert at2["cos_io"] == pytest.approx(1.0, abs=1e-6)
    result = skip.skip_effects(Replayer(model, ids), splits=[16], variants=["future", "current"])
    row = result.matrix[(result.matrix.skipped == 2) & (result.matrix.split == -1)]
    assert row["value"].abs().max() < 1e-5  # skipping an identity layer changes nothing downstream
    out = result.output[(result.output.skipped == 2)]
    assert out["value"].abs().max() < 1e-6


def test_logit_lens_known_values_when_every_layer_is_the_identity():
    model = tiny_model("qwen2")
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
    trace = capture(model, random_ids(T))
    frame, _ = logit_lens.logit_lens(trace, taps(model))
    by_metric = frame.groupby("metric")["value"]
    assert by_metric.max()["kl"] < 1e-6
    assert by_metric.min()["overlap"] == 1.0 and by_metric.max()["rank"] == 1.0


def test_logit_lens_chunking_does_not_change_numbers():
    model = tiny_model("gemma3_text")
    trace = capture(model, random_ids(T))
    big, big_top = logit_lens.lens_metrics(trace, taps(model))
    small, small_top = logit_lens.lens_metrics(trace, taps(model), budget_bytes=3 * 4 * 97 * 4)
    for name in big:
        torch.testing.assert_close(big[name], small[name])
    assert torch.equal(big_top["top_ids"], small_top["top_ids"])


def test_bfloat16_model_runs_with_fp32_reductions():
    model = tiny_model("llama", dtype=torch.bfloat16)
    ids = random_ids(T)
    trace = capture(model, ids)
    assert trace.resid.dtype == torch.float32 and trace.logits.dtype == torch.float32
    result = skip.skip_effects(Replayer(model, ids), splits=[16], variants=["future"])
    noise = result.matrix[result.matrix.variant == "noise_future"]["value"].max()
    effect = result.matrix[(result.matrix.variant == "future") & (result.matrix.split == -1)]["value"].max()
    # the replay of an edit that changes nothing stays within bf16's tolerance (checks.NOISE_TOLERANCE: measured
    # 0.0 here), far below the effect of a real skip (2.1 on this model)
    assert 0 <= noise <= checks.NOISE_TOLERANCE["bfloat16"] < effect / 10


# ----------------------------------------------------------------------------- splits and errors

def test_split_drawing_follows_p2():
    import random
    rng = random.Random(123)
    candidates = list(range(8, 60, 8))
    rng.shuffle(candidates)
    assert skip.draw_splits(64) == candidates[:4]
    assert skip.draw_splits(12) == []
    assert all(8 <= t < 60 for t in skip.draw_splits(64, seed=7))


def test_bad_splits_and_short_prompts_are_clear_errors():
    model = tiny_model("llama")
    replayer = Replayer(model, random_ids(10))
    with pytest.raises(ValueError, match="at least 13 tokens"):
        skip.skip_effects(replayer, variants=["future"])
    with pytest.raises(ValueError, match="outside"):
        skip.skip_effects(replayer, splits=[50], variants=["future"])
    current = skip.skip_effects(replayer, variants=["current"])  # current needs no split
    assert set(current.matrix.variant) == {"current", "noise_current"}


def test_unsupported_architecture_names_supported_ones():
    import transformers as tf
    with pytest.raises(UnsupportedArchitectureError, match="llama.*qwen2"):
        check_supported(tf.BertConfig())


def test_skip_reports_progress_per_replayed_layer():
    """Long skips show 'skip replay, layer l/L' as they go (not one jump at the end), in order."""
    seen = []
    skip.skip_effects(Replayer(tiny_model("llama"), random_ids(T)), splits=[8, 16], max_batch_tokens=2 * T,
                      progress=lambda stage, frac: seen.append((stage, frac)))
    replay = [(s, f) for s, f in seen if s.startswith("skip replay")]
    direct = [(s, f) for s, f in seen if s.startswith("direct-path replay")]
    assert replay and direct
    assert "skip replay, layer 1/5, batch 1/" in replay[0][0]  # small batches: several of them
    for steps in (replay, direct):
        fractions = [f for _, f in steps]
        assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0) and len(set(fractions)) >= 5


def test_repeated_split_points_count_once():
    assert skip.check_splits([16, 8, 16], 40) == [16, 8]
    result = skip.skip_effects(Replayer(tiny_model("llama"), random_ids(T)), splits=[16, 16], variants=["future"])
    future = result.matrix[(result.matrix.variant == "future") & (result.matrix.split == 16)]
    assert len(future) == 5 * 5 and future[future.affected > future.skipped]["value"].min() > 0
