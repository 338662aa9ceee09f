"""What a view asks for: the prompt or benchmark item, its answer span, the probe config, and the
run keys it may be stored under (no model is loaded to find them).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from effdepth import engine
from effdepth.app.state import ViewState
from effdepth.errors import PromptError


def check_prompt(text: str | None) -> str:
    """The prompt as it will be analysed; raises PromptError for an empty one (before any model work)."""
    if text is None or not str(text).strip():
        raise PromptError("The prompt is empty. Type some text or pick one of the examples.")
    return engine.check_text(str(text))


def config_for(n_tokens: int | None = None, positions: str = "all") -> engine.ProbeConfig:
    """The app's probe configuration at the view's measured positions. Prompts under 13 tokens need
    nothing special: the engine then runs the current-effect skip variants only and notes it."""
    return engine.ProbeConfig(positions=positions)


def candidate_configs(positions: str = "all") -> list[engine.ProbeConfig]:
    """The configs a prompt's run may be stored under, best first: the app's, then what a stopped run of
    it keeps (the probes that had finished, in order)."""
    full = config_for(positions=positions)
    kept = [dataclasses.replace(full, probes=full.probes[:n]) for n in range(len(full.probes) - 1, 0, -1)]
    return [full, *kept]


def missing_probes(result) -> list[str]:
    """The app's default probes a (kept, partial) run lacks: [] for a complete run."""
    have = set(result.meta.get("probes") or [])
    return [p for p in config_for().probes if p not in have] if have < set(config_for().probes) else []


def item_spec(dataset: str, index: int) -> str:
    return f"{dataset}:{int(index)}"


def load_item(spec: str | None):
    """The benchmark item of a "dataset:index" string (PromptError naming the problem if bad)."""
    from effdepth import datasets

    if not spec or ":" not in spec:
        raise PromptError(f"A benchmark item is written DATASET:INDEX (e.g. gsm8k:0), not {spec!r}.")
    name, _, index = spec.partition(":")
    try:
        number = int(index)
    except ValueError:
        raise PromptError(f"A benchmark item is written DATASET:INDEX (e.g. gsm8k:0), not {spec!r}.") from None
    return datasets.get_item(name.strip(), number)


def item_size(dataset: str) -> int:
    from effdepth import datasets

    return next(info.size for info in datasets.list_datasets() if info.name == dataset)


def current_item(view: ViewState):
    """The view's benchmark item if the prompt still is that item's text, else None."""
    if not view.item:
        return None
    try:
        item = load_item(view.item)
    except Exception:  # noqa: BLE001 - a stale or bad item in the URL is simply not an item
        return None
    return item if item.text == view.prompt else None


def answer_for(view: ViewState) -> str:
    """The erasure / IG answer span: the view's own, else the item's gold answer, else the last word."""
    item = current_item(view) if not (view.answer and view.answer.strip()) else None
    return engine.answer_span(view.answer, item.answer if item is not None else None, view.prompt or "")


def attribution_config(answer: str, ig_steps: int, probes: Sequence[str] = ("erasure", "igrad"),
                       ig_parts: Sequence[str] = ("layer",)) -> engine.ProbeConfig:
    """The config of an erasure / IG run (a run of its own: these probes are slow and opt-in)."""
    return engine.ProbeConfig(probes=tuple(probes), answer=answer, ig_steps=int(ig_steps),
                              ig_parts=tuple(ig_parts))


def resolve(name: str):
    from effdepth import models

    return models.resolve_model(name)


def preflight(name: str):
    """Resolve a model and, when its config is local and cheap to read, check its architecture — so an
    unsupported model is reported before anyone clicks "Run". Embedded models are known to be supported
    (reading their config could trigger an install)."""
    spec = resolve(name)
    if spec.kind != "embedded":
        from effdepth.arch import check_supported

        check_supported(spec.config)
    return spec


def run_keys(name: str, text: str, dtype: str, chat: bool, positions: str = "all") -> list[str]:
    """The run ids this input may be stored under (default config first) — no model is loaded."""
    spec = resolve(name)
    return [engine.run_key(spec.fingerprint, text, dtype, config, chat) for config in candidate_configs(positions)]
