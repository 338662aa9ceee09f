"""Residual erasure (docs/SPEC.md §7.2) and integrated gradients (§7.3): known values and slow references.

The references are the plain way: one full hooked forward (and, for IG, one backward) per variant at
batch size 1, sharing no code with effdepth's batched replays.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from effdepth.arch import first_tensor, taps
from effdepth.capture import Replayer, capture
from effdepth.probes import erasure, igrad
from tests.tiny import FAMILIES, random_ids, tiny_model

T = 12
ALEN = 3
ERASURE_FAMILIES = ("llama", "gemma3_text")  # plain pre-norm; sandwich norms + logit soft-cap


@pytest.fixture(scope="module", params=ERASURE_FAMILIES)
def setup(request):
    model = tiny_model(request.param)
    ids = random_ids(T, seed=3)
    return request.param, model, ids, Replayer(model, ids)


def _hook_count(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


# ------------------------------------------------------------------------------------ erasure

def _reference_erasure(model, ids, baseline, answer_len, positions=None):
    """Per (k, t): full forward with h_k[t] overwritten by baseline[k] (pre-hook on layer k; for k = L
    a forward hook on the last layer); effect = max over answer-predicting positions of the L2 distance
    of the probability vectors."""
    model_taps = taps(model)
    n_layers, n_tokens = model_taps.n_layers, ids.shape[1]
    with torch.no_grad():
        clean = torch.softmax(model(input_ids=ids).logits[0].double(), -1)
    measured = list(range(n_tokens - answer_len - 1, n_tokens - 1))
    out = np.zeros((n_layers + 1, n_tokens))
    for k in range(n_layers + 1):
        for t in range(n_tokens) if positions is None else positions:
            if k < n_layers:
                def pre(_m, args, kwargs, k=k, t=t):
                    if args:
                        h = args[0].clone()
                        h[:, t] = baseline[k]
                        return (h, *args[1:]), kwargs
                    h = kwargs["hidden_states"].clone()
                    h[:, t] = baseline[k]
                    return args, {**kwargs, "hidden_states": h}
                handle = model_taps.layers[k].register_forward_pre_hook(pre, with_kwargs=True)
            else:
                def post(_m, _args, output, t=t):
                    h = first_tensor(output).clone()
                    h[:, t] = baseline[n_layers]
                    return (h, *output[1:]) if isinstance(output, tuple) else h
                handle = model_taps.layers[-1].register_forward_hook(post)
            try:
                with torch.no_grad():
                    probs = torch.softmax(model(input_ids=ids).logits[0].double(), -1)
            finally:
                handle.remove()
            out[k, t] = float((probs - clean)[measured].norm(dim=-1).max())
    return out


def test_baseline_is_token_weighted_mean():
    model = tiny_model("llama")
    prompts = [random_ids(15, seed=1), random_ids(4, seed=2)[0]]  # [1, T] and [T] both accepted
    base = erasure.erasure_baseline(model, prompts)
    traces = [capture(model, p if p.dim() == 2 else p[None]) for p in prompts]
    expected = torch.cat([tr.resid for tr in traces], dim=1).mean(dim=1)  # over all 19 tokens
    assert base.shape == (model.config.num_hidden_layers + 1, model.config.hidden_size)
    assert torch.allclose(base, expected, atol=1e-6)
    # token-weighted, not prompt-weighted
    prompt_mean = torch.stack([tr.resid.mean(dim=1) for tr in traces]).mean(0)
    assert not torch.allclose(base, prompt_mean, atol=1e-4)


def test_baseline_from_text_needs_tokenizer():
    with pytest.raises(ValueError, match="tokenizer"):
        erasure.erasure_baseline(tiny_model("llama"), ["some text"])


def test_erasure_matches_reference(setup):
    family, model, ids, replayer = setup
    base = erasure.erasure_baseline(model, [random_ids(20, seed=7)])
    frame = erasure.residual_erasure(replayer, base, ALEN, max_batch_tokens=5 * T)  # several chunks
    assert list(frame.columns) == ["depth", "pos", "value"]
    got = erasure.erasure_matrix(frame).numpy()
    n_layers = replayer.trace.n_layers
    assert got.shape == (n_layers + 1, T)
    expected = _reference_erasure(model, ids, base, ALEN)
    np.testing.assert_allclose(got, expected, atol=1e-5, err_msg=family)
    assert expected.max() > 1e-2  # the probe measures something real on this model
    assert np.all(got[:, T - 1] == 0) and np.all(expected[:, T - 1] < 1e-6)  # causal: t > T-2


def test_erasing_with_own_value_changes_nothing(setup):
    _, model, ids, replayer = setup
    t0 = 5
    base = replayer.trace.resid[:, t0].clone()  # the clean residual of position t0 at every depth
    frame = erasure.residual_erasure(replayer, base, ALEN, positions=[t0, 2])
    own = frame[frame.pos == t0]["value"]
    assert len(own) == replayer.trace.n_layers + 1 and own.max() < 1e-5
    other = frame[frame.pos == 2]["value"]
    assert other.max() > 1e-3


@pytest.mark.parametrize("family", FAMILIES)
def test_suffix_replay_equals_the_full_replay(family):
    """An edit at position t, replayed over positions t..stop-1 only (the clean prefix's keys / values
    reused), gives what the replay over the whole text gives there; the clean suffix is the clean run."""
    model = tiny_model(family)
    replayer = Replayer(model, random_ids(T, seed=1))
    start, stop, layer = 5, T - 1, 1
    view = replayer.suffix(start, stop)
    assert view is not None, family
    edited = replayer.trace.resid[layer].clone()[None]
    edited[0, start] += 1.0
    full = replayer.run_staggered([layer], edited)[:, start:stop]
    part = view.run_staggered([layer], edited[:, start:stop])
    torch.testing.assert_close(part, full, atol=1e-5, rtol=0)
    assert float((full[0] - replayer.trace.resid[-1, start:stop]).abs().max()) > 1e-2  # the edit matters
    clean = view.run_staggered([0], replayer.trace.resid[0, start:stop][None])[0]
    torch.testing.assert_close(clean, replayer.trace.resid[-1, start:stop], atol=1e-5, rtol=0)


def test_erasure_by_suffix_equals_the_whole_text_replay(setup):
    family, model, _, replayer = setup
    base = erasure.erasure_baseline(model, [random_ids(20, seed=7)])
    calls = []
    original = Replayer.run_layer
    def counting(self, layer, hidden):  # noqa: E306
        calls.append(hidden.shape[0] * hidden.shape[1])  # token-layers replayed
        return original(self, layer, hidden)
    Replayer.run_layer = counting
    try:
        by_suffix = erasure.erasure_matrix(erasure.residual_erasure(replayer, base, ALEN)).numpy()
        suffix_tokens = sum(calls)
        calls.clear()
        in_full = erasure.erasure_matrix(erasure.residual_erasure(replayer, base, ALEN, reuse_prefix=False)).numpy()
    finally:
        Replayer.run_layer = original
    np.testing.assert_allclose(by_suffix, in_full, atol=1e-6, err_msg=family)
    assert suffix_tokens < 0.75 * sum(calls)  # the suffixes replay fewer positions


def test_erasure_without_a_suffix_replay_runs_in_full():
    """Where keys / values cannot be reused (an unknown per-token layer argument), erasure replays the
    whole text and still gives the reference's numbers."""
    model = tiny_model("llama")
    ids = random_ids(T, seed=3)
    replayer = Replayer(model, ids)
    replayer._calls = [type(c)(c.args, {**c.kwargs, "mystery": torch.zeros(1, T)}) for c in replayer._calls]
    assert replayer.suffix(2) is None
    replayer._calls = Replayer(model, ids)._calls  # back to the real calls, but no suffix for this one:
    replayer.suffix = lambda *_a, **_k: None
    base = erasure.erasure_baseline(model, [random_ids(20, seed=7)])
    got = erasure.erasure_matrix(erasure.residual_erasure(replayer, base, ALEN)).numpy()
    np.testing.assert_allclose(got, _reference_erasure(model, ids, base, ALEN), atol=1e-5)


