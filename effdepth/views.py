"""The app's logic that is not Streamlit: view state <-> URL, option lists, summaries, compute
orchestration with progress, the one-model holder, exports. Pages stay thin; this is testable alone.

Nothing here imports Streamlit (see ``effdepth.ui`` for the Streamlit glue).
"""

from __future__ import annotations

import dataclasses
import io
import math
import re
import string
import tempfile
import threading
import time
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import pandas as pd

from effdepth import charts, engine
from effdepth.contract import Progress
from effdepth.errors import CacheError, PromptError
from effdepth.memo import Memo, store_stamp
from effdepth.models.holder import WAITING_STAGE, ModelHolder  # noqa: F401 - the app's one model

# --------------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------------

DTYPES = ("float32", "bfloat16")
#: probe A heatmap: family × sublayer -> metric name in the layer_token table
CONTRIB_FAMILIES = {"cosine": "cosine", "rc": "relative contribution"}
SUBLAYERS = {"att": "attention", "mlp": "MLP", "layer": "whole layer"}
LENS_METRICS = {"kl": "KL(layer ‖ final)", "overlap": "top-5 overlap", "entropy": "entropy"}
SKIP_VARIANTS = {"future": "future tokens (P2 Fig. 3)", "current": "current token",
                 "local_future": "direct path, future", "local_current": "direct path, current"}
ED_PROBES = ("cosine", "kl", "overlap", "skip")
CURVE_METRICS = ("cosine", "kl", "overlap", "skip")

#: short label -> prompt text (teacher-forced: prompt + answer; docs/SPEC.md §2).
EXAMPLES: dict[str, str] = {
    "Two-hop fact (P2)": "The spouse of the performer of Imagine is Yoko Ono",
    "Addition chain (P2)": "5 + 7 + 5 + 3 + 1 + 7 = 28",
    "Word problem (GSM8K style)": (
        "Question: Tom has 3 boxes with 4 apples in each box. He eats 2 of the apples. "
        "How many apples are left?\nAnswer: 3 * 4 = 12 apples. 12 - 2 = 10. The answer is 10"),
    "Factual sentence": "The Eiffel Tower is in Paris, the capital of France, and it was finished in 1889.",
}
DEFAULT_PROMPT = EXAMPLES["Two-hop fact (P2)"]


def default_model() -> str:
    from effdepth import models

    return models.DEFAULT_MODEL


def model_options() -> list[tuple[str, str]]:
    """(name, label) of the embedded models: "smollm2-135m — SmolLM2-135M-Instruct (Q4_1) · 30 layers · 98 MB"."""
    from effdepth import models

    return [(name, f"{name} — {em.display} · {em.n_layers} layers · {em.size_mb} MB")
            for name, em in models.EMBEDDED.items()]


def embedded_models_table() -> pd.DataFrame:
    from effdepth import models

    return pd.DataFrame([{"name": name, "model": em.display, "layers": em.n_layers, "d_model": em.d_model,
                          "size (MB)": em.size_mb, "architecture": em.arch}
                         for name, em in models.EMBEDDED.items()])


def md(text) -> str:
    """``text`` for a Streamlit markdown slot, shown as typed: never a link, an image or formatting.

    Every ASCII punctuation mark is backslash-escaped (``[x](…)``, ``![i](…)``, ``**``, ``:red[…]``).
    Streamlit's markdown also turns bare ``http://…``, ``www.…`` and e-mail addresses into links *after*
    escapes are read (GFM autolink literals), so an invisible word joiner (U+2060) goes where those
    patterns start: between ``:`` and ``/``, after ``www`` before ``.``, before ``@``.
    """
    text = _MD_AUTOLINK_WWW.sub("\\1" + _WORD_JOINER, str(text))
    text = text.replace(":/", ":" + _WORD_JOINER + "/").replace("@", _WORD_JOINER + "@")
    return "".join("\\" + ch if ch in _MD_PUNCTUATION else ch for ch in text)


_MD_PUNCTUATION = frozenset(string.punctuation)
_MD_AUTOLINK_WWW = re.compile(r"(www)(?=\.)", re.IGNORECASE)
_WORD_JOINER = "\u2060"


def contrib_metric(family: str, part: str) -> str:
    return ("cos_" if family == "cosine" else "rc_") + part


