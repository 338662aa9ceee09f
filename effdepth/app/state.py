"""A page's view state and its URL: every value a link can carry is parsed, bounded and written back."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields

from effdepth import charts, positions
from effdepth.app.options import (
    CONTRIB_FAMILIES,
    DEFAULT_PROMPT,
    DEMO_PAIR,
    DTYPES,
    GENERATE_CHOICES,
    IG_STEP_CHOICES,
    LENS_METRICS,
    LENS_VIEWS,
    SEGMENT_CHOICES,
    SKIP_VARIANTS,
    SUBLAYERS,
    default_model,
)
from effdepth.contract import DEFAULT_IG_STEPS
from effdepth.errors import PromptError


@dataclass
class ViewState:
    """Everything a view shows; serialised into the URL so a copied link reopens the same view."""

    model: str = ""
    prompt: str = DEFAULT_PROMPT
    dtype: str = "float32"
    chat: bool = False
    run: str | None = None  # a run id (wins over model/prompt/dtype when cached)
    contrib: str = "cosine"
    part: str = "layer"
    lens: str = "kl"
    lens_view: str = "logit"  # Explore's lens: "logit" | "shortcut" (the linear shortcut lens) | "both"
    variant: str = "future"
    pos: int | None = None
    model_b: str = ""
    dtype_b: str = "float32"
    run_b: str | None = None
    cmp_metric: str = "cos_layer"
    demo: bool = False
    answer: str | None = None  # erasure / IG answer span (None: the item's gold answer or the last word)
    ig_steps: int = DEFAULT_IG_STEPS  # the CLI's and the API's too (effdepth.contract)
    attr: str = "erasure"  # which attribution heatmap Explore shows: erasure | ig_layer | ig_attn | ig_mlp
    # Difficulty page and Compare's benchmark-items mode (effdepth/difficulty.py)
    cmp_mode: str = "prompt"  # Compare: "prompt" (one prompt) | "items" (benchmark items)
    dataset: str = ""  # Compare items: the dataset ("" = the first one both models share)
    agg: str = "token"  # aggregation over items: "token" (P1) | "prompt" (P2)
    ed_probe: str = "cosine"  # Difficulty: the probe of the per-item ED distribution
    ed_rule: str = "p1"  # the ED rule a view headlines (Explore's summary, Difficulty's per-item ED)
    item: str | None = None  # "dataset:index": the benchmark item the prompt is (Explore) / selected (Difficulty)
    generate: int = 0  # Explore: let the model continue the prompt by this many tokens first (0: no)
    positions: str = "all"  # Explore: the measured positions (effdepth.positions)
    sample_seed: int = 0  # the continuation: 0 greedy, else sampled with this seed (at ``temperature``)
    temperature: float = 1.0
    slides: str = ""  # a talk: "kind:ref,kind:ref,…" (effdepth.app.talk)
    slide: int = 0  # Present: the slide shown
    seg: int = 256  # Explore on a long trace: positions per segment of the ED along the trace
    win: int = -1  # Explore on a long trace: the first position the heatmaps draw (-1: the last window)

    def __post_init__(self) -> None:
        if not self.model:
            self.model = default_model()
        if not self.model_b:
            self.model_b = self.model


_CHOICES = {"dtype": DTYPES, "dtype_b": DTYPES, "contrib": tuple(CONTRIB_FAMILIES), "part": tuple(SUBLAYERS),
            "lens": tuple(LENS_METRICS), "lens_view": tuple(LENS_VIEWS), "variant": tuple(SKIP_VARIANTS),
            "cmp_metric": tuple(charts.METRICS),
            "cmp_mode": ("prompt", "items"), "agg": ("token", "prompt"),
            "ed_probe": ("cosine", "kl", "overlap", "shortcut_kl", "shortcut_overlap"),
            "ed_rule": ("p1", "guarded")}


_BOOLS = {"chat", "demo"}


#: numeric URL values, bounded on the server to what the widgets offer (a URL can start work: bound it)
_NUMBERS: dict[str, Callable[[int], int]] = {
    "pos": lambda v: min(max(0, v), positions.MAX_POSITION),  # clamped to the run's T when drawn
    "ig_steps": lambda v: min(IG_STEP_CHOICES, key=lambda choice: (abs(choice - v), choice)),
    "generate": lambda v: min(GENERATE_CHOICES, key=lambda choice: (abs(choice - v), choice)),
    "sample_seed": lambda v: min(max(0, v), 2**31 - 1),
    "slide": lambda v: min(max(0, v), 39),  # talk.MAX_SLIDES - 1
    "seg": lambda v: min(SEGMENT_CHOICES, key=lambda choice: (abs(choice - v), choice)),
    "win": lambda v: min(max(-1, v), positions.MAX_POSITION),  # clamped to the run's span when drawn
}

#: real-valued URL values, bounded likewise
_REALS: dict[str, Callable[[float], float]] = {"temperature": lambda v: min(max(0.1, v), 2.0)}


_TRUE = {"1", "true", "yes", "on"}


def _first(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return str(value[-1]) if value else None
    return str(value)


def demo_locked() -> bool:
    """Whether this server runs in demo mode for every visitor (``EFFDEPTH_DEMO=1``, ``make run DEMO=1``): no URL
    or widget lifts it, so a talk's or a lab's server never loads a model, starts work or deletes a run."""
    import os

    return os.environ.get("EFFDEPTH_DEMO", "").strip().lower() in _TRUE


def public_model_name(name: str) -> str:
    """A model's name as a visitor of a demo server may see it: an embedded name as is, a path or hub id as
    "a local model" (the server's folders are not the visitor's business)."""
    from effdepth.models import EMBEDDED

    return name if name in EMBEDDED else "a local model"


def state_from_query(query: Mapping[str, object]) -> ViewState:
    """Parse URL query parameters; unknown or invalid values fall back to defaults (never raise). On a server
    locked in demo mode (``demo_locked``) the view is in demo mode whatever the URL says."""
    values: dict[str, object] = {}
    for f in fields(ViewState):
        raw = _first(query.get(f.name))
        value = _SKIP if raw is None else _parse(f.name, raw)
        if value is not _SKIP:
            values[f.name] = value
    if "model" in values and "model_b" not in values:
        values["model_b"] = values["model"]
    if demo_locked():
        values["demo"] = True
    return ViewState(**values)


_SKIP = object()  # a URL value that is not valid for its field: the default stays


def _parse(name: str, raw: str) -> object:
    """One URL value for the field ``name``, bounded to what the widgets offer (``_SKIP`` when invalid)."""
    if name in _BOOLS:
        return raw.strip().lower() in _TRUE
    if name in _NUMBERS:
        try:
            return _NUMBERS[name](int(raw))
        except (ValueError, OverflowError):
            return _SKIP
    if name in _REALS:
        try:
            value = float(raw)
        except ValueError:
            return _SKIP
        return _REALS[name](value) if math.isfinite(value) else _SKIP
    if name in _CHOICES:
        return raw if raw in _CHOICES[name] else _SKIP
    if name in ("run", "run_b", "item", "answer"):
        return raw.strip() or None
    if name == "prompt" and len(raw) > MAX_URL_PROMPT_CHARS:
        return _SKIP
    if name in _TEXT_PARSERS:
        return _TEXT_PARSERS[name](raw)
    return raw


def _positions_value(raw: str) -> object:
    try:
        return positions.check(raw)
    except PromptError:
        return _SKIP


def _slides_value(raw: str) -> str:
    """A talk's slides, malformed ones left out (a URL's text bounded before it is read)."""
    from effdepth.app.talk import format_slides, parse_slides

    return format_slides(parse_slides(raw[:4000]))


#: URL text values read by their own parser (bounded and checked)
_TEXT_PARSERS: dict[str, Callable[[str], object]] = {"positions": _positions_value, "slides": _slides_value}


#: a prompt longer than this is not written into the URL (a link carries the run id instead), and one read
#: from a URL may be at most ``MAX_URL_PROMPT_CHARS`` long (what a link can carry)
URL_PROMPT_CHARS = 8_000
MAX_URL_PROMPT_CHARS = 100_000


def state_to_query(state: ViewState) -> dict[str, str]:
    """The URL query of a view: model, prompt, dtype always (a long trace's prompt: only while no run names
    it, and only up to ``URL_PROMPT_CHARS``); the rest only when not the default."""
    default = ViewState(model=state.model)
    query: dict[str, str] = {"model": state.model, "prompt": state.prompt, "dtype": state.dtype}
    if len(state.prompt) > URL_PROMPT_CHARS:
        del query["prompt"]  # the run id reopens it
    for f in fields(ViewState):
        name = f.name
        if name in ("model", "prompt", "dtype"):
            continue
        value = getattr(state, name)
        if value == getattr(default, name) or value is None:
            continue
        query[name] = ("1" if value else "0") if isinstance(value, bool) else str(value)
    return query


def query_for_run(meta: Mapping, demo: bool = False, **extra) -> dict[str, str]:
    """URL query that reopens a stored run in Explore."""
    state = ViewState(model=str(meta.get("model_name") or ""), prompt=str(meta.get("prompt_text") or ""),
                      dtype=str(meta.get("dtype") or "float32"), chat=bool(meta.get("chat_template")),
                      run=str(meta.get("run_id")), demo=demo)
    for key, value in extra.items():
        setattr(state, key, value)
    return state_to_query(state)


def query_for_pair(meta_a: Mapping, meta_b: Mapping, demo: bool = False) -> dict[str, str]:
    """URL query that opens two stored runs in Compare."""
    state = ViewState(model=str(meta_a.get("model_name") or ""), prompt=str(meta_a.get("prompt_text") or ""),
                      dtype=str(meta_a.get("dtype") or "float32"), chat=bool(meta_a.get("chat_template")),
                      run=str(meta_a.get("run_id")), model_b=str(meta_b.get("model_name") or ""),
                      dtype_b=str(meta_b.get("dtype") or "float32"), run_b=str(meta_b.get("run_id")), demo=demo)
    return state_to_query(state)


def adopt_meta(state: ViewState, meta: Mapping, which: str = "a") -> None:
    """Make the state describe a stored run (opened by its id): model, prompt, dtype, chat template."""
    if which == "a":
        state.model = str(meta.get("model_name") or state.model)
        state.dtype = str(meta.get("dtype") or state.dtype)
        state.run = str(meta.get("run_id"))
        state.prompt = str(meta.get("prompt_text") if meta.get("prompt_text") is not None else state.prompt)
        state.chat = bool(meta.get("chat_template"))
        _adopt_continuation(state, meta)
    else:
        state.model_b = str(meta.get("model_name") or state.model_b)
        state.dtype_b = str(meta.get("dtype") or state.dtype_b)
        state.run_b = str(meta.get("run_id"))


def _adopt_continuation(state: ViewState, meta: Mapping) -> None:
    """A run of prompt + the model's own continuation opens as that prompt with "let it continue" set, where
    the page can ask for it again (greedy, no chat template, a length the control offers)."""
    generation = meta.get("generation") or {}
    settings = generation.get("settings") or {}
    text, prompt = generation.get("text"), state.prompt
    if (not generation or settings.get("chat_template") or generation.get("written_by")
            or settings.get("max_new_tokens") not in GENERATE_CHOICES or not text or not prompt.endswith(text)
            or (settings.get("sample") and not int(settings.get("seed") or 0) >= 1)):  # seed 0 reads as greedy
        return
    state.prompt, state.generate = prompt[: -len(text)], int(settings["max_new_tokens"])
    if settings.get("sample"):
        state.sample_seed, state.temperature = int(settings["seed"]), float(settings["temperature"])


def clamp_position(pos: int | None, n_tokens: int) -> int:
    """The selected token position, defaulting to the last one (the position that predicts next)."""
    if pos is None or n_tokens <= 0:
        return max(0, n_tokens - 1)
    return min(max(0, int(pos)), n_tokens - 1)


def compare_models(view: ViewState, query: Mapping[str, object]) -> None:
    """Compare opens on two different models. When model B merely follows A (no ``model_b`` / ``run_b`` in
    the URL, B = A), B becomes A's partner in the demo pair, and a view still on the default model (no
    ``model`` / ``run`` in the URL) opens on the demo pair itself."""
    if any(query.get(key) for key in ("model_b", "run_b")) or view.model_b != view.model:
        return
    if view.model == default_model() and not any(query.get(key) for key in ("model", "run")):
        view.model, view.model_b = DEMO_PAIR
        view.run = view.run_b = None
    else:
        view.model_b = next(name for name in DEMO_PAIR if name != view.model)
        view.run_b = None
