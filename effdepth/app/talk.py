"""A talk (issue 12 §4): an ordered list of slides, each one chart of the cache, carried in the URL.

A slide is ``kind:ref``: a chart kind of ``KINDS`` and what it draws (a run id, a sweep set, a map id). The
list is the view's ``slides`` field, so a talk is a link; ``default_talk`` builds one from what the cache
holds when the link names none. ``slide_view`` turns a slide into its title, chart and caption.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from effdepth import charts, mapstore, sweeps

#: slide kinds -> what the slide shows
KINDS = {"cosine": "Contributions: cosine of each layer's output with its residual (probe A)",
         "lens": "Logit lens: KL(layer ‖ final) (probe B)",
         "skip": "Layer skipping: effect on later layers (probe C)",
         "curves": "Per-layer cosine μ with the effective depth",
         "difficulty": "EDR per difficulty bin, 95% bootstrap CIs",
         "linmap": "Linear map from a shallow model to a deep one (P2 §10)"}
RUN_KINDS = ("cosine", "lens", "skip", "curves")
MAX_SLIDES = 40
_REF = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.\-]{0,79}$")


@dataclass(frozen=True)
class Slide:
    kind: str
    ref: str

    def token(self) -> str:
        return f"{self.kind}:{self.ref}"


def parse_slides(text: str | None) -> list[Slide]:
    """The slides of a URL value ``kind:ref,kind:ref,…``; malformed entries are left out, at most MAX_SLIDES."""
    slides = []
    for token in (text or "").split(","):
        kind, _, ref = token.strip().partition(":")
        if kind in KINDS and _REF.match(ref) and len(slides) < MAX_SLIDES:
            slides.append(Slide(kind, ref))
    return slides


def format_slides(slides: list[Slide]) -> str:
    return ",".join(slide.token() for slide in slides[:MAX_SLIDES])


def add_slides(text: str | None, new: list[Slide]) -> str:
    """The talk with ``new`` slides appended (a slide already in it is not added twice)."""
    slides = parse_slides(text)
    slides += [slide for slide in new if slide not in slides]
    return format_slides(slides)


def set_ref(item_set_key: str) -> str:
    """A sweep set's URL-safe name: ``<fingerprint[:16]>.<dtype>.<chat 0/1>``."""
    fingerprint, dtype, chat = item_set_key.split("|")
    return f"{fingerprint[:16]}.{dtype}.{chat}"


def _set_key(store, ref: str) -> str | None:
    for key in sweeps.sweep_sets(sweeps.item_runs(store))["key"]:
        if set_ref(key) == ref:
            return key
    return None


def default_talk(store, max_runs: int = 2) -> list[Slide]:
    """A talk from the cache: the newest typed-prompt runs of up to ``max_runs`` models (cosine, lens, skip),
    every sweep set's EDR per bin, every linear map."""
    slides: list[Slide] = []
    runs = store.runs()
    if len(runs):
        typed = runs[runs["dataset"].isna()].sort_values("created", ascending=False)
        typed = typed[[("cosine" in str(p)) and ("skip" in str(p)) for p in typed["probes"]]]
        for run_id in typed.drop_duplicates("model_name")["run_id"].head(max_runs):
            slides += [Slide(kind, run_id) for kind in ("cosine", "lens", "skip")]
    for key in sweeps.sweep_sets(sweeps.item_runs(store))["key"]:
        slides.append(Slide("difficulty", set_ref(key)))
    slides += [Slide("linmap", map_id) for map_id in mapstore.maps(store)["map_id"]]
    return slides[:MAX_SLIDES]


@dataclass
class SlideView:
    title: str
    chart: object
    caption: str


def slide_view(store, slide: Slide) -> SlideView | None:
    """What one slide shows, from the cache (None when what it names is not there)."""
    if slide.kind in RUN_KINDS:
        return _run_slide(store, slide)
    if slide.kind == "difficulty":
        key = _set_key(store, slide.ref)
        item_set = sweeps.load_items(store, key) if key else None
        if item_set is None:
            return None
        agg = sweeps.aggregate_by_bin(item_set, "token")
        order = [b for b in item_set.bins if b in set(agg.ed["group"])]
        if not order:
            return None
        return SlideView(f"{KINDS['difficulty']}: {item_set.model_name}",
                         charts.edr_ci_chart(agg.ed, "p1", order=order, group_title="bin"),
                         f"{item_set.model_name} ({item_set.dtype}): "
                         + ", ".join(f"{b}" for b in order) + ". P1's rules on the token-weighted aggregate curve.")
    found = mapstore.get_map(store, slide.ref)
    if found is None:
        return None
    meta = found.meta
    return SlideView(f"{meta['source_name']} → {meta['target_name']}", charts.linear_map_heatmap(found),
                     f"Held-out relative error; dots: the best target depth of each source depth; dashed: the "
                     f"relative-depth diagonal. {meta['n_fit_tokens']} fit / {meta['n_held_tokens']} held-out tokens.")


def _run_slide(store, slide: Slide) -> SlideView | None:
    run = store.get(slide.ref)
    if run is None:
        return None
    t, meta = run.tables, run.meta
    who = f"{meta.get('model_name')} ({meta.get('dtype')}, L = {meta.get('n_layers')}), {meta.get('n_tokens')} tokens"
    if slide.kind in ("cosine", "lens"):
        metric = "cos_layer" if slide.kind == "cosine" else "kl"
        if not (t["layer_token"]["metric"] == metric).any():
            return None
        chart = charts.layer_token_heatmap(t["layer_token"], t["tokens"], metric, t["ed"])
    elif slide.kind == "skip":
        if not len(t["skip"]):
            return None
        variant = "future" if (t["skip"]["variant"] == "future").any() else "current"
        chart = charts.skip_chart(t["skip"], t["skip_output"], variant)
    else:
        if not (t["layer"]["metric"] == "cos_mu").any():
            return None
        chart = charts.probe_curve(t["layer"], "cosine", t["ed"])
    text = str(meta.get("prompt_text"))
    return SlideView(KINDS[slide.kind], chart, f"{who}. Text: {text if len(text) <= 160 else text[:159] + '…'}")