# --------------------------------------------------------------------------------------------------
# View state <-> URL
# --------------------------------------------------------------------------------------------------


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
    variant: str = "future"
    pos: int | None = None
    model_b: str = ""
    dtype_b: str = "float32"
    run_b: str | None = None
    cmp_metric: str = "cos_layer"
    demo: bool = False
    answer: str | None = None  # erasure / IG answer span (None: the item's gold answer or the last word)
    ig_steps: int = 64
    attr: str = "erasure"  # which attribution heatmap Explore shows: erasure | ig_layer | ig_attn | ig_mlp
    # Difficulty page and Compare's benchmark-items mode (effdepth/difficulty.py)
    cmp_mode: str = "prompt"  # Compare: "prompt" (one prompt) | "items" (benchmark items)
    dataset: str = ""  # Compare items: the dataset ("" = the first one both models share)
    agg: str = "token"  # aggregation over items: "token" (P1) | "prompt" (P2)
    ed_probe: str = "cosine"  # Difficulty: the probe of the per-item ED distribution
    ed_rule: str = "p1"  # ... and its rule
    item: str | None = None  # "dataset:index": the benchmark item the prompt is (Explore) / selected (Difficulty)

    def __post_init__(self) -> None:
        if not self.model:
            self.model = default_model()
        if not self.model_b:
            self.model_b = self.model


_CHOICES = {"dtype": DTYPES, "dtype_b": DTYPES, "contrib": tuple(CONTRIB_FAMILIES), "part": tuple(SUBLAYERS),
            "lens": tuple(LENS_METRICS), "variant": tuple(SKIP_VARIANTS), "cmp_metric": tuple(charts.METRICS),
            "cmp_mode": ("prompt", "items"), "agg": ("token", "prompt"), "ed_probe": ("cosine", "kl", "overlap"),
            "ed_rule": ("p1", "guarded")}
_BOOLS = {"chat", "demo"}
#: numeric URL values, bounded on the server to what the widgets offer (a URL can start work: bound it)
_NUMBERS: dict[str, Callable[[int], int]] = {
    "pos": lambda v: min(max(0, v), engine.DEFAULT_MAX_TOKENS - 1),  # clamped to the run's T when drawn
    "ig_steps": lambda v: min(IG_STEP_CHOICES, key=lambda choice: (abs(choice - v), choice)),
}
_TRUE = {"1", "true", "yes", "on"}


