"""Long traces (issue 18): the chunked clean pass, traces that keep some rows only, replays of one window,
the limit at the model's own context, the range form of the measured positions and the ED per segment."""

from __future__ import annotations

import json

import pytest
import torch

from effdepth import capture as capture_module
from effdepth import cli, engine, positions
from effdepth.capture import Replayer, capture, clean_pass
from effdepth.errors import PromptError
from tests.tiny import FAMILIES, random_ids, tiny_model

T = 40


@pytest.mark.parametrize("family", FAMILIES)
def test_a_chunked_pass_equals_the_one_shot_pass(family):
    """Seven forward calls of at most 7 tokens with a KV cache give the one-call pass (and its token means,
    closure and logits); the one-call pass runs without a cache, as before."""
    model = tiny_model(family)
    ids = random_ids(T, seed=2)
    one = capture(model, ids)
    chunked = capture(model, ids, chunk=7)
    for name in ("resid", "attn", "mlp", "logits"):
        torch.testing.assert_close(getattr(chunked, name), getattr(one, name), atol=1e-5, rtol=1e-5, msg=name)
    assert one.closure < 1e-5 and chunked.closure < 1e-5
    for name in ("resid", "attn", "mlp"):
        torch.testing.assert_close(chunked.token_mean[name], getattr(one, name).mean(dim=1), atol=1e-6, rtol=1e-5)
    assert capture_module.chunk_bounds(T, None, 7) == [(0, 7), (7, 14), (14, 21), (21, 28), (28, 35), (35, 40)]
    assert capture_module.chunk_bounds(T, (30, 36), 16) == [(0, 16), (16, 30), (30, 36), (36, 40)]


