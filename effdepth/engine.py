"""Run the probes on one model × one prompt and return tidy tables (the one entry point for CLI and app).

The cache key is built here, in one place, from what determines the numbers: the model's weights
fingerprint (which covers its tokenizer), the text, the chat-template switch, the dtype, the probe
configuration and the code/probe version. It is computable without loading the model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

import pandas as pd
import torch

import effdepth
from effdepth import contract, depth, positions, stages, turns
from effdepth.capture import CleanPass, clean_pass, trust_checks
from effdepth.contract import (  # noqa: F401 - the vocabulary the engine's callers read from it
    ANSWER_PROBES,
    DEFAULT_PROBES,
    OPTIONAL_TABLES,
    PROBES,
    SPLIT_MAX,
    TABLES,
    Progress,
    RunResult,
)
from effdepth.errors import PromptError
from effdepth.linear import lens
from effdepth.probes import igrad, skip
from effdepth.probes._tables import layer_means
from effdepth.stages import _BASELINES, ERASURE_BASELINE_ITEMS, erasure_baseline  # noqa: F401 - the engine's API

MAX_IG_STEPS = 4096  # a bound on the work one request can start (P2 uses 256)



@dataclass
class ProbeConfig:
    """What was asked for; everything here is part of the cache key."""

    probes: tuple[str, ...] = DEFAULT_PROBES
    splits: tuple[int, ...] | None = None  # None: drawn as in P2 with ``seed``
    seed: int = skip.SEED_FUTURE
    skip_variants: tuple[str, ...] = skip.VARIANTS
    answer: str | None = None  # erasure / IG: the answer text that ends the prompt (teacher-forced)
    ig_steps: int = igrad.N_STEPS  # P2: 256 (left Riemann sum)
    ig_parts: tuple[str, ...] = ("layer",)  # P1 uses "layer" only; P2 adds "attn" and "mlp"
    positions: str = positions.ALL  # the measured positions (effdepth.positions); the forward covers the text

    def __post_init__(self) -> None:
        if self.probes is None:
            self.probes = DEFAULT_PROBES
        if isinstance(self.probes, str):  # "cosine" or "cosine,logit_lens": names, not letters
            self.probes = tuple(p.strip() for p in self.probes.split(",") if p.strip())
        self.probes = tuple(self.probes)
        unknown = set(self.probes) - set(PROBES)
        if unknown or not self.probes:
            raise PromptError(f"Unknown probe(s) {sorted(unknown) or '(none given)'}; "
                              f"choose from {', '.join(PROBES)}.")
        self.splits = tuple(int(t) for t in self.splits) if self.splits else None
        self.skip_variants = tuple(self.skip_variants)
        bad = set(self.skip_variants) - set(skip.VARIANTS)
        if bad or not self.skip_variants:
            raise PromptError(f"Unknown skip variant(s) {sorted(bad) or '(none given)'}; "
                              f"choose from {', '.join(skip.VARIANTS)}.")
        self.ig_parts = tuple(self.ig_parts)
        bad = set(self.ig_parts) - set(igrad.PARTS)
        if bad or not self.ig_parts:
            raise PromptError(f"Unknown IG part(s) {sorted(bad) or '(none given)'}; "
                              f"choose from {', '.join(igrad.PARTS)}.")
        if self.answer is not None:  # " Yoko Ono" and "Yoko Ono" pick the same tokens: one cache key
            self.answer = self.answer.strip() or None
        if isinstance(self.ig_steps, bool) or not isinstance(self.ig_steps, (int, float)) \
                or int(self.ig_steps) != self.ig_steps:
            raise PromptError(f"ig_steps is a whole number of steps (P2 uses 256), not {self.ig_steps!r}.")
        if not 1 <= int(self.ig_steps) <= MAX_IG_STEPS:
            raise PromptError(f"Integrated gradients need at least 1 step and at most {MAX_IG_STEPS} "
                              f"(P2 uses 256), not {int(self.ig_steps)}.")
        self.ig_steps = int(self.ig_steps)
        self.positions = positions.check(self.positions)

    def as_dict(self) -> dict:
        """The cache-key view: keys of the opt-in probes appear only when they run (old keys stay valid)."""
        out = {"probes": list(self.probes), "splits": list(self.splits) if self.splits else None,
               "seed": self.seed, "skip_variants": list(self.skip_variants)}
        if any(p in self.probes for p in ANSWER_PROBES):
            out["answer"] = self.answer
        if "erasure" in self.probes:
            out["erasure_baseline"] = f"gsm8k[:{ERASURE_BASELINE_ITEMS}] token mean"
        if "igrad" in self.probes:
            out.update(ig_steps=self.ig_steps, ig_parts=list(self.ig_parts), ig_baseline="p2")
        if "shortcut_lens" in self.probes:  # the fit is part of what was asked for
            out["shortcut_fit"] = lens.recipe()
        if self.positions != positions.ALL:
            out["positions"] = self.positions
            if "skip" in self.probes:  # windowed skips edit the window only (earlier runs: from position 1)
                out["skip_positions"] = "window"
            if "igrad" in self.probes:  # windowed IG interpolates from the first measured position on
                out["ig_positions"] = "window"
        return out


def run_key(fingerprint: str, text: str, dtype: str, config: ProbeConfig, chat_template: bool) -> str:
    payload = json.dumps({
        "fingerprint": fingerprint, "text": text, "dtype": dtype, "chat_template": chat_template,
        "config": config.as_dict(), "probe_version": effdepth.PROBE_VERSION,
    }, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def prompt_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_text(text, what: str = "The prompt") -> str:
    """``text`` if it can be analysed: a non-empty str that is valid Unicode (PromptError otherwise).

    Checked before any model loads: a lone surrogate (from invalid UTF-8 bytes on a command line, or a
    ``\\ud800`` escape in JSON) cannot be tokenized and would otherwise fail deep in the tokenizer.
    """
    if text is not None and not isinstance(text, str):
        raise PromptError(f"{what} must be text (a str), not {type(text).__name__}.")
    if text is None or not text.strip():
        raise PromptError(f"{what} is empty. Type some text or pick an example / benchmark item.")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        bad = text[err.start]
        where = f"character {err.start + 1}"
        if 0xDC80 <= ord(bad) <= 0xDCFF:  # how Python carries an undecodable byte (surrogateescape)
            detail = f"the byte 0x{ord(bad) - 0xDC00:02x}, which is not valid UTF-8"
        else:
            detail = f"a lone surrogate (U+{ord(bad):04X}), which is not valid Unicode"
        raise PromptError(f"{what} is not valid text: {where} is {detail}. Give UTF-8 text.") from None
    return text


def tokenize(loaded, text: str, chat_template: bool = False) -> torch.Tensor:
    """Token ids [T] exactly as fed to the model (no chat template unless asked; docs/SPEC.md §1), up to the
    model's own context (PromptError past it, naming the part of the text that would fit)."""
    ids = encode(loaded.tokenizer, text, chat_template, loaded.spec.name)
    check_length(loaded.tokenizer, text, chat_template, len(ids), loaded.max_context, loaded.spec.name)
    return torch.tensor(ids, dtype=torch.long)