def _first(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return str(value[-1]) if value else None
    return str(value)


def state_from_query(query: Mapping[str, object]) -> ViewState:
    """Parse URL query parameters; unknown or invalid values fall back to defaults (never raise)."""
    values: dict[str, object] = {}
    for f in fields(ViewState):
        raw = _first(query.get(f.name))
        if raw is None:
            continue
        if f.name in _BOOLS:
            values[f.name] = raw.strip().lower() in _TRUE
        elif f.name in _NUMBERS:
            try:
                values[f.name] = _NUMBERS[f.name](int(raw))
            except (ValueError, OverflowError):
                pass
        elif f.name in _CHOICES:
            if raw in _CHOICES[f.name]:
                values[f.name] = raw
        elif f.name in ("run", "run_b", "item", "answer"):
            values[f.name] = raw.strip() or None
        else:
            values[f.name] = raw
    if "model" in values and "model_b" not in values:
        values["model_b"] = values["model"]
    return ViewState(**values)


def state_to_query(state: ViewState) -> dict[str, str]:
    """The URL query of a view: model, prompt, dtype always; the rest only when not the default."""
    default = ViewState(model=state.model)
    query: dict[str, str] = {"model": state.model, "prompt": state.prompt, "dtype": state.dtype}
    for f in fields(ViewState):
        name = f.name
        if name in query:
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
    else:
        state.model_b = str(meta.get("model_name") or state.model_b)
        state.dtype_b = str(meta.get("dtype") or state.dtype_b)
        state.run_b = str(meta.get("run_id"))


# --------------------------------------------------------------------------------------------------
# Prompts and run keys
# --------------------------------------------------------------------------------------------------


def check_prompt(text: str | None) -> str:
    """The prompt as it will be analysed; raises PromptError for an empty one (before any model work)."""
    if text is None or not str(text).strip():
        raise PromptError("The prompt is empty. Type some text or pick one of the examples.")
    return engine.check_text(str(text))


def config_for(n_tokens: int | None = None) -> engine.ProbeConfig:
    """The app's probe configuration. Prompts under 13 tokens need nothing special: the engine then
    runs the current-effect skip variants only and records a note in the run's meta."""
    return engine.ProbeConfig()


def candidate_configs() -> list[engine.ProbeConfig]:
    """The configs a prompt's run may be stored under, best first: the app's, then what a stopped run of
    it keeps (the probes that had finished, in order)."""
    full = config_for()
    kept = [dataclasses.replace(full, probes=full.probes[:n]) for n in range(len(full.probes) - 1, 0, -1)]
    return [full, *kept]


def missing_probes(result) -> list[str]:
    """The app's default probes a (kept, partial) run lacks: [] for a complete run."""
    have = set(result.meta.get("probes") or [])
    return [p for p in config_for().probes if p not in have] if have < set(config_for().probes) else []


#: datasets whose items the prompt picker offers (teacher-forced prompt + gold answer, docs/SPEC.md §2)
ITEM_DATASETS = {"gsm8k": "GSM8K (test)", "aime2025": "AIME 2025"}
IG_STEP_CHOICES = (16, 32, 64, 128, 256)
ATTR_METRICS = {"erasure": "residual erasure", "ig_layer": "IG: layer output", "ig_attn": "IG: attention output",
                "ig_mlp": "IG: MLP output"}


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
    if view.answer and view.answer.strip():
        return view.answer
    item = current_item(view)
    return item.answer if item is not None else engine.default_answer(view.prompt or "")


def attribution_config(answer: str, ig_steps: int, probes: Sequence[str] = ("erasure", "igrad"),
                       ig_parts: Sequence[str] = ("layer",)) -> engine.ProbeConfig:
    """The config of an erasure / IG run (a run of its own: these probes are slow and opt-in)."""
    return engine.ProbeConfig(probes=tuple(probes), answer=answer, ig_steps=int(ig_steps),
                              ig_parts=tuple(ig_parts))


def attribution_layer_token(result) -> pd.DataFrame:
    """Erasure and IG tables as DataFrame[metric, layer, pos, value] (metric erasure / ig_<part>; erasure's
    "layer" is the depth k = 0..L) so the layer × token heatmap draws them."""
    parts = []
    erased = result.tables.get("erasure")
    if erased is not None and len(erased):
        parts.append(pd.DataFrame({"metric": "erasure", "layer": erased["depth"].astype(int),
                                   "pos": erased["pos"].astype(int), "value": erased["value"].astype(float)}))
    attributions = result.tables.get("igrad")
    if attributions is not None and len(attributions):
        parts.append(pd.DataFrame({"metric": "ig_" + attributions["part"].astype(str),
                                   "layer": attributions["layer"].astype(int),
                                   "pos": attributions["pos"].astype(int),
                                   "value": attributions["value"].astype(float)}))
    if not parts:
        return pd.DataFrame(columns=["metric", "layer", "pos", "value"])
    return pd.concat(parts, ignore_index=True)


def attribution_domain(frame: pd.DataFrame, metric: str) -> list[float] | None:
    """IG colour domain symmetric around 0 and, as in P2, computed without column 0 (position 0 is an
    attention sink whose attribution would wash out the rest); None for other metrics."""
    if not metric.startswith("ig_"):
        return None
    values = frame[(frame["metric"] == metric) & (frame["pos"] > 0)]["value"].abs()
    top = float(values.max()) if len(values) else 0.0
    return [-top, top] if top > 0 else [-1.0, 1.0]


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


def run_keys(name: str, text: str, dtype: str, chat: bool) -> list[str]:
    """The run ids this input may be stored under (default config first) — no model is loaded."""
    spec = resolve(name)
    return [engine.run_key(spec.fingerprint, text, dtype, config, chat) for config in candidate_configs()]


def open_store(path: str | Path | None = None):
    """The result store (``$EFFDEPTH_CACHE`` or the project's cache/effdepth.duckdb)."""
    from effdepth.store import Store

    return Store(path) if path is not None else Store()


def find_cached(store, name: str, text: str, dtype: str, chat: bool,
                config: engine.ProbeConfig | None = None) -> tuple[str, object | None]:
    """(run id, RunResult or None) for an input, looked up without loading the model.

    ``config``: look for a run of that probe config (e.g. an erasure / IG run) instead of the app's."""
    check_prompt(text)
    if config is not None:
        keys = [engine.run_key(resolve(name).fingerprint, text, dtype, config, chat)]
    else:
        keys = run_keys(name, text, dtype, chat)
    for key in keys:
        result = store.get(key)
        if result is not None:
            return key, result
    return keys[0], None


_RUN_MEMO = Memo(size=8)
_CHART_MEMO = Memo(size=128)


def get_run(store, run_id: str | None):
    """A stored run, memoised in-process: a run id fixes its numbers, and the cache's stamp (file and
    WAL) changes with any write or delete, so a memoised run is never stale."""
    if not run_id:
        return None
    return _RUN_MEMO.get((store_stamp(store), run_id), lambda: store.get(run_id))


def memo_chart(key: tuple, build):
    """Chart specs memoised by (run id, chart, options): reruns of a cached view rebuild nothing."""
    return _CHART_MEMO.get(key, build)


# --------------------------------------------------------------------------------------------------
# Progress and compute
# --------------------------------------------------------------------------------------------------

_STAGE_SPANS = [  # (prefix of a stage name, overall start, overall end, label)
    ("installing", 0.00, 0.05, "Loading model"),
    ("assembling", 0.00, 0.05, "Loading model"),
    ("checking sha256", 0.05, 0.08, "Loading model"),
    ("dequantising", 0.08, 0.10, "Loading model"),
    ("saving", 0.10, 0.11, "Loading model"),
    ("loading", 0.00, 0.11, "Loading model"),
    ("ready", 0.11, 0.12, "Loading model"),
    ("forward pass", 0.12, 0.14, "Forward pass"),
    ("contribution", 0.14, 0.16, "Contribution norms and cosines"),
    ("logit lens", 0.16, 0.24, "Logit lens"),
    ("layer skipping", 0.24, 0.25, "Layer skipping"),
    ("skip replay", 0.25, 0.65, "Layer skipping"),
    ("direct-path replay", 0.65, 1.00, "Layer skipping (direct path)"),
    ("residual erasure", 0.12, 0.14, "Residual erasure"),
    ("erasure ", 0.14, 0.60, "Residual erasure"),
    ("integrated gradients", 0.60, 1.00, "Integrated gradients"),
]


@dataclass
class ProgressTracker:
    """Turns the stage callbacks of load_model / run_probes into one monotone bar + a label.

    ``sink(label, fraction)`` is called on every update (a Streamlit status/progress in the app).
    """

    sink: Callable[[str, float], None] | None = None
    fraction: float = 0.0
    label: str = "Starting"
    history: list[tuple[str, float]] = field(default_factory=list)

    def __call__(self, stage: str, frac: float | None = None) -> None:
        stage = str(stage)
        low, high, title = 0.0, 0.0, stage
        for prefix, start, end, name in _STAGE_SPANS:
            if stage.lower().startswith(prefix):
                low, high, title = start, end, name
                break
        else:
            low = high = self.fraction
        overall = low + (high - low) * (frac if frac is not None and math.isfinite(frac) else 0.0)
        self.fraction = min(1.0, max(self.fraction, overall))
        self.label = title if title.lower() == stage.lower() else f"{title}: {stage}"
        self.history.append((self.label, self.fraction))
        if self.sink is not None:
            self.sink(self.label, self.fraction)


PROBE_LABELS = {"cosine": "contributions and cosines", "logit_lens": "logit lens", "skip": "layer skipping",
                "erasure": "residual erasure", "igrad": "integrated gradients"}
_STOPPED: OrderedDict = OrderedDict()  # (name, text, dtype, chat) -> what the last stopped run said
_STOPPED_GUARD = threading.Lock()


def record_stopped(name: str, text: str, dtype: str, chat: bool, stage: str, seconds: float, why: str,
                   kept: Sequence[str] | None = None) -> None:
    """Remember that a run of this input ended before it finished (shown when the input is reopened)."""
    when = time.strftime("%H:%M:%S")
    note = (f"The last run of this prompt on {name} ({dtype}) did not finish: {why} at {when}, "
            f"after {seconds:.0f} s, during “{stage}”. ")
    if kept:
        note += (f"What had finished ({', '.join(PROBE_LABELS.get(p, p) for p in kept)}) was kept and is shown; "
                 "the rest was not stored.")
    else:
        note += "Nothing of it was stored; run it again to see the results."
    with _STOPPED_GUARD:
        _STOPPED[(name, text, dtype, bool(chat))] = note
        while len(_STOPPED) > 256:
            _STOPPED.popitem(last=False)


def stopped_run(name: str, text: str, dtype: str, chat: bool) -> str | None:
    """The note of this input's last stopped run, if it has not been run to the end since."""
    with _STOPPED_GUARD:
        return _STOPPED.get((name, text, dtype, bool(chat)))


def _clear_stopped(name: str, text: str, dtype: str, chat: bool) -> None:
    with _STOPPED_GUARD:
        _STOPPED.pop((name, text, dtype, bool(chat)), None)


def compute_run(store, name: str, text: str, dtype: str, chat: bool, holder: ModelHolder,
                progress: Progress | None = None, config: engine.ProbeConfig | None = None):
    """Look up a run; on a miss take the model's turn (``holder.lease``), run the probes and store it.

    The cache is checked first with keys computed without the model, and again once the turn comes
    (another session may have computed the same input meanwhile). The store is checked for
    writability before any work, so a result is never computed only to be lost; a stopped run keeps
    the probes that had finished (``_keep_partial``).
    """
    text = check_prompt(text)
    key, cached = find_cached(store, name, text, dtype, chat, config)
    if cached is not None:
        return cached
    store.check_writable()
    notify = progress or (lambda stage, frac=None: None)
    with holder.lease(name, dtype, notify) as loaded:
        ids = engine.tokenize(loaded, text, chat)
        config = config or config_for(len(ids))
        key = engine.run_key(loaded.spec.fingerprint, text, loaded.dtype, config, chat)
        try:
            result, _ = store.get_or_compute(
                key, lambda: engine.run_probes(loaded, text, config, chat_template=chat, progress=notify))
        except BaseException as err:  # a stop (button, closed tab, Streamlit rerun): keep what finished
            _keep_partial(store, err)
            raise
    _clear_stopped(name, text, dtype, chat)
    return result


def _keep_partial(store, err: BaseException) -> None:
    """Store the finished probes of a stopped run (``err.partial_result``, a complete run of a config with
    just those probes); ``err.kept`` names them. Never raises: the stop itself must go on."""
    partial = getattr(err, "partial_result", None)
    if partial is None:
        return
    try:
        store.put(partial)
        err.kept = list(partial.meta["probes"])
    except Exception:  # noqa: BLE001 - a store that cannot take it: the run is lost, as it would be anyway
        pass


# --------------------------------------------------------------------------------------------------
# Summaries
# --------------------------------------------------------------------------------------------------


def _fmt_ed(ed, edr) -> str:
    if ed is None or (isinstance(ed, float) and math.isnan(ed)) or pd.isna(ed):
        return "none"
    return f"{int(ed)} ({float(edr):.2f})"


def ed_value(ed_table: pd.DataFrame, probe: str, rule: str = "p1") -> tuple[int | None, float | None]:
    rows = ed_table[(ed_table["probe"] == probe) & (ed_table["rule"] == rule)] if len(ed_table) else ed_table
    if not len(rows) and probe == "skip" and len(ed_table):
        rows = ed_table[ed_table["probe"] == "skip"]
    if not len(rows) or pd.isna(rows["ed"].iloc[0]):
        return None, None
    return int(rows["ed"].iloc[0]), float(rows["edr"].iloc[0])


_ED_SOURCE = {"cosine": "cosine", "kl": "logit_lens", "overlap": "logit_lens", "skip": "skip"}


def summary_items(meta: Mapping, ed_table: pd.DataFrame, from_cache: bool) -> list[tuple[str, str, str | None, str]]:
    """(label, value, delta, help) for the metric strip of a run; the delta line carries the EDR."""
    items: list[tuple[str, str, str | None, str]] = [
        ("L (layers)", str(meta.get("n_layers")), f"d_model {meta.get('d_model')}",
         f"architecture {meta.get('architecture')}"),
        ("T (tokens)", str(meta.get("n_tokens")), None,
         "tokens fed to the model (prompt and answer together, teacher-forced)"),
    ]
    ran = set(meta.get("probes") or engine.DEFAULT_PROBES)
    for probe in ED_PROBES:
        rule = "proposed" if probe == "skip" else "p1"
        ed, edr = ed_value(ed_table, probe, rule)
        label = f"ED {charts.PROBE_TITLES.get(probe, probe)}"
        if _ED_SOURCE[probe] not in ran:
            items.append((label, "not run", None, f"this run has no {PROBE_LABELS[_ED_SOURCE[probe]]} results"))
            continue
        if probe == "skip":
            help_text = "effdepth's proposed rule (the papers define none)"
        else:
            g_ed, g_edr = ed_value(ed_table, probe, "guarded")
            help_text = f"P1's rule; the guarded rule gives {_fmt_ed(g_ed, g_edr)}"
        items.append((label, "none" if ed is None else str(ed), None if ed is None else f"EDR {edr:.2f}",
                      help_text))
    bos = meta.get("bos_token")
    if meta.get("first_token_is_bos"):
        bos_value, bos_help = "BOS first", f"position 0 is the BOS token {bos!r}"
    elif meta.get("add_bos"):
        bos_value, bos_help = "adds BOS", f"the tokenizer adds {bos!r}"
    else:
        bos_value, bos_help = "no BOS", f"position 0 is a real token (the tokenizer's BOS {bos!r} is not added)"
    seconds = meta.get("total_seconds")
    took = f"{float(seconds):.1f} s" if seconds is not None else "—"
    items += [
        ("dtype", str(meta.get("dtype")), None, "weights and activations; every reduction runs in fp32"),
        ("BOS", bos_value, None, bos_help),
        ("chat template", "on" if meta.get("chat_template") else "off", None,
         "off = raw text, as in both papers"),
        ("compute", "cached" if from_cache else took, f"took {took}" if from_cache else None,
         f"computed {meta.get('created', '')} on {meta.get('device', 'cpu')}"),
    ]
    return items


def ed_comparison_table(ed_table: pd.DataFrame) -> pd.DataFrame:
    """One row per probe: ED/EDR by P1's rule and by the guarded rule, side by side, with the rules."""
    rows = []
    for probe in ED_PROBES:
        sel = ed_table[ed_table["probe"] == probe]
        if not len(sel):
            continue
        p1 = sel[sel["rule"].isin(["p1", "proposed"])]
        guarded = sel[sel["rule"] == "guarded"]
        row = {"probe": charts.PROBE_TITLES.get(probe, probe)}
        for name, part in (("P1", p1), ("guarded", guarded)):
            if len(part):
                ed = part["ed"].iloc[0]
                row[f"ED ({name})"] = None if pd.isna(ed) else int(ed)
                row[f"EDR ({name})"] = None if pd.isna(ed) else round(float(part["edr"].iloc[0]), 3)
                row[f"rule ({name})"] = str(part["description"].iloc[0])
            else:
                row[f"ED ({name})"] = None
                row[f"EDR ({name})"] = None
                row[f"rule ({name})"] = "—"
        rows.append(row)
    order = ["probe", "ED (P1)", "EDR (P1)", "ED (guarded)", "EDR (guarded)", "rule (P1)", "rule (guarded)"]
    return pd.DataFrame(rows, columns=order)


def ed_caption(ed_table: pd.DataFrame, probe: str) -> str:
    """One line naming the rule(s), threshold and result, P1 and guarded side by side."""
    sel = ed_table[ed_table["probe"] == probe]
    parts = []
    for _, row in sel.iterrows():
        name = {"p1": "P1", "guarded": "guarded", "proposed": "proposed"}.get(row["rule"], row["rule"])
        result = "no transition" if pd.isna(row["ed"]) else f"ED = {int(row['ed'])}, EDR = {float(row['edr']):.2f}"
        threshold = "" if pd.isna(row.get("threshold")) else f" (threshold {float(row['threshold']):.3g})"
        parts.append(f"**{name}**: {result} — {row['description']}{threshold}")
    return " · ".join(parts) if parts else "No ED rule applies to this probe for this run."


def compare_ed_table(runs: Iterable[tuple[str, pd.DataFrame]]) -> pd.DataFrame:
    """One row per (probe, rule); one "ED (EDR)" column per run label, e.g. "20 (0.70)"."""
    table: pd.DataFrame | None = None
    for label, ed in runs:
        part = ed[["probe", "rule"]].copy()
        part[label] = [_fmt_ed(e, r) for e, r in zip(ed["ed"], ed["edr"])]
        table = part if table is None else table.merge(part, on=["probe", "rule"], how="outer")
    if table is None:
        return pd.DataFrame()
    order = {p: k for k, p in enumerate(ED_PROBES)}
    table["_order"] = table["probe"].map(order).fillna(99)
    table = table.sort_values(["_order", "rule"], key=lambda c: c if c.name == "_order" else c.map(
        {"p1": 0, "proposed": 0, "guarded": 1})).drop(columns="_order")
    table["probe"] = table["probe"].map(lambda p: charts.PROBE_TITLES.get(p, p))
    table["rule"] = table["rule"].map({"p1": "P1", "guarded": "guarded", "proposed": "proposed"}).fillna(table["rule"])
    return table.fillna("—").reset_index(drop=True)


def grid_mismatch(result_a, result_b) -> str | None:
    """Why two runs cannot be subtracted cell by cell (None when they can)."""
    la, lb = int(result_a.meta["n_layers"]), int(result_b.meta["n_layers"])
    if la != lb:
        return f"the models differ in depth (L = {la} vs {lb})"
    ta, tb = result_a.tables["tokens"], result_b.tables["tokens"]
    if len(ta) != len(tb) or list(ta["token_id"]) != list(tb["token_id"]):
        return f"the prompts are tokenised differently ({len(ta)} vs {len(tb)} tokens or other token ids)"
    return None


def same_grid(result_a, result_b) -> bool:
    """True when two runs have the same depth L and the same tokenisation (a Δ heatmap makes sense)."""
    meta_a, meta_b = result_a.meta, result_b.meta
    if int(meta_a["n_layers"]) != int(meta_b["n_layers"]):
        return False
    ta, tb = result_a.tables["tokens"], result_b.tables["tokens"]
    return len(ta) == len(tb) and list(ta["token_id"]) == list(tb["token_id"])


def short_model_name(name) -> str:
    """A model name fit for a legend or a table cell: a local path becomes "…/<last folder>"."""
    text = str(name or "")
    if text.startswith(("/", "~", ".")) or (len(text) > 40 and "/" in text):
        return "…/" + Path(text.rstrip("/")).name
    return text


def pair_labels(meta_a: Mapping, meta_b: Mapping) -> tuple[str, str]:
    """Short distinct labels for two runs (model names; dtype or run id added when needed)."""
    a, b = short_model_name(meta_a.get("model_name")), short_model_name(meta_b.get("model_name"))
    if a == b:
        a, b = f"{a} ({meta_a.get('dtype')})", f"{b} ({meta_b.get('dtype')})"
    if a == b:
        a, b = f"A {a}", f"B {b}"
    return a, b


COMPARE_METRICS = ("cos_layer", "cos_att", "cos_mlp", "rc_layer", "rc_att", "rc_mlp", "kl", "overlap", "entropy")


def compare_metrics(result_a, result_b) -> list[str]:
    """Layer × token metrics present in both runs."""
    present = [set(r.tables["layer_token"]["metric"]) if len(r.tables["layer_token"]) else set()
               for r in (result_a, result_b)]
    return [m for m in COMPARE_METRICS if m in present[0] and m in present[1]] or ["cos_layer"]


def domain_text(metric: str, domain) -> str:
    kind = charts.METRICS.get(metric, (metric, "seq", None))[1]
    low, high = float(domain[0]), float(domain[1])
    scale = {"ratio": "log scale", "kl": "symlog scale"}.get(kind, "linear scale")
    return f"[{low:.3g}, {high:.3g}], {scale}, values outside are clamped"


def noise_caption(skip: pd.DataFrame, variant: str) -> tuple[str, str]:
    """(number, caption) of the skip probe's noise floor for one variant."""
    floor = charts.noise_floor(skip, variant)
    if floor is None:
        return "—", "No noise-floor variant was recorded for this run."
    return (f"{floor:.2e}",
            "Noise floor: the largest relative change produced by an intervention that changes nothing "
            "(same batched replay path, identity edit). Effects at or below it are numerical noise.")


def available_variants(skip: pd.DataFrame) -> list[str]:
    present = set(skip["variant"]) if len(skip) else set()
    return [v for v in SKIP_VARIANTS if v in present]


def position_options(tokens: pd.DataFrame) -> list[int]:
    return [int(p) for p in tokens.sort_values("pos")["pos"]]


def position_label(tokens: pd.DataFrame, pos: int) -> str:
    row = tokens[tokens["pos"] == pos]
    return f"{pos}:{charts.visible_token(row['token'].iloc[0], 20)}" if len(row) else str(pos)


def clamp_position(pos: int | None, n_tokens: int) -> int:
    """The selected token position, defaulting to the last one (the position that predicts next)."""
    if pos is None or n_tokens <= 0:
        return max(0, n_tokens - 1)
    return min(max(0, int(pos)), n_tokens - 1)


def selected_position(selection: Mapping | None, name: str = "cell") -> int | None:
    """The ``pos`` clicked in a heatmap, from the state Streamlit returns for ``on_select="rerun"``."""
    if not selection:
        return None
    sel = selection.get("selection", selection) if isinstance(selection, Mapping) else None
    if not isinstance(sel, Mapping):
        return None
    points = sel.get(name)
    if isinstance(points, Mapping):  # {"pos": [3]} form
        values = points.get("pos")
        values = values if isinstance(values, list) else [values]
        return int(values[0]) if values and values[0] is not None else None
    if isinstance(points, list) and points:
        value = points[0].get("pos") if isinstance(points[0], Mapping) else None
        return int(value) if value is not None else None
    return None


def lens_topk_table(lens_topk: pd.DataFrame, pos: int) -> pd.DataFrame:
    """layer rows × top-1..5 columns "token (p)" for one position (layer L-1 at the top)."""
    frame = charts.lens_topk_frame(lens_topk, pos)
    if not len(frame):
        return pd.DataFrame()
    frame["cell"] = frame["shown"] + "  (" + frame["prob"].map(lambda p: f"{p:.2f}") + ")"
    table = frame.pivot(index="layer", columns="rank", values="cell").sort_index(ascending=False)
    table.columns = [f"top {c}" for c in table.columns]
    table.index.name = "layer (input of)"
    return table


# --------------------------------------------------------------------------------------------------
# Runs table
# --------------------------------------------------------------------------------------------------

PROBE_SHORT = {"cosine": "cos", "logit_lens": "lens", "skip": "skip"}
RUNS_COLUMNS = ["model", "prompt", "tokens", "dtype", "probes", "EDR cosine", "EDR KL", "EDR overlap",
                "EDR skip", "when", "run_id"]


def runs_table(runs: pd.DataFrame, ed_tables: Mapping[str, pd.DataFrame] | None = None,
               text_filter: str = "") -> pd.DataFrame:
    """The store's runs as a display table (EDR per probe by the P1 / proposed rule), filtered."""
    if runs is None or not len(runs):
        return pd.DataFrame(columns=RUNS_COLUMNS)
    ed_tables = ed_tables or {}
    rows = []
    for _, run in runs.iterrows():
        run_id = str(run.get("run_id"))
        ed = ed_tables.get(run_id)
        row = {
            "model": short_model_name(run.get("model_name")),
            "prompt": _one_line(run.get("prompt_text"), 60),
            "tokens": run.get("n_tokens"),
            "dtype": run.get("dtype"),
            "probes": ", ".join(PROBE_SHORT.get(p, p) for p in _as_list(run.get("probes"))),
        }
        summary = run.get("ed_summary") if isinstance(run.get("ed_summary"), Mapping) else {}
        for probe, col in (("cosine", "EDR cosine"), ("kl", "EDR KL"), ("overlap", "EDR overlap"),
                           ("skip", "EDR skip")):
            edr = None
            if ed is not None and len(ed):
                _, edr = ed_value(ed, probe, "proposed" if probe == "skip" else "p1")
            elif probe in summary:
                edr = (summary.get(probe) or {}).get("edr")
            row[col] = None if edr is None or pd.isna(edr) else round(float(edr), 3)
        row["when"] = _when(run.get("created"))
        row["run_id"] = run_id
        rows.append(row)
    table = pd.DataFrame(rows, columns=RUNS_COLUMNS)
    needle = (text_filter or "").strip().lower()
    if needle:
        hay = (runs["model_name"].astype(str).reset_index(drop=True) + " "
               + runs["prompt_text"].astype(str).reset_index(drop=True) + " "
               + table["run_id"].astype(str) + " " + table["dtype"].astype(str)).str.lower()
        table = table[hay.str.contains(needle, regex=False)]
    return table.reset_index(drop=True)


def _as_list(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        import json

        try:
            parsed = json.loads(value)
            return [str(v) for v in parsed] if isinstance(parsed, list) else [value]
        except ValueError:
            return [value]
    try:
        return [str(v) for v in value]
    except TypeError:
        return [str(value)]


def _one_line(text, limit: int) -> str:
    text = "" if text is None else str(text).replace("\n", " ↵ ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _when(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    try:
        stamp = pd.Timestamp(value)
        if stamp.tzinfo is not None:
            stamp = stamp.tz_convert("UTC").tz_localize(None)
        return stamp.strftime("%Y-%m-%d %H:%M")
    except (ValueError, TypeError):
        return str(value)


# --------------------------------------------------------------------------------------------------
# Exports
# --------------------------------------------------------------------------------------------------

EXPORT_WIDTH = 1000


def chart_png(chart, width: int = EXPORT_WIDTH, scale: float = 2) -> bytes:
    import vl_convert as vlc

    return vlc.vegalite_to_png(charts.with_width(chart, width), scale=scale)


def chart_svg(chart, width: int = EXPORT_WIDTH) -> str:
    import vl_convert as vlc

    return vlc.vegalite_to_svg(charts.with_width(chart, width))


def safe_name(text: str) -> str:
    keep = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(text))
    return keep.strip("_")[:60] or "chart"


def export_zip(store, run_ids: Iterable[str], fmt: str = "csv") -> bytes:
    """A zip of the runs' tables as CSV or Parquet (one folder per run), written by the store."""
    buffer = io.BytesIO()
    with tempfile.TemporaryDirectory(prefix="effdepth-export-") as tmp, \
            zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for run_id in run_ids:
            target = Path(tmp) / run_id
            target.mkdir(parents=True, exist_ok=True)
            if fmt == "parquet":
                store.export_parquet(run_id, target)
            else:
                store.export_csv(run_id, target)
            for path in sorted(target.rglob("*")):
                if path.is_file():
                    archive.write(path, f"{run_id}/{path.relative_to(target)}")
    return buffer.getvalue()


def run_charts(result, variant: str | None = None) -> dict[str, object]:
    """Every chart of one run (name -> Altair chart) — what Explore shows, for export."""
    t = result.tables
    out: dict[str, object] = {}
    for probe in CURVE_METRICS:
        frame = charts.probe_curve_frame(t["layer"], probe)
        if len(frame):
            out[f"curve_{probe}"] = charts.probe_curve(t["layer"], probe, t["ed"])
    present = set(t["layer_token"]["metric"]) if len(t["layer_token"]) else set()
    for metric in ("cos_layer", "cos_att", "cos_mlp", "rc_layer", "rc_att", "rc_mlp", "kl", "overlap", "entropy"):
        if metric in present:
            out[f"heatmap_{metric}"] = charts.layer_token_heatmap(t["layer_token"], t["tokens"], metric, t["ed"],
                                                                  select=False)
    for v in available_variants(t["skip"]):
        if variant is None or v == variant:
            out[f"skip_{v}"] = charts.skip_chart(t["skip"], t["skip_output"], v, t["ed"])
    return out


def charts_zip(result, fmt: str = "png") -> bytes:
    """A zip with every chart of a run as PNG or SVG (vl-convert)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, chart in run_charts(result).items():
            if fmt == "svg":
                archive.writestr(f"{name}.svg", chart_svg(chart))
            else:
                archive.writestr(f"{name}.png", chart_png(chart))
    return buffer.getvalue()


def error_kind(err: BaseException) -> str:
    """"corrupt" | "locked" | "other" for a CacheError (decides whether to offer moving the file aside)."""
    if not isinstance(err, CacheError):
        return "other"
    kind = getattr(err, "kind", None) or getattr(err, "reason", None)
    if kind in ("corrupt", "locked"):
        return kind
    text = str(err).lower()
    if "corrupt" in text or ("move" in text and "aside" in text) or "not a valid" in text:
        return "corrupt"
    if "lock" in text or "in use" in text or "busy" in text:
        return "locked"
    return "other"

