"""What a page says about a run: ED and EDR summaries and captions, comparisons of two runs, positions
and tokens, the lens top-k table and the attribution tables.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import pandas as pd

from effdepth import charts, engine
from effdepth.app.options import COMPARE_METRICS, ED_PROBES, ED_RULES, PROBE_LABELS, SKIP_VARIANTS
from effdepth.errors import CacheError
from effdepth.models.registry import short_model_name


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


def summary_items(meta: Mapping, ed_table: pd.DataFrame, from_cache: bool,
                  rule: str = "p1") -> list[tuple[str, str, str | None, str]]:
    """(label, value, delta, help) for the metric strip of a run; the delta line carries the EDR.

    ``rule``: the ED rule the strip headlines ("p1", the papers' exact rule, or "guarded"); a P1 ED that its
    guard rejects (the guarded rule finds another layer) is flagged on the delta line either way."""
    items: list[tuple[str, str, str | None, str]] = [
        ("L (layers)", str(meta.get("n_layers")), f"d_model {meta.get('d_model')}",
         f"architecture {meta.get('architecture')}"),
        ("T (tokens)", str(meta.get("n_tokens")), None,
         "tokens fed to the model (prompt and answer together, teacher-forced)"),
    ]
    if meta.get("measured"):
        spec = (meta.get("probe_config") or {}).get("positions", "all")
        items.append(("measured", f"{len(meta['measured'])} of {meta.get('n_tokens')}", spec,
                      f"positions {spec}: the contributions, the logit lens and their layer means read these "
                      "only (the forward pass covers the whole text); layer skipping reads every position"))
    ran = set(meta.get("probes") or engine.DEFAULT_PROBES)
    for probe in ED_PROBES:
        label = f"ED {charts.PROBE_TITLES.get(probe, probe)}"
        if _ED_SOURCE[probe] not in ran:
            items.append((label, "not run", None, f"this run has no {PROBE_LABELS[_ED_SOURCE[probe]]} results"))
            continue
        items.append((label, *_headline(ed_table, probe, rule)))
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


def _headline(ed_table: pd.DataFrame, probe: str, rule: str) -> tuple[str, str | None, str]:
    """(value, delta, help) of one probe's ED in the summary strip under the headline ``rule``."""
    if probe == "skip":
        ed, edr = ed_value(ed_table, probe, "proposed")
        return ("none" if ed is None else str(ed), None if ed is None else f"EDR {edr:.2f}",
                "effdepth's proposed rule (the papers define none)")
    other = "guarded" if rule == "p1" else "p1"
    ed, edr = ed_value(ed_table, probe, rule)
    o_ed, o_edr = ed_value(ed_table, probe, other)
    help_text = f"{ED_RULES[rule]}; the {ED_RULES[other]} gives {_fmt_ed(o_ed, o_edr)}"
    delta = None if ed is None else f"EDR {edr:.2f}"
    p1_ed, guarded_ed = (ed, o_ed) if rule == "p1" else (o_ed, ed)
    if p1_ed is not None and guarded_ed != p1_ed:
        delta = f"{delta or 'no ED'} · guard rejects P1's {p1_ed}" if rule == "p1" else (
            f"{delta or 'no ED'} · P1 says {p1_ed}")
        help_text += (f". P1's rule fires at layer {p1_ed}, which its guard rejects (see the ED table: P1's rule "
                      "reads one point of the curve, the guard asks the curve to stay past it)")
    return "none" if ed is None else str(ed), delta, help_text


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


def pair_labels(meta_a: Mapping, meta_b: Mapping) -> tuple[str, str]:
    """Short distinct labels for two runs (model names; dtype or run id added when needed)."""
    a, b = short_model_name(meta_a.get("model_name")), short_model_name(meta_b.get("model_name"))
    if a == b:
        a, b = f"{a} ({meta_a.get('dtype')})", f"{b} ({meta_b.get('dtype')})"
    if a == b:
        a, b = f"A {a}", f"B {b}"
    return a, b


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


def token_depth(result) -> pd.DataFrame:
    """The run's commitment depth per measured token (``depth.token_depth``; empty without the lens)."""
    from effdepth import depth

    return depth.token_depth(result.tables["layer_token"], int(result.meta["n_layers"]))


def skip_progress_caption(skip: pd.DataFrame, variant: str) -> str:
    """What a skip matrix still filling in shows: the affected layers measured so far, out of L."""
    rows = skip[(skip["variant"] == variant) & (skip["skipped"] >= 0) & (skip["affected"] > skip["skipped"])]
    n_layers = int(skip["affected"].max()) + 1 if len(skip) else 0
    reached = int(rows["affected"].max()) + 1 if len(rows) else 1
    return (f"Filling in as the replay moves up the layers: affected layers 0–{reached - 1} of {n_layers} so "
            "far. The values are final; the output change, the noise floor and the skip ED come when the "
            "probe ends.")


def available_variants(skip: pd.DataFrame) -> list[str]:
    present = set(skip["variant"]) if len(skip) else set()
    return [v for v in SKIP_VARIANTS if v in present]


def position_options(tokens: pd.DataFrame) -> list[int]:
    return [int(p) for p in tokens.sort_values("pos")["pos"]]


def position_label(tokens: pd.DataFrame, pos: int) -> str:
    row = tokens[tokens["pos"] == pos]
    return f"{pos}:{charts.visible_token(row['token'].iloc[0], 20)}" if len(row) else str(pos)


def selected_position(selection: Mapping | None, name: str = "cell") -> int | None:
    """The ``pos`` clicked in a heatmap, from the state Streamlit returns for ``on_select="rerun"``."""
    value = charts.selected_value(selection, name, "pos")
    return None if value is None else int(value)


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


def error_kind(err: BaseException) -> str:
    """"corrupt" | "locked" | "other" for a CacheError (decides whether to offer moving the file aside), read
    from the error's ``kind``."""
    kind = getattr(err, "kind", None) if isinstance(err, CacheError) else None
    return {"damaged": "corrupt", "locked": "locked"}.get(kind, "other")


def attribution_estimate(meta: Mapping, ig_steps: int) -> str:
    """The weight-FLOP estimate of erasure + IG on a run's shape (effdepth.estimate), before they start."""
    from effdepth import estimate

    measured = meta.get("measured") or None
    shape = estimate.Shape(int(meta["n_layers"]), int(meta["d_model"]), int(meta.get("vocab_size") or 0),
                           int(meta["n_tokens"]), measured=len(measured) if measured else None,
                           first_measured=min(measured) if measured else 0,
                           last_measured=max(measured) if measured else None)
    return estimate.describe(shape, ("erasure", "igrad"), ig_steps, dtype=str(meta.get("dtype") or "float32"),
                             memory=True)