def encode(tokenizer, text: str, chat_template: bool, name: str) -> list[int]:
    """The token ids of ``text`` as the model reads it (the chat template rendered where asked)."""
    check_text(text)
    if chat_template:
        if not getattr(tokenizer, "chat_template", None):
            raise PromptError(f"{name} has no chat template; switch the chat template off.")
        rendered = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                 add_generation_prompt=True)
        return list(tokenizer(rendered, add_special_tokens=False)["input_ids"])
    return list(tokenizer(text, add_special_tokens=True)["input_ids"])


def check_length(tokenizer, text: str, chat_template: bool, n_tokens: int, max_context: int, name: str) -> None:
    """PromptError unless 2 <= ``n_tokens`` <= the model's context; past it, one sentence with both numbers
    and where the part of the text that fits starts."""
    if n_tokens > max_context:
        fits = ""
        if not chat_template:
            start = _fitting_start(tokenizer, text, n_tokens - max_context)
            if start is not None:
                fits = f"; its last {max_context:,} tokens (from character {start:,} on) would fit"
        raise PromptError(f"The text is {n_tokens:,} tokens long, past {name}'s context of {max_context:,} "
                          f"tokens{fits}.")
    if n_tokens < 2:
        raise PromptError("The prompt has fewer than 2 tokens; the probes need at least 2.")