def test_erasure_validates_inputs(setup):
    _, model, _, replayer = setup
    base = erasure.erasure_baseline(model, [random_ids(8)])
    with pytest.raises(ValueError, match="answer_len"):
        erasure.residual_erasure(replayer, base, T)
    with pytest.raises(ValueError, match="baseline"):
        erasure.residual_erasure(replayer, base[:-1], ALEN)
    with pytest.raises(ValueError, match="positions"):
        erasure.residual_erasure(replayer, base, ALEN, positions=[T])


# ------------------------------------------------------------------------------------ IG

def _gold_prob(logits, ids, answer_len):
    """Σ over the answer span of p(gold next token), from logits[:-1] and ids[1:] (plain form)."""
    probs = torch.softmax(logits[:-1].double(), -1)
    gold = probs.gather(-1, ids[1:, None])[:, 0]
    return gold[-answer_len:].sum()


def _hooked_target(model, ids, part, layer, value, answer_len):
    """F with ``part`` of ``layer`` replaced by value [1, T, d] in a full forward (batch 1)."""
    model_taps = taps(model)
    module = {"layer": model_taps.layers, "attn": model_taps.attn_modules,
              "mlp": model_taps.mlp_modules}[part][layer]

    def hook(_m, _args, output):
        return (value, *output[1:]) if isinstance(output, tuple) else value

    handle = module.register_forward_hook(hook)
    try:
        logits = model(input_ids=ids).logits[0]
    finally:
        handle.remove()
    return _gold_prob(logits, ids[0], answer_len)


