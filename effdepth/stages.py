"""The stages of a run: what each probe computes into the run's parts, taken from an earlier run where one
matches (``reusable`` / ``take_probe``), at the measured positions (``measured`` / ``at_positions``).

``engine.run_probes`` drives them in the order of ``contract.PROBES``; a new probe is one stage here plus
its entry in ``STAGES`` and ``PROBE_OPTIONS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

import effdepth
from effdepth.capture import CleanPass
from effdepth.contract import Progress, RunResult
from effdepth.errors import PromptError
from effdepth.probes import cosine, erasure, igrad, logit_lens, shortcut_lens, skip

if TYPE_CHECKING:  # the config type only (the engine imports this module)
    from effdepth.engine import ProbeConfig

ERASURE_BASELINE_ITEMS = 10  # P2: the mean residual over all positions of the first 10 GSM8K prompts


@dataclass
class Parts:
    """What the probes of one run have produced so far (the assembly reads it, also after a stop)."""

    checks: dict
    timings: dict[str, float] = field(default_factory=dict)
    finished: list[str] = field(default_factory=list)  # probes done, in order
    layer_token: list[pd.DataFrame] = field(default_factory=list)
    lens_top: pd.DataFrame | None = None
    skip_matrix: pd.DataFrame | None = None
    skip_output: pd.DataFrame | None = None
    splits_used: list[int] = field(default_factory=list)
    erasure: pd.DataFrame | None = None
    igrad: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)
    shortcut_fit: dict | None = None  # the shortcut lens's fit report (recipe, tokens, held-out KL)
    measured: list[int] | None = None  # the measured positions (None: all)
    derived_dir: object = None  # where per-model fits are kept (None: the project's cache folder)
    #: hears a probe's results so far while it runs (the skip matrix as its layers fill); set by the engine
    on_partial: Callable[[str, object], None] | None = None


#: per probe, the keys of ``ProbeConfig.as_dict()`` its numbers depend on (a reused probe must match them)
PROBE_OPTIONS = {"cosine": ("positions",), "logit_lens": ("positions",), "shortcut_lens": ("positions", "shortcut_fit"),
                 "skip": ("splits", "seed", "skip_variants", "positions", "skip_positions"),
                 "erasure": ("answer", "erasure_baseline", "positions"),
                 "igrad": ("answer", "ig_steps", "ig_parts", "ig_baseline", "positions", "ig_positions")}

#: the probes that replay layers on edited residuals (they need the pass's replay window)
REPLAY_PROBES = ("skip", "erasure", "igrad")


@dataclass(frozen=True)
class PassPlan:
    """What the clean pass of a run keeps: the activations' rows (None: every position) and the replay
    window [start, stop) (None: no probe replays)."""

    rows: list[int] | None
    window: tuple[int, int] | None


def plan_pass(probes, measured: list[int] | None, n_tokens: int, answer_len: int | None) -> PassPlan:
    """The rows and replay window of a run's clean pass for the probes it computes.

    Every probe reads the measured positions only, and an edit at positions >= t never changes positions
    < t: the skip probe replays from the first measured position to the last, erasure and IG from there (or
    from the first answer-predicting position, if earlier) to the end. Nothing before the window is
    replayed or kept, so a long text costs its clean forward and little more."""
    replays = [p for p in probes if p in REPLAY_PROBES]
    if measured is None:
        return PassPlan(None, (0, n_tokens) if replays else None)
    if not replays:
        return PassPlan(list(measured), None)
    start, stop = min(measured), max(measured) + 1
    if answer_len is not None and any(p in ("erasure", "igrad") for p in replays):
        start, stop = min(start, n_tokens - answer_len - 1), n_tokens
    return PassPlan(list(measured), (start, stop))


def reusable(reuse: RunResult | None, config: ProbeConfig, loaded, text: str, chat_template: bool) -> set[str]:
    """The probes of ``config`` that ``reuse`` holds for this very model, text, dtype and code, with the same
    options."""
    return set() if reuse is None else reusable_from_meta(reuse.meta, config, loaded, text, chat_template)


def reusable_from_meta(meta: dict, config: ProbeConfig, loaded, text: str, chat_template: bool) -> set[str]:
    """``reusable`` judged from a stored run's meta alone (before its tables are read)."""
    same_run = (meta.get("model_fingerprint") == loaded.spec.fingerprint and meta.get("dtype") == loaded.dtype
                and meta.get("prompt_text") == text and bool(meta.get("chat_template")) == bool(chat_template)
                and meta.get("code_version") == f"{effdepth.__version__}+p{effdepth.PROBE_VERSION}")
    if not same_run:
        return set()
    theirs, ours = meta.get("probe_config") or {}, config.as_dict()
    return {p for p in config.probes if p in (meta.get("probes") or [])
            and all(theirs.get(k) == ours.get(k) for k in PROBE_OPTIONS[p])}