def _fitting_start(tokenizer, text: str, n_over: int) -> int | None:
    """The character where the text's last (context) tokens start, or None without character offsets."""
    try:
        offsets = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)["offset_mapping"]
    except (NotImplementedError, ValueError, TypeError, KeyError):
        return None
    # drop the first n_over + 1 tokens: the kept text is tokenised again with its own start token
    index = min(n_over + 1, len(offsets) - 1)
    return int(offsets[index][0])


def token_strings(tokenizer, ids: Sequence[int]) -> list[str]:
    """Each token decoded on its own (what the heatmap axes show); UTF-8 fragments show as ``\\xNN`` bytes."""
    from effdepth.tokens import token_labels

    return token_labels(tokenizer, ids)


def run_probes(loaded, text: str, config: ProbeConfig | None = None, chat_template: bool = False,
               progress: Progress | None = None,
               extra_meta: dict | None = None, on_result: Callable[[RunResult], None] | None = None,
               reuse: RunResult | None = None, derived_dir=None) -> RunResult:
    """Run the configured probes on one prompt; every number comes from one clean pass + replays.

    The run holds the model alone (``effdepth.turns``): hooks and replays of two runs never mix. A run
    that waits for another one on the same model reports ``waiting for another run on this model
    (position k)`` through ``progress``; an exception raised by ``progress`` ends the run (nothing is
    returned, the model is left clean). Input problems (text, answer span) are raised before any work.

    ``on_result``: called after each probe with the run so far (a complete run of a config with just the
    finished probes), so a page or the CLI shows each probe as soon as it is done. ``reuse``: an earlier
    run of the same model, text and dtype whose probes (those run with the same options) are taken
    instead of computed again; the clean forward pass always runs (the invariants are measured anew).
    ``derived_dir``: where fits a probe derives once per model are kept (the shortcut lens, the erasure
    baseline): beside the result cache the caller chose (None: the project's cache folder).
    """
    config = config or ProbeConfig()
    notify = progress or (lambda stage, frac=None: None)
    ids = tokenize(loaded, text, chat_template)
    answer_len = None
    if any(p in config.probes for p in ANSWER_PROBES) or config.positions == "answer":  # fails in ms: first
        answer_len = answer_length(loaded, text, config.answer, chat_template, ids)
    measured = positions.select(config.positions, len(ids), answer_len)
    extra_meta = _with_answer_tokens(loaded, text, extra_meta, chat_template, ids)

    def on_wait(position: int) -> None:
        notify(f"{WAITING_STAGE} (position {position})", None)

    with turns.turn_on(loaded.model, on_wait=on_wait):
        return _run_probes(loaded, text, ids, config, chat_template, answer_len, notify, extra_meta, on_result,
                           reuse, measured, derived_dir)