def test_a_pass_keeps_only_the_rows_it_is_asked_for():
    """rows + window + logit positions are kept, nothing else; their values are the full pass's."""
    model = tiny_model("qwen2")
    ids = random_ids(T, seed=2)
    full = capture(model, ids)
    part = clean_pass(model, ids, rows=[3, 9], window=(30, 34), logit_positions=[9, 39], chunk=8).trace
    kept = [3, 9, 30, 31, 32, 33, 39]
    assert part.positions.tolist() == kept and part.n_tokens == 7 and part.text_length == T
    torch.testing.assert_close(part.resid, full.resid[:, kept], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(part.logits_at([39, 9]), full.logits[[39, 9]], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(part.at([39, 9]).mlp, full.mlp[:, [39, 9]], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="kept no activations at positions \\[4\\]"):
        part.at([4])
    with pytest.raises(ValueError, match="kept no logits at positions \\[31\\]"):
        part.logits_at([31])
    window = part.window(30, 34)
    assert window.n_tokens == 4 and window.logits.shape[0] == 0 and window.logit_positions.tolist() == []


@pytest.mark.parametrize("family", FAMILIES)
def test_a_suffix_of_a_window_equals_the_whole_texts_replay(family):
    """A Replayer over the window 18.. of a chunked pass, and a suffix of it, replay an edit as the Replayer
    over the whole text does (its queries attend to the clean keys / values before the window)."""
    model = tiny_model(family)
    ids = random_ids(T, seed=1)
    whole = Replayer(model, ids)
    window = Replayer(model, ids, window=(18, T), chunk=5)
    edited = whole.trace.resid[2].clone()[None]
    edited[0, 25] += 1.0
    want = whole.run_staggered([2], edited)[:, 18:]
    got = window.run_staggered([2], edited[:, 18:])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    part = window.suffix(7, T - 18)  # positions 25..
    torch.testing.assert_close(part.run_staggered([2], edited[:, 25:]), want[:, 7:], atol=1e-5, rtol=0)


# ------------------------------------------------------------------------ the engine on a long text

LONG_POSITIONS = 512


@pytest.fixture(scope="module")
def long_model(tmp_path_factory):
    from effdepth import models
    from tests.unit.test_store import tiny_model_dir

    return models.load_model(str(tiny_model_dir(tmp_path_factory.mktemp("long-llama") / "llama",
                                                max_positions=LONG_POSITIONS)))


def _text(n_words: int) -> str:
    return " ".join(f"w{(7 * i) % 61}" for i in range(n_words))  # n_words + 1 tokens with <s>


def _replayed(monkeypatch) -> list[int]:
    """The token-layers every replayed layer call runs (batch x positions), recorded as the probes run."""
    calls: list[int] = []
    original = Replayer.run_layer

    def counting(self, layer, hidden):
        calls.append(hidden.shape[0] * hidden.shape[1])
        return original(self, layer, hidden)

    monkeypatch.setattr(Replayer, "run_layer", counting)
    return calls


def test_a_windowed_run_replays_the_window_only(long_model, monkeypatch):
    """Layer skipping on last:32 of a 300- and a 450-token text replays the same number of token-layers
    (nothing before the window), the pass runs in chunks, and the numbers are the probe's on a Replayer of
    the whole text given the same measured positions."""
    from effdepth.probes import skip

    monkeypatch.setattr(capture_module, "CHUNK_TOKENS", 64)
    calls = _replayed(monkeypatch)
    config = engine.ProbeConfig(probes=("cosine", "logit_lens", "skip"), positions="last:32",
                                skip_variants=("future", "current"))
    counts = []
    for n_words in (299, 449):
        calls.clear()
        run = engine.run_probes(long_model, _text(n_words), config)
        counts.append(sum(calls))
        assert run.meta["n_tokens"] == n_words + 1 and run.meta["measured"] == list(range(n_words - 31, n_words + 1))
    assert counts[0] == counts[1] > 0
    ids = engine.tokenize(long_model, _text(449))
    whole = skip.skip_effects(Replayer(long_model.model, ids[None]), run.meta["splits_used"], ("future", "current"),
                              measured=run.meta["measured"])
    keys = ["variant", "split", "skipped", "affected"]
    got = run.tables["skip"].sort_values(keys).reset_index(drop=True)
    want = whole.matrix.sort_values(keys).reset_index(drop=True)
    assert got[keys].equals(want[keys])
    assert got["value"].to_numpy() == pytest.approx(want["value"].to_numpy(), abs=1e-5)
    assert run.meta["probe_config"]["skip_positions"] == "window"


def test_the_limit_is_the_models_context(long_model):
    """Past the model's context one sentence names both numbers and where the part that fits starts."""
    assert len(engine.tokenize(long_model, _text(LONG_POSITIONS - 1))) == LONG_POSITIONS  # no cap below it
    text = _text(LONG_POSITIONS + 20)
    with pytest.raises(PromptError) as err:
        engine.tokenize(long_model, text)
    message = str(err.value)
    assert f"is {LONG_POSITIONS + 21:,} tokens long, past " in message
    assert f"context of {LONG_POSITIONS} tokens" in message
    start = int(message.split("from character ")[1].split(" ")[0].replace(",", ""))
    assert len(engine.tokenize(long_model, text[start:])) <= LONG_POSITIONS


def test_the_range_form_of_the_measured_positions():
    assert positions.select("3:6", 10) == [3, 4, 5]
    assert positions.span("3:6") == (3, 6) and positions.span("last:3") is None
    with pytest.raises(PromptError, match="empty range"):
        positions.check("6:6")
    with pytest.raises(PromptError, match="reach past this 10-token text"):
        positions.select("3:12", 10)


def test_ed_per_segment_and_the_same_segment_run_alone(long_model, tmp_path, capsys):
    """--segments 40 cuts the measured positions into consecutive segments (stop of one = start of the next)
    with the ED of every rule and an interval; --positions A:B of one segment gives its ED."""
    from tests.unit.test_store import tiny_model_dir

    directory = tiny_model_dir(tmp_path / "model", max_positions=LONG_POSITIONS)
    text = _text(199)
    out = tmp_path / "run.json"
    base = ["probe", "--model", str(directory), "--text", text, "--probes", "cosine,logit_lens", "-q",
            "--cache", str(tmp_path / "c.duckdb")]
    assert cli.main([*base, "--positions", "from:40", "--segments", "40", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "EDR per segment of 40 positions" in printed and "40–79" in printed
    doc = json.loads(out.read_text())
    segments = doc["segments"]
    assert [(s["start"], s["stop"]) for s in segments] == [(40, 80), (80, 120), (120, 160), (160, 200)]
    assert all(set(s["ed"]) == {"cosine", "kl", "overlap"} and set(s["ed_guarded"]) == {"cosine", "kl", "overlap"}
               for s in segments)
    for s in segments:
        for probe, e in s["ed"].items():
            if e["ed"] is not None:
                assert e["edr_lo"] <= e["edr"] <= e["edr_hi"] or e["edr_lo"] is None, (s["start"], probe)
    chosen = segments[2]
    alone = tmp_path / "alone.json"
    assert cli.main([*base, "--positions", f"{chosen['start']}:{chosen['stop']}", "--json", str(alone)]) == 0
    ed = json.loads(alone.read_text())["ed"]
    for probe in ("cosine", "kl", "overlap"):
        assert ed[probe]["ed"] == chosen["ed"][probe]["ed"], probe
        assert ed[probe]["guarded"]["ed"] == chosen["ed_guarded"][probe]["ed"], probe


def test_a_bad_segment_size_is_refused(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["probe", "--model", "x", "--text", "a b", "--segments", "1"])
    assert stop.value.code == 2 and "at least 2 positions" in capsys.readouterr().err


def test_a_sweep_over_traces_takes_positions_and_segments(tmp_path, capsys):
    """``sweep --jsonl`` over three traces with --positions and --segments: segment k of every item, the mean
    EDR over the items that reach it; a range past an item's end skips that item with the reason."""
    from tests.unit.test_store import tiny_model_dir

    directory = tiny_model_dir(tmp_path / "model", max_positions=LONG_POSITIONS)
    traces = tmp_path / "traces.jsonl"
    traces.write_text("\n".join(json.dumps({"prompt": _text(n) + " ", "answer": "w1"}) for n in (100, 140, 180)))
    out = tmp_path / "sweep.json"
    base = ["sweep", "--model", str(directory), "--jsonl", str(traces), "--probes", "cosine,logit_lens",
            "--n-boot", "50", "-q", "--cache", str(tmp_path / "c.duckdb")]
    assert cli.main([*base, "--positions", "from:20", "--segments", "40", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "EDR per segment of 40 measured positions along the items" in printed
    doc = json.loads(out.read_text())
    assert doc["segment_size"] == 40
    reach = {}
    for row in doc["segments"]:
        reach[row["segment"]] = row["n_items"]
    # 102, 142 and 182 tokens measured from 20: 82, 122 and 162 positions -> 3, 4 and 5 segments of 40
    assert reach == {0: 3, 1: 3, 2: 3, 3: 2, 4: 1}
    assert cli.main([*base, "--positions", "20:130"]) == 0
    captured = capsys.readouterr()
    assert "1 item skipped: traces[0]: Measured positions 20:130 reach past this 102-token text" in captured.out
    assert ": 2 items of " in captured.out


def test_the_api_takes_long_texts_ranges_and_segments(long_model):
    import effdepth

    run = effdepth.probe(long_model, _text(299), probes=("cosine", "logit_lens"), positions="100:180",
                         segments=40, cache=False)
    assert run.meta["measured"] == list(range(100, 180))
    table = run.segments()
    assert sorted(set(zip(table["start"], table["stop"]))) == [(100, 140), (140, 180)]
    assert set(table["probe"]) == {"cosine", "kl", "overlap"} and set(table["rule"]) == {"p1", "guarded"}
    assert len(run.segments(20, n_boot=10)["segment"].unique()) == 4
    assert run.segment_chart().to_dict()["layer"]
    with pytest.raises(PromptError, match="takes no option 'max_tokens'"):
        effdepth.probe(long_model, _text(10), max_tokens=4096, cache=False)
    with pytest.raises(PromptError, match="segments is a number of positions"):
        effdepth.probe(long_model, _text(10), segments="x", cache=False)


def test_a_range_past_the_text_or_a_text_past_the_context_is_said_before_any_load(tmp_path, monkeypatch, capsys):
    from effdepth import models
    from tests.unit.test_store import tiny_model_dir

    directory = tiny_model_dir(tmp_path / "model", max_positions=64)

    def refuse(*_a, **_k):
        raise AssertionError("no model may load for input the tokenizer already refuses")

    monkeypatch.setattr(models, "load_model", refuse)
    base = ["probe", "--model", str(directory), "--probes", "cosine", "--no-cache", "-q"]
    assert cli.main([*base, "--text", _text(30), "--positions", "20:40"]) == 2
    assert "Measured positions 20:40 reach past this 31-token text" in capsys.readouterr().err
    assert cli.main([*base, "--text", _text(80)]) == 2
    assert "is 81 tokens long, past " in capsys.readouterr().err
    assert cli.main([*base, "--text", _text(30), "--positions", "9:3"]) == 2
    assert "empty range" in capsys.readouterr().err