def take_probe(probe: str, reuse: RunResult, parts: Parts) -> None:
    """Copy one probe's tables from an earlier run into ``parts``."""
    tables = reuse.tables
    if probe in ("cosine", "logit_lens", "shortcut_lens"):
        metrics = {"cosine": cosine.METRICS, "logit_lens": logit_lens.METRICS,
                   "shortcut_lens": shortcut_lens.METRICS}[probe]
        layer_token = tables["layer_token"]
        parts.layer_token.append(layer_token[layer_token["metric"].isin(metrics)].reset_index(drop=True))
        if probe == "logit_lens":
            parts.lens_top = tables["lens_topk"]
        if probe == "shortcut_lens":
            parts.shortcut_fit = reuse.meta.get("shortcut_fit")
    elif probe == "skip":
        parts.skip_matrix, parts.skip_output = tables["skip"], tables["skip_output"]
        parts.splits_used = list(reuse.meta.get("splits_used") or [])
        parts.notes += [n for n in reuse.meta.get("notes") or [] if "future-effect skip needs" in n]
    else:
        setattr(parts, probe, tables[probe])


def measured(clean: CleanPass, parts: Parts):
    """The clean trace at the measured positions (the whole trace when every position is measured)."""
    return clean.trace if parts.measured is None else clean.trace.at(parts.measured)


def at_positions(frame: pd.DataFrame, measured: list[int] | None) -> pd.DataFrame:
    """A probe's frame of a trace read at the measured positions, with its ``pos`` back on the text."""
    if measured is None:
        return frame
    frame = frame.copy()
    frame["pos"] = np.asarray(measured, dtype=np.int64)[frame["pos"].to_numpy()]
    return frame


def _stage_cosine(loaded, clean: CleanPass, config: ProbeConfig, answer_len, notify: Progress,
                  parts: Parts) -> None:
    notify("contribution norms and cosines", None)
    parts.layer_token.append(at_positions(cosine.contributions(measured(clean, parts)), parts.measured))


def _stage_logit_lens(loaded, clean: CleanPass, config: ProbeConfig, answer_len, notify: Progress,
                      parts: Parts) -> None:
    notify("logit lens", None)
    lens_frame, lens_top = logit_lens.logit_lens(measured(clean, parts), clean.taps, loaded.tokenizer,
                                                 progress=notify)
    parts.layer_token.append(at_positions(lens_frame, parts.measured))
    parts.lens_top = at_positions(lens_top, parts.measured)


def _stage_shortcut_lens(loaded, clean: CleanPass, config: ProbeConfig, answer_len, notify: Progress,
                         parts: Parts) -> None:
    from effdepth.linear import lens

    fitted = lens.shortcut_lens(loaded, derived(parts) / "lenses", progress=notify)  # says so when it fits
    notify(shortcut_lens.STAGE, None)
    frame = shortcut_lens.shortcut_lens(measured(clean, parts), clean.taps, fitted.transform, progress=notify)
    parts.layer_token.append(at_positions(frame, parts.measured))
    parts.shortcut_fit = {k: fitted.meta.get(k) for k in ("recipe", "n_fit_tokens", "n_held_tokens", "held_out_kl")}