def _with_answer_tokens(loaded, text: str, extra_meta: dict | None, chat_template: bool,
                        ids: torch.Tensor) -> dict | None:
    """A benchmark item's run (``extra_meta["answer"]``: its gold answer) also says how many tokens its
    answer has (``answer_tokens``), so that its positions can be split into answer and question later."""
    answer = (extra_meta or {}).get("answer")
    if not answer:
        return extra_meta
    try:
        return {**extra_meta, "answer_tokens": int(answer_length(loaded, text, answer, chat_template, ids))}
    except PromptError:  # the text does not end with it (a chat template around it): no split
        return extra_meta


#: The stage a run reports while another run holds the model.
WAITING_STAGE = "waiting for another run on this model"


def _run_probes(loaded, text: str, ids: torch.Tensor, config: ProbeConfig, chat_template: bool,
                answer_len: int | None, notify: Progress, extra_meta: dict | None,
                on_result: Callable[[RunResult], None] | None = None,
                reuse: RunResult | None = None, measured: list[int] | None = None, derived_dir=None) -> RunResult:
    """The probes in order; a run stopped after some of them (an exception from ``notify``: the stop
    button, a closed tab) carries the finished ones as ``err.partial_result``, a complete run of a config
    with just those probes, which the caller may keep."""
    clock = time.perf_counter()
    notify("forward pass", None)
    measured = None if measured is None or len(measured) == len(ids) else measured
    usable = stages.reusable(reuse, config, loaded, text, chat_template)
    computed = [p for p in config.probes if p not in usable]
    plan = stages.plan_pass(computed, measured, len(ids), answer_len)
    clean = clean_pass(loaded.model, ids[None], rows=plan.rows, window=plan.window,
                       logit_positions=_decoded_positions(config, measured, answer_len, len(ids)))
    parts = stages.Parts(checks=trust_checks(clean.trace, clean.taps, loaded.dtype), measured=measured,
                         derived_dir=derived_dir)
    parts.timings["forward"] = time.perf_counter() - clock

    def so_far() -> RunResult:
        kept = tuple(p for p in config.probes if p in parts.finished)
        return _assemble(loaded, text, ids, dataclasses.replace(config, probes=kept), chat_template, parts,
                         extra_meta)

    def running(probe: str, partial) -> None:
        """The finished probes plus the running one's tables so far (``meta["running"]``: no ED yet)."""
        result = so_far()
        result.tables["skip"], result.tables["skip_output"] = partial.matrix, partial.output
        result.meta["running"] = probe
        on_result(result)

    if on_result is not None:
        parts.on_partial = running

    try:
        for probe in (p for p in PROBES if p in config.probes):
            if probe in ANSWER_PROBES and answer_len is None:
                continue
            _one_probe(probe, loaded, clean, config, answer_len, notify, parts, reuse if probe in usable else None)
            if on_result is not None and len(parts.finished) < len(config.probes):
                on_result(so_far())
    except BaseException as err:
        if parts.finished:
            try:  # never hide the stop (or the error) behind a failure of the bookkeeping
                err.partial_result = so_far()
            except Exception:  # noqa: BLE001
                pass
        raise
    _note_answer_span(parts, answer_len, len(ids))
    return _assemble(loaded, text, ids, config, chat_template, parts, extra_meta)


def _note_answer_span(parts: stages.Parts, answer_len: int | None, n_tokens: int) -> None:
    if answer_len is not None:
        parts.notes.append(f"Erasure / IG answer span: the last {answer_len} tokens "
                           f"(positions {n_tokens - answer_len}–{n_tokens - 1}), measured at the positions "
                           f"{n_tokens - answer_len - 1}–{n_tokens - 2} that predict them.")


def _one_probe(probe: str, loaded, clean: CleanPass, config: ProbeConfig, answer_len: int | None,
               notify: Progress, parts: stages.Parts, reuse: RunResult | None) -> None:
    """Compute one probe into ``parts``, or take it from ``reuse`` (same model, text and options)."""
    clock = time.perf_counter()
    if reuse is not None:
        stages.take_probe(probe, reuse, parts)
        parts.timings[probe] = float((reuse.meta.get("timings") or {}).get(probe) or 0.0)
        parts.notes.append(f"{probe} taken from run {reuse.run_id} (same model, text and options).")
    else:
        stages.STAGES[probe](loaded, clean, config, answer_len, notify, parts)
        parts.timings[probe] = time.perf_counter() - clock
    parts.finished.append(probe)