def _reference_ig(model, ids, trace, part, layer, n_steps, answer_len, first=0):
    """Plain IG: the positions from ``first`` on interpolated from the text's token mean, the others clean."""
    x = {"layer": trace.resid[layer + 1], "attn": trace.attn[layer], "mlp": trace.mlp[layer]}[part]
    b = x.mean(dim=0, keepdim=True).expand_as(x).clone()
    b[:first] = x[:first]
    total = torch.zeros_like(x, dtype=torch.float64)
    for k in range(n_steps):
        value = (b + (k / n_steps) * (x - b))[None].clone().requires_grad_(True)
        target = _hooked_target(model, ids, part, layer, value, answer_len)
        (grad,) = torch.autograd.grad(target, value)
        total += grad[0].double()
    return ((total / n_steps) * (x - b).double()).sum(-1).numpy()


@pytest.mark.parametrize("family", ["qwen2", "gemma3_text"])
def test_ig_matches_reference(family):
    model = tiny_model(family)
    ids = random_ids(T, seed=4)
    replayer = Replayer(model, ids)
    frame = igrad.integrated_gradients(replayer, ALEN, layers=[1, 4], n_steps=6, block=4)
    assert list(frame.columns) == ["part", "layer", "pos", "value"]
    assert len(frame) == 3 * 2 * T
    for part in igrad.PARTS:
        for layer in (1, 4):
            got = frame[(frame.part == part) & (frame.layer == layer)].sort_values("pos")["value"]
            expected = _reference_ig(model, ids, replayer.trace, part, layer, 6, ALEN)
            np.testing.assert_allclose(got.to_numpy(), expected, atol=1e-5, err_msg=f"{part} {layer}")
            assert np.abs(expected).max() > 1e-6
    assert got.iloc[-1] == 0  # the last position predicts nothing measured


@pytest.mark.parametrize("family", FAMILIES)
def test_windowed_ig_equals_the_plain_loop_from_the_first_position(family):
    """IG reported at positions from t0 on: the plain loop interpolating those positions only (the others
    clean) against the text's token mean, whether the replay covers the whole text or the window t0.. alone."""
    model = tiny_model(family)
    ids = random_ids(T, seed=4)
    trace = capture(model, ids)
    first, wanted = 5, [5, 6, 8, 10]
    expected = {(part, layer): _reference_ig(model, ids, trace, part, layer, 4, ALEN, first=first)[wanted]
                for part in igrad.PARTS for layer in (1, 4)}
    for replayer in (Replayer(model, ids), Replayer(model, ids, window=(first, T), chunk=2)):
        frame = igrad.integrated_gradients(replayer, ALEN, layers=[1, 4], n_steps=4, block=3, positions=wanted)
        for (part, layer), want in expected.items():
            got = frame[(frame.part == part) & (frame.layer == layer)].sort_values("pos")
            assert got["pos"].tolist() == wanted
            np.testing.assert_allclose(got["value"].to_numpy(), want, atol=1e-5, rtol=1e-5,
                                       err_msg=f"{family} {part} {layer} offset {replayer.offset}")
    assert max(np.abs(v).max() for v in expected.values()) > 1e-6