def _stage_skip(loaded, clean: CleanPass, config: ProbeConfig, answer_len, notify: Progress,
                parts: Parts) -> None:
    notify("layer skipping", 0.0)
    n_tokens = clean.trace.text_length
    if parts.measured is not None:
        parts.notes.append("Layer skipping reads the measured positions: the layer is skipped from the first of "
                           "them on (not from position 1), R and the output change are maxima over them, and "
                           "the drawn split points fall between the first and the last of them. Only that "
                           "window is replayed, against the clean keys / values of the text before it.")
    variants = config.skip_variants
    if not config.splits and not skip.draw_splits(n_tokens, config.seed, measured=parts.measured):
        # Too short for a split 8 <= t < T-4 (in the window): run the variants that need none, and say so.
        variants = tuple(v for v in variants if v.endswith("current"))
        ran = "only the current-effect variants ran" if variants else "no skip variant ran"
        if parts.measured is None:
            why = f"The prompt has {n_tokens} tokens; the future-effect skip needs a split point 8 ≤ t < T−4"
            need = "at least 13 tokens"
        else:
            why = (f"The measured positions span {parts.measured[-1] - parts.measured[0] + 1} positions; the "
                   "future-effect skip needs a split point A+8 ≤ t < B−3 inside A … B")
            need = "at least 13 positions"
        parts.notes.append(f"{why} ({need}), so {ran}.")
    if variants:
        try:
            result = skip.skip_effects(clean.replayer(), config.splits, variants, config.seed,
                                       progress=lambda stage, frac: notify(stage, frac), measured=parts.measured,
                                       on_partial=parts.on_partial and (lambda part: parts.on_partial("skip", part)))
        except ValueError as err:
            raise PromptError(str(err)) from err
        parts.skip_matrix, parts.skip_output, parts.splits_used = result.matrix, result.output, result.splits


def _stage_erasure(loaded, clean: CleanPass, config: ProbeConfig, answer_len, notify: Progress,
                   parts: Parts) -> None:
    notify("residual erasure: baseline", None)
    baseline = erasure_baseline(loaded, derived(parts))
    parts.erasure = erasure.residual_erasure(clean.replayer(), baseline, answer_len, positions=parts.measured,
                                             progress=lambda stage, frac: notify(stage, frac))


def _stage_igrad(loaded, clean: CleanPass, config: ProbeConfig, answer_len, notify: Progress,
                 parts: Parts) -> None:
    notify("integrated gradients", 0.0)
    if parts.measured is not None:
        parts.notes.append("Integrated gradients read the measured positions: the activation is interpolated from "
                           "the first of them to the end (earlier positions stay clean), against the token mean "
                           "of the whole text.")
    parts.igrad = igrad.integrated_gradients(clean.replayer(), answer_len, parts=config.ig_parts,
                                             n_steps=config.ig_steps, positions=parts.measured,
                                             progress=lambda stage, frac: notify(stage, frac))


#: probe -> the stage that computes it into the run's parts (in the order of contract.PROBES)
STAGES = {"cosine": _stage_cosine, "logit_lens": _stage_logit_lens, "shortcut_lens": _stage_shortcut_lens,
          "skip": _stage_skip, "erasure": _stage_erasure, "igrad": _stage_igrad}


_BASELINES: dict[tuple[str, str], torch.Tensor] = {}


def derived(parts: Parts):
    """The folder of the run's per-model fits: beside the result cache, else the project's cache folder."""
    from effdepth import models

    return Path(parts.derived_dir) if parts.derived_dir is not None else models.cache_dir()


def erasure_baseline(loaded, directory=None) -> torch.Tensor:
    """P2's erasure baseline for this model: mean h_k over all positions of the first 10 GSM8K
    prompts, fp32 [L+1, d]; kept in memory and in ``<directory>/baselines/`` (safetensors) per weights
    (``directory`` None: the project's cache folder)."""
    from safetensors.torch import load_file, save_file

    from effdepth import datasets, models

    key = (loaded.spec.fingerprint, loaded.dtype)
    if key in _BASELINES:
        return _BASELINES[key]
    folder = Path(directory) if directory is not None else models.cache_dir()
    path = folder / "baselines" / f"{key[0]}-{key[1]}.safetensors"
    expected = (loaded.n_layers + 1, loaded.d_model)
    if path.exists():
        try:
            value = load_file(str(path))["baseline"]
            if tuple(value.shape) == expected:
                _BASELINES[key] = value
                return value
        except Exception:  # noqa: BLE001 - a broken file is recomputed
            pass
    texts = [item.text for item in datasets.items("gsm8k", n=ERASURE_BASELINE_ITEMS)]
    # Prompts longer than the model's context are cut to it (only tiny test models have such contexts).
    prompts = [loaded.tokenizer(t, add_special_tokens=True)["input_ids"][: loaded.max_context] for t in texts]
    value = erasure.erasure_baseline(loaded.model, prompts).contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({"baseline": value}, str(tmp))
    tmp.replace(path)
    _BASELINES[key] = value
    return value