def _decoded_positions(config: ProbeConfig, measured: list[int] | None, answer_len: int | None,
                       n_tokens: int) -> list[int] | None:
    """Where the clean pass keeps the model's logits: the measured positions, the answer-predicting ones
    and the last (None: every position, which an unwindowed run needs)."""
    if measured is None:
        return None
    kept = {*measured, n_tokens - 1}
    if answer_len is not None and any(p in config.probes for p in ANSWER_PROBES):
        kept.update(range(n_tokens - answer_len - 1, n_tokens - 1))
    return sorted(kept)


def _assemble(loaded, text: str, ids: torch.Tensor, config: ProbeConfig, chat_template: bool, parts: stages.Parts,
              extra_meta: dict | None) -> RunResult:
    """The RunResult of ``config`` from the parts its probes produced."""
    n_tokens = len(ids)
    done = set(config.probes)
    layer_token = (pd.concat(parts.layer_token, ignore_index=True) if parts.layer_token
                   else contract.empty_table("layer_token"))
    layer = depth.with_cosine_mean(layer_means(layer_token)) if len(layer_token) else contract.empty_table("layer")
    skip_matrix = parts.skip_matrix if "skip" in done else None
    skip_output = parts.skip_output if "skip" in done else None
    if skip_matrix is not None:
        extra = _skip_curves(skip_matrix, skip_output)
        layer = pd.concat([layer, extra], ignore_index=True)
    ed = depth.ed_table(layer, skip_matrix)

    tokens = pd.DataFrame({"pos": range(n_tokens), "token_id": ids.numpy(),
                           "token": token_strings(loaded.tokenizer, ids.tolist())})
    tables = {
        "tokens": tokens, "layer_token": layer_token, "layer": layer,
        "skip": skip_matrix if skip_matrix is not None else contract.empty_table("skip"),
        "skip_output": skip_output if skip_output is not None else contract.empty_table("skip_output"),
        "lens_topk": parts.lens_top if parts.lens_top is not None else contract.empty_table("lens_topk"),
        "ed": ed, "erasure": parts.erasure if "erasure" in done else None,
        "igrad": parts.igrad if "igrad" in done else None,
    }
    timings = {k: v for k, v in parts.timings.items() if k == "forward" or k in done}
    spec = loaded.spec
    meta = {
        "run_id": run_key(spec.fingerprint, text, loaded.dtype, config, chat_template),
        "model_name": spec.name, "model_fingerprint": spec.fingerprint, "model_kind": spec.kind,
        "architecture": loaded.family, "n_layers": loaded.n_layers, "d_model": loaded.d_model,
        "vocab_size": loaded.vocab_size, "dtype": loaded.dtype,
        "tokenizer": getattr(loaded.tokenizer, "name_or_path", "") or spec.name,
        "add_bos": bool(loaded.add_bos), "bos_token": loaded.bos_token,
        "first_token_is_bos": bool(loaded.tokenizer.bos_token_id is not None
                                   and int(ids[0]) == loaded.tokenizer.bos_token_id),
        "chat_template": chat_template, "prompt_text": text, "prompt_hash": prompt_hash(text),
        "n_tokens": n_tokens, "probes": list(config.probes), "probe_config": config.as_dict(),
        "splits_used": parts.splits_used if "skip" in done else [],
        "code_version": f"{effdepth.__version__}+p{effdepth.PROBE_VERSION}",
        "timings": timings, "total_seconds": sum(timings.values()),
        "device": str(next(loaded.model.parameters()).device),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "dataset": None, "item_index": None, "notes": list(parts.notes), "checks": parts.checks,
    }
    if "shortcut_lens" in done and parts.shortcut_fit is not None:
        meta["shortcut_fit"] = parts.shortcut_fit
    if parts.measured is not None:  # measured positions: the per-position probes read these only
        meta["measured"] = list(parts.measured)
    meta.update(extra_meta or {})
    return RunResult(meta=meta, tables=tables)