@pytest.mark.parametrize("family", FAMILIES)
def test_windowed_erasure_equals_the_reference(family):
    """Erasure of positions inside a window, replayed over the window alone (against the clean keys /
    values before it, the pass run in chunks), gives the full hooked forwards' numbers."""
    model = tiny_model(family)
    ids = random_ids(T, seed=3)
    base = erasure.erasure_baseline(model, [random_ids(20, seed=7)])
    wanted = [4, 6, 9, 10, 11]
    replayer = Replayer(model, ids, window=(4, T), chunk=3)
    frame = erasure.residual_erasure(replayer, base, ALEN, positions=wanted)
    got = erasure.erasure_matrix(frame).numpy()
    want = _reference_erasure(model, ids, base, ALEN, positions=wanted)[:, wanted]
    np.testing.assert_allclose(got, want, atol=1e-5, err_msg=family)
    assert want.max() > 1e-3
    with pytest.raises(ValueError, match="outside 4..11"):
        erasure.residual_erasure(replayer, base, ALEN, positions=[2])
    short = Replayer(model, ids, window=(4, 8))
    with pytest.raises(ValueError, match="does not hold the answer-predicting"):
        erasure.residual_erasure(short, base, ALEN)


def test_patched_target_at_clean_value_is_model_output():
    model = tiny_model("llama")
    ids = random_ids(T, seed=4)
    replayer = Replayer(model, ids)
    f_clean = igrad.gold_probability(replayer.trace.logits, ids[0], ALEN)
    assert f_clean == pytest.approx(float(_gold_prob(replayer.trace.logits, ids[0], ALEN)), abs=1e-7)
    for part in igrad.PARTS:
        x = igrad.clean_activation(replayer, part, 2)
        with torch.no_grad():
            f = igrad.patched_target(replayer, part, 2, torch.stack([x, x]), ALEN)
        assert torch.allclose(f, torch.tensor([f_clean, f_clean]).float(), atol=1e-6), part


def test_ig_completeness():
    """Σ_t IG[t] ≈ F(x) − F(b) (the defining property of IG), N = 512 left Riemann steps."""
    model = tiny_model("llama", seed=1)
    ids = random_ids(T, seed=5)
    replayer = Replayer(model, ids)
    trace = replayer.trace
    layers = [0, 2, 4]
    frame = igrad.integrated_gradients(replayer, ALEN, layers=layers, n_steps=512)
    f_x = float(_gold_prob(trace.logits, ids[0], ALEN))
    checked = 0
    for part in igrad.PARTS:
        for layer in layers:
            x = igrad.clean_activation(replayer, part, layer)
            b = x.mean(0, keepdim=True).expand_as(x)[None].clone()
            with torch.no_grad():
                f_b = float(_hooked_target(model, ids, part, layer, b, ALEN))
            total = frame[(frame.part == part) & (frame.layer == layer)]["value"].sum()
            assert total == pytest.approx(f_x - f_b, rel=0.05, abs=2e-4), (part, layer)
            checked += abs(f_x - f_b) > 1e-3
    assert checked >= 3  # at least some differences are far from 0, so rel=5% is a real check


def test_ig_baseline_equal_to_input_gives_zero():
    model = tiny_model("qwen3")
    replayer = Replayer(model, random_ids(T, seed=6))
    frame = igrad.integrated_gradients(replayer, ALEN, layers=[0, 3], n_steps=4,
                                       baseline=lambda x: x)
    assert (frame["value"] == 0).all()


def test_ig_restores_model_and_handles_p1_baseline():
    model = tiny_model("llama")
    flags = [p.requires_grad for p in model.parameters()]
    assert all(flags)  # a fresh model trains by default: IG must freeze and then restore
    hooks = _hook_count(model)
    replayer = Replayer(model, random_ids(T, seed=2))
    frame = igrad.integrated_gradients(replayer, ALEN, parts=("layer",), layers=[1], n_steps=4,
                                       baseline="p1")
    assert [p.requires_grad for p in model.parameters()] == flags
    assert _hook_count(model) == hooks
    assert set(frame.part) == {"layer"} and len(frame) == T
    x = torch.randn(5, 8)
    assert torch.allclose(igrad.make_baseline(x, "p1")[:, 0], x.mean(-1))
    assert torch.allclose(igrad.make_baseline(x, "p2")[0], x.mean(0))
    with pytest.raises(ValueError):
        igrad.make_baseline(x, "nope")
    with pytest.raises(ValueError, match="parts"):
        igrad.integrated_gradients(replayer, ALEN, parts=("resid",))


def test_ig_restores_flags_on_error():
    model = tiny_model("llama")
    replayer = Replayer(model, random_ids(T, seed=2))
    with pytest.raises(ValueError):
        igrad.ig_one(replayer, "layer", 0, answer_len=T)  # bad answer length, raised inside
    assert all(p.requires_grad for p in model.parameters())