def default_answer(text: str) -> str:
    """The last word of ``text`` (the answer span used when none is given)."""
    words = (text or "").split()
    return words[-1] if words else ""


def answer_span(given: str | None, item_answer: str | None, text: str) -> str:
    """The erasure / IG answer span, the same in the CLI, the app and the API: the one given, else a
    benchmark item's gold answer, else the text's last word."""
    if given and given.strip():
        return given
    return item_answer if item_answer else default_answer(text)


def check_answer(text: str, answer: str | None, chat_template: bool = False) -> str:
    """The stripped answer span if erasure / IG can measure it on ``text`` (PromptError otherwise).

    Needs no model: callers check it before loading one, so a wrong ``--answer`` fails at once."""
    answer = answer or ""
    if not answer.strip():
        raise PromptError("Residual erasure and integrated gradients measure the answer span at the end of "
                          "the prompt: give the answer text (a benchmark item brings its gold answer).")
    if chat_template:
        raise PromptError("Erasure and IG measure the answer at the very end of the prompt; with the chat "
                          "template the generation prompt follows it. Switch the chat template off.")
    answer = answer.strip()
    if not (text or "").rstrip().endswith(answer):
        raise PromptError(f"The answer {answer[:40]!r} is not the end of the prompt; erasure and IG need "
                          "the prompt to end with its (teacher-forced) answer.")
    return answer


def answer_length(loaded, text: str, answer: str | None, chat_template: bool,
                  ids: torch.Tensor | None = None) -> int:
    """Number of tokens of ``answer`` at the end of ``text`` as the model sees it.

    A token counts as an answer token when its characters end after the answer starts (a token that
    straddles the boundary, e.g. " Yoko" for the answer "Yoko Ono", belongs to the answer). Whitespace
    around the answer and at the end of the text does not matter. Needs a fast tokenizer (character offsets).
    """
    answer, body = check_answer(text, answer, chat_template), text.rstrip()
    start = len(body) - len(answer)
    try:
        enc = loaded.tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
    except (NotImplementedError, ValueError, TypeError) as err:
        raise PromptError(f"{loaded.spec.name}'s tokenizer gives no character offsets, so the answer span "
                          f"cannot be located ({err}).") from err
    offsets = enc["offset_mapping"]
    if ids is not None and len(offsets) != len(ids):
        raise PromptError("The tokenizer's offsets do not match the tokens; the answer span cannot be located.")
    n_answer = sum(1 for first, last in offsets if last > start and last > first)
    if not 1 <= n_answer <= len(offsets) - 1:
        raise PromptError(f"The answer covers {n_answer} of {len(offsets)} tokens; it must cover at least "
                          "one token and leave at least one before it.")
    return n_answer


def _skip_curves(matrix: pd.DataFrame, output: pd.DataFrame) -> pd.DataFrame:
    """Per skipped layer: the layer effect e(s) (future, reduced) and output change O(s)."""
    rows = []
    fut = depth.future_matrix(matrix, "future")
    if fut is not None:
        rows += [{"metric": "skip_layer_effect", "layer": s, "value": float(v)}
                 for s, v in enumerate(depth.layer_effect(fut))]
    for variant, metric in (("future", "skip_output"), ("current", "skip_output_current")):
        sel = contract.reduced_rows(output, variant)
        rows += [{"metric": metric, "layer": int(r.skipped), "value": float(r.value)}
                 for r in sel.itertuples()]
    return pd.DataFrame(rows, columns=["metric", "layer", "value"])
