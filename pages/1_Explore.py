"""Explore: one model × one prompt — heatmaps, per-layer curves with ED, skip matrix, logit lens."""

import streamlit as st

from effdepth import app, charts, checks, ui


def _url_run(view, run_store):
    """Reads the run named by the URL (it wins: the inputs then describe that run); draws only its errors."""
    result = None
    if run_store is not None and view.run:
        with ui.guard():
            result = app.get_run(run_store, view.run)
            if result is not None:
                app.adopt_meta(view, result.meta)
    return result


def _inputs(view) -> None:
    """Draws the navigation and the sidebar inputs (model, prompt, demo mode), then syncs the URL."""
    ui.nav(view, "explore")
    with st.sidebar:
        st.markdown("#### Input")
        ui.model_input(view, st.sidebar)
        ui.prompt_input(view, st.sidebar, continuation=True)
        st.divider()
        ui.demo_toggle(view)
    ui.sync_url(view)


def _offer_run(view, run_store, computed, asked: bool):
    """Draws the "not in the cache yet" notice and the Run probes button; returns the run it computed or None.

    The click only asks for the run (a callback); the rerun that computes it draws the run where the offer
    stood (one placeholder for both), so no greyed copy of the offer lingers among the results meanwhile."""
    app.preflight(view.model)
    ui.stopped_notice(view.model, view.prompt, view.dtype, view.chat)
    area = st.empty()
    if not asked:
        with area.container():
            _draw_offer(view)
        return None
    with area.container():
        if view.generate:
            result = ui.continue_and_compute(run_store, view.model, view.prompt, view.dtype, view.chat,
                                             view.generate, preview=_preview, positions=view.positions,
                                             seed=view.sample_seed or None, temperature=view.temperature)
        else:
            result = ui.compute(run_store, view.model, view.prompt, view.dtype, view.chat, preview=_preview,
                                config=app.config_for(positions=view.positions))
    computed[result.run_id] = result.meta.get("total_seconds")
    return result


def _draw_offer(view) -> None:
    """The not-cached notice, the window proposal for a long text, and the Run probes button."""
    what = f"This prompt continued by {view.generate} tokens" if view.generate else "This prompt"
    st.info(f"{what} on **{app.md(view.model)}** ({view.dtype}) is not in the cache yet.",
            icon=":material/hourglass_top:")
    proposal = app.window_proposal(view.prompt, view.positions, app.model_shape(view.model),
                                   extra_tokens=view.generate)
    cost = app.run_cost(view.prompt, view.positions, view.model, app.config_for(positions=view.positions).probes,
                        view.dtype, extra_tokens=view.generate)
    if cost is not None:
        st.caption("Estimated before the run: " + app.md(cost))
    if proposal is not None:
        st.info(proposal.message, icon=":material/crop:")
        st.button(f"Measure the last {app.WINDOW} positions", key="use_window", icon=":material/crop:",
                  on_click=ui.set_view, args=("positions", proposal.positions))
    label = "Continue, then run probes" if view.generate else "Run probes"
    st.button(label, type="primary", icon=":material/play_arrow:", key="run_probes",
              on_click=lambda: st.session_state.update({RUN_ASKED: True}))


#: session key: the Run probes button was clicked, the next script run computes
RUN_ASKED = "_explore_run_asked"


def _preview(run) -> None:
    """Draws the probes finished so far, read-only, while the others run (the whole page follows at the end);
    for a run whose probe is still running (``meta["running"]``), only that probe's section so far."""
    t, ed, done = run.tables, run.tables["ed"], list(run.meta.get("probes") or [])
    if run.meta.get("running") == "skip":
        if len(t["skip"]):
            st.subheader("Layer skipping (probe C)")
            variant = "future" if (t["skip"]["variant"] == "future").any() else "current"
            st.caption(app.skip_progress_caption(t["skip"], variant))
            ui.preview(charts.skip_chart(t["skip"], t["skip_output"], variant))
        return
    st.caption("Finished: " + ", ".join(app.PROBE_LABELS[p] for p in done) + ". The rest appears as each probe "
               "ends; the full page, with its controls, when the run is done.")
    for probe, title, curve, metric in (("cosine", "Contributions to the residual stream (probe A)", "cosine",
                                         "cos_layer"), ("logit_lens", "Logit lens (probe B)", "kl", "kl")):
        if probe in done:
            st.subheader(title)
            left, right = st.columns([1, 2], gap="medium")
            with left:
                ui.preview(charts.probe_curve(t["layer"], curve, ed))
            with right:
                ui.preview(charts.layer_token_heatmap(t["layer_token"], t["tokens"], metric, ed))


def _find_or_compute(view, run_store, result, computed):
    """Looks the inputs up in the cache, else draws the demo-mode warning or the offer to compute them."""
    asked = st.session_state.pop(RUN_ASKED, False)  # a click on Run probes asks this script run to compute
    with ui.guard():
        if result is None:
            result = _cached_run(view, run_store)
        if result is None:
            if view.demo:
                st.warning(f"**Not cached.** This prompt on **{app.md(view.model)}** ({view.dtype}) has no stored "
                           "run, and "
                           "demo mode loads no model. Pick a cached run on the Runs page or leave demo mode.",
                           icon=":material/block:")
            else:
                result = _offer_run(view, run_store, computed, asked)
    return result


def _cached_run(view, run_store):
    """The cached run of the view's inputs: of the prompt, or of prompt + the model's cached continuation."""
    app.check_prompt(view.prompt)
    text, chat = view.prompt, view.chat
    if view.generate:
        generation = app.cached_generation(run_store, view.model, view.prompt, view.dtype, view.chat, view.generate,
                                           seed=view.sample_seed or None, temperature=view.temperature)
        if generation is None:
            return None
        text, chat = generation.full_text, False
    return app.find_cached(run_store, view.model, text, view.dtype, chat, positions=view.positions)[1]


def _remaining_probes(view, run_store, result, computed) -> None:
    """Draws, for a run that was stopped, which probes did not run and the button that runs them."""
    if app.missing_probes(result) and not view.demo:  # a run that was stopped kept what had finished
        with ui.guard():
            ui.stopped_notice(view.model, view.prompt, view.dtype, view.chat)
            missing = ", ".join(app.PROBE_LABELS[p] for p in app.missing_probes(result))
            st.info(f"This run holds only the probes that finished before it was stopped; {missing} did not run.",
                    icon=":material/pending:")
            if st.button("Run the remaining probes", icon=":material/play_arrow:", key="run_rest"):
                result = ui.compute(run_store, view.model, view.prompt, view.dtype, view.chat,
                                    config=app.config_for(positions=view.positions),
                                    preview=_preview, reuse=result)  # the finished probes are taken, not redone
                computed[result.run_id] = result.meta.get("total_seconds")
                view.run = result.run_id
                ui.sync_url(view)
                st.rerun()


def _header(view, result, run_store, computed) -> None:
    """Draws the run's caption, the unverified warning, the prompt as analysed, the summary strip and notes."""
    meta, t = result.meta, result.tables
    view.run = result.run_id
    n_tokens = int(meta["n_tokens"])
    view.pos = app.clamp_position(view.pos, n_tokens)
    ed = t["ed"]

    st.caption(f"**{app.md(meta['model_name'])}** · run `{result.run_id}` · {n_tokens} tokens · "
               f"probe config {', '.join(meta.get('probes') or [])} · created {meta.get('created', '')}")
    if not checks.verified(meta):
        st.warning("**Unverified run.** It was stored before runs checked their own invariants, possibly while "
                   "another session used the same model (whose numbers it may then hold). Recompute the cache's "
                   f"unverified runs with `effdepth cache --verify --cache {app.md(run_store.path)}`.",
                   icon=":material/gpp_maybe:")
    _generation_note(meta)
    with st.expander("Prompt as analysed", expanded=False):
        st.code(meta.get("prompt_text", ""), language=None, wrap_lines=True)
    _trust_badge(meta, t["skip"])
    ui.bind(st.radio, "ed_rule", "Headline ED rule", options=list(app.ED_RULES), format_func=app.ED_RULES.get,
            horizontal=True, key="w_headline_rule",
            help="P1's exact rule (the default, comparable with the papers) or the guarded rule; a P1 ED that its "
                 "guard rejects is flagged either way.")
    ui.summary_strip(app.summary_items(meta, ed, from_cache=result.run_id not in computed, rule=view.ed_rule))
    if "future" not in set(t["skip"]["variant"]) and len(t["skip"]):
        st.info("The prompt is shorter than 13 tokens: the future-effect skip needs a split point t with "
                "8 ≤ t < T − 4, so only the current-token skip variants were computed (and no skip ED).",
                icon=":material/info:")


def _trust_badge(meta, skip) -> None:
    """Draws the run's trust badge: its own invariants and noise floor against float rounding for its dtype."""
    trust = checks.trust(meta, skip)
    if trust.level == "green":
        st.badge(f"Checks pass: {trust.numbers()}", icon=":material/verified:", color="green")
    elif trust.level == "amber":
        st.badge(f"Checks off: {trust.numbers()}", icon=":material/warning:", color="orange")
        st.warning("**This run's own checks are off** (beyond float rounding for its dtype): "
                   + "; ".join(trust.problems) + ". Its numbers may not be what the model computes.",
                   icon=":material/gpp_maybe:")
    else:
        st.badge("Unverified: stored before runs checked themselves", icon=":material/help:", color="gray")


def _ed_section(result) -> None:
    """Draws the ED table per probe and the per-layer curves with their ED, two to a row."""
    t, ed = result.tables, result.tables["ed"]
    st.subheader("Effective depth per probe")
    st.dataframe(app.ed_comparison_table(ed), hide_index=True, width="stretch")
    st.caption("ED = the transition layer (curves indexed by the *input* of each layer, as in P1); "
               "EDR = (ED + 1) / L. “P1” applies the paper's rule exactly; “guarded” adds the guard described "
               "next to it. Solid rules mark P1, dashed rules the guarded variant.")

    probes_with_curves = [p for p in app.CURVE_METRICS if len(charts.probe_curve_frame(t["layer"], p))]
    for start in range(0, len(probes_with_curves), 2):
        row = st.columns(2, gap="medium")
        for col, probe in zip(row, probes_with_curves[start:start + 2]):
            with col:
                curve = app.memo_chart((result.run_id, "curve", probe),
                                       lambda: charts.probe_curve(t["layer"], probe, ed))
                ui.chart(curve, f"{result.run_id}_curve_{probe}", f"curve_{probe}")
                st.caption(app.ed_caption(ed, probe))


def _along_the_trace(view, result):
    """On a long trace: the EDR per segment along it over an overview strip, and the slider that picks the
    window of positions the heatmaps below draw; returns that window (None: the run fits one heatmap)."""
    meta, t = result.meta, result.tables
    window = app.heatmap_window(meta, t, view.win)
    view.seg = app.segment_size(view.seg)
    segmented = app.has_segments(t, min(app.SEGMENT_CHOICES))
    if window is None and not segmented:
        return None
    st.subheader("Along the trace")
    marks = app.boundaries(meta)
    span = (window.start, window.stop) if window is not None else None
    if segmented:
        ui.bind(st.select_slider, "seg", "Positions per segment", options=list(app.SEGMENT_CHOICES), key="w_seg",
                help="The ED rules run on each segment's own layer curves (the token mean over its positions); "
                     "the band is a 95 % bootstrap interval over the segment's positions.")
        if app.has_segments(t, view.seg):
            frame = app.trace_segments(result, view.seg)
            n_tokens = int(meta["n_tokens"])
            chart = app.memo_chart((result.run_id, "segments_chart", view.seg, view.ed_rule, span),
                                   lambda: charts.segment_chart(frame, view.ed_rule, marks, span, n_tokens))
            ui.chart(chart, f"{result.run_id}_segments_{view.seg}", "segments")
            st.caption(f"EDR per segment of {view.seg} measured positions ({app.ED_RULES[view.ed_rule]}), not "
                       "in the papers. `effdepth probe --positions A:B` re-runs one segment on its own and gives its "
                       "ED. Dashed red rules: where the model's own continuation and the answer start.")
        else:
            st.caption(f"Fewer than two segments of {view.seg} measured positions: pick a smaller segment.")
    if window is not None:
        metric = "cos_layer" if (t["layer_token"]["metric"] == "cos_layer").any() else "kl"
        overview = app.memo_chart((result.run_id, "overview", metric, span), lambda: charts.trace_overview(
            t["layer_token"], metric, marks, span))
        ui.chart(overview, f"{result.run_id}_overview", "overview")
        starts = app.window_starts(window)
        view.win = min(starts, key=lambda s: abs(s - window.start))
        ui.bind(st.select_slider, "win", "Heatmap window (first position)", options=starts, key="w_win",
                format_func=lambda s: f"{s} … {s + window.width - 1}",
                help=f"The heatmaps below draw {window.width} positions at a time (at most {app.HEATMAP_CELLS:,} "
                     "cells), so that a long trace stays readable; slide to move them along the trace.")
        window = app.heatmap_window(meta, t, view.win)
    return window


def _on_cell(key: str):
    """A heatmap's selection callback: the clicked cell's token becomes the view's position (click → position)."""
    def callback() -> None:
        pos = app.selected_position(st.session_state.get(key))
        if pos is not None:
            st.session_state[ui.STATE].pos = pos
    return callback


def _generation_note(meta) -> None:
    """Says which tokens the model wrote itself (generate, then probe) and where the charts mark them."""
    generation = meta.get("generation")
    if not generation:
        return
    settings = generation.get("settings") or {}
    how = f"sampled, seed {settings.get('seed')}" if settings.get("sample") else "greedy"
    st.caption(f"The model wrote the last {generation['n_new_tokens']} tokens itself ({how}), from position "
               f"{meta.get('prompt_tokens')}: the dashed red rule on every layer × token chart."
               + ("" if generation.get("exact", True) else " Read back as text, its tokens split differently "
                  "at the boundary; the probes read the text."))


def _contributions(view, result, window) -> None:
    """Draws the contributions heatmap (probe A) with its quantity and sublayer pickers."""
    t, ed = app.window_tables(result.tables, window), result.tables["ed"]
    st.subheader("Contributions to the residual stream (probe A)")
    c1, c2 = st.columns(2)
    ui.bind(st.radio, "contrib", "Quantity", container=c1, options=list(app.CONTRIB_FAMILIES),
            format_func=app.CONTRIB_FAMILIES.get, horizontal=True)
    ui.bind(st.radio, "part", "Sublayer", container=c2, options=list(app.SUBLAYERS),
            format_func=app.SUBLAYERS.get, horizontal=True)
    metric = app.contrib_metric(view.contrib, view.part)
    heat = app.memo_chart((result.run_id, "heat", metric, view.pos, window), lambda: charts.layer_token_heatmap(
        t["layer_token"], t["tokens"], metric, ed, selected_pos=view.pos, boundary=app.continuation_start(result.meta)))
    ui.chart(heat, f"{result.run_id}_{metric}", "heat_contrib", on_select=_on_cell("heat_contrib"))
    st.caption("Cosine < 0: the sublayer erases what is in the residual; ≈ 0: writes something new; > 0: "
               "amplifies/refines. Relative contribution = ‖sublayer output‖ / ‖residual it is added to‖ (log "
               "colour scale, 2nd–98th percentile). The horizontal rule is the cosine ED. Click a cell to pick a "
               "token.")


def _logit_lens(view, run_store, result, window) -> None:
    """Draws the logit-lens heatmap (probe B), beside or instead of the linear shortcut lens, the token-position
    slider and the top-5 per layer there."""
    t, ed = {**result.tables, **app.window_tables(result.tables, window)}, result.tables["ed"]
    n_layers = int(result.meta["n_layers"])
    st.subheader("Logit lens (probe B)")
    left, right = st.columns([2, 3])
    ui.bind(st.radio, "lens_view", "Lens", container=left, options=list(app.LENS_VIEWS),
            format_func=app.LENS_VIEWS.get, horizontal=True, key="w_lens_view",
            help="The linear shortcut lens maps each layer's residual to its best linear guess of the final "
                 "residual (fitted once per model on the shipped text) before decoding it (not in the papers).")
    ui.bind(st.radio, "lens", "Quantity", container=right, options=list(app.LENS_METRICS),
            format_func=app.LENS_METRICS.get, horizontal=True, key="w_lens")
    shortcut = _shortcut_run(view, run_store, result) if view.lens_view != "logit" else None
    shown = [("logit", result)] if view.lens_view != "shortcut" or shortcut is None else []
    if shortcut is not None:
        shown.append(("shortcut", shortcut))
    columns = st.columns(len(shown)) if len(shown) > 1 else [st.container()]
    domain = app.lens_domain(result, shortcut, view.lens) if len(shown) > 1 else None  # one colour scale
    for column, (kind, run) in zip(columns, shown):
        metric = view.lens if kind == "logit" else app.shortcut_metric(view.lens)
        with column:
            if len(shown) > 1:
                st.markdown(f"**{app.LENS_VIEWS[kind].capitalize()}**")
            heat = app.memo_chart(
                (run.run_id, "heat", metric, view.pos, len(shown), window), lambda: charts.layer_token_heatmap(
                    app.window_tables(run.tables, window)["layer_token"], t["tokens"], metric, run.tables["ed"],
                    selected_pos=view.pos,
                    boundary=app.continuation_start(result.meta), domain=domain))
            key = "heat_lens" if kind == "logit" else "heat_lens_shortcut"
            ui.chart(heat, f"{run.run_id}_{metric}", key, on_select=_on_cell(key))
    st.caption("Row l decodes the residual *entering* layer l (row 0 = the embeddings) with the model's own "
               "final norm and unembedding; the reference is the model's output. KL uses a symlog colour scale. "
               "The rules mark the KL ED (entropy) or the overlap ED.")
    if shortcut is not None:
        _shortcut_report(result, shortcut)
    _token_depth(result, window)

    positions = app.position_options(t["tokens"])
    if view.pos not in positions:
        view.pos = positions[-1]
    ui.bind(st.select_slider, "pos", "Token position for the logit-lens read-out", options=positions,
            format_func=lambda p: app.position_label(t["tokens"], p))
    top_chart = app.memo_chart((result.run_id, "topk", view.pos), lambda: charts.lens_topk_chart(
        t["lens_topk"], view.pos, app.position_label(t["tokens"], view.pos), ed=ed))
    ui.chart(top_chart, f"{result.run_id}_lens_top5_pos{view.pos}", "lens_topk")
    with st.expander(f"Top-5 per layer at position {app.md(app.position_label(t['tokens'], view.pos))} as a table"):
        st.dataframe(app.lens_topk_table(t["lens_topk"], view.pos), width="stretch",
                     height=min(36 * (n_layers + 1), 560))


def _shortcut_run(view, run_store, result):
    """The shortcut-lens run of this run's text: cached, computed on request, or None (with what it costs)."""
    meta = result.meta
    with ui.guard():
        config = app.shortcut_config(view.positions)
        _, found = app.find_cached(run_store, view.model, meta["prompt_text"], view.dtype,
                                   bool(meta.get("chat_template")), config)
        if found is not None:
            return found
        offer = st.empty()  # the run is drawn where the offer stood (no stale button above the result)
        with offer.container():
            st.caption("The linear shortcut lens of this text is not in the cache. Its first run on a model fits "
                       f"the lens (one forward pass over the shipped text, ~{app.corpus_tokens() / 1000:.0f}k "
                       "tokens, and a ridge fit per layer; a minute or more on a CPU), which is kept for every later "
                       "text.")
            if view.demo:
                st.info("Demo mode loads no model; pick the logit lens.", icon=":material/block:")
                return None
            clicked = st.button("Fit and run the linear shortcut lens", icon=":material/play_arrow:",
                                key="run_shortcut")
        if clicked:
            offer.empty()
            return ui.compute(run_store, view.model, meta["prompt_text"], view.dtype, bool(meta.get("chat_template")),
                              label="Linear shortcut lens", config=config)
    return None


def _shortcut_report(result, shortcut) -> None:
    """Draws the lens EDs side by side and the fit's held-out KL per layer under either lens."""
    st.dataframe(app.lens_ed_table(result, shortcut), hide_index=True, width="stretch")
    st.caption("The lens-based ED rules (P1's and the guarded ones) read under either lens. "
               + app.md(app.fit_caption(shortcut)))
    report = app.held_out_kl(shortcut)
    if report:
        ui.chart(app.memo_chart((shortcut.run_id, "lens_fit"), lambda: charts.lens_fit_chart(report)),
                 f"{shortcut.run_id}_lens_fit", "lens_fit")


def _token_depth(result, window) -> None:
    """Draws the commitment depth per token under the lens heatmap, and its histogram (not in the papers)."""
    t, n_layers = result.tables, int(result.meta["n_layers"])
    token_depth = app.token_depth(result)
    if not len(token_depth):
        return
    shown = app.window_tables({"tokens": t["tokens"], "depth": token_depth}, window, ("tokens", "depth"))
    ui.chart(app.memo_chart((result.run_id, "token_depth", window), lambda: charts.token_depth_strip(
        shown["depth"], shown["tokens"], n_layers, boundary=app.continuation_start(result.meta))),
        f"{result.run_id}_token_depth", "token_depth")
    ui.chart(app.memo_chart((result.run_id, "token_depth_hist"), lambda: charts.token_depth_histogram(
        token_depth, n_layers)), f"{result.run_id}_token_depth_hist", "token_depth_hist")
    st.caption(f"Per-token depth (not in the papers, which average over tokens): c(i) is the first layer from "
               f"which on every lens row's top-1 is the model's own next-token prediction at i; {n_layers} means "
               f"only the output has it. Mean over these {len(token_depth)} tokens: "
               f"{token_depth['value'].mean():.1f}.")


def _layer_skipping(view, result) -> None:
    """Draws the skip matrix (probe C) of the chosen variant with its noise floor, or says there is none."""
    t, ed, meta = result.tables, result.tables["ed"], result.meta
    st.subheader("Layer skipping (probe C)")
    variants = app.available_variants(t["skip"])
    if not variants:
        st.info("This run has no layer-skip results.")
        return
    if view.variant not in variants:
        view.variant = variants[0]
    ui.bind(st.radio, "variant", "Variant", options=variants, format_func=app.SKIP_VARIANTS.get, horizontal=True)
    skip_col, noise_col = st.columns([4, 1], gap="medium")
    with skip_col:
        skip_chart = app.memo_chart((result.run_id, "skip", view.variant),
                                    lambda: charts.skip_chart(t["skip"], t["skip_output"], view.variant, ed))
        ui.chart(skip_chart, f"{result.run_id}_skip_{view.variant}", "skip")
    with noise_col:
        number, caption = app.noise_caption(t["skip"], view.variant)
        st.metric("Noise floor", number, help="max relative change of an identity intervention")
        st.caption(caption)
        if meta.get("splits_used"):
            st.caption(f"Split positions t used: {', '.join(map(str, meta['splits_used']))} (max over splits).")
    st.caption("Rows: the skipped layer s; columns: the layer j whose contribution changes; colour: max "
               "relative change ‖c_j − c′_j‖ / ‖c_j‖ over the measured tokens (P2 scale, 0–1). Bars: the output "
               "change ‖Δp‖₂. The rule marks the skip ED (effdepth's proposed rule).")


def _offer_attribution(view, run_store, prompt_text: str, answer: str, attr_config, meta):
    """Draws what erasure and IG measure, the answer-span and step inputs and the Run button; returns its run."""
    st.caption("Both measure the **answer span** at the end of the prompt: erasure replaces one residual "
               "h_k[t] by P2's baseline (mean over the first 10 GSM8K prompts) and measures the largest change "
               "‖Δp‖₂ at the answer-predicting positions; IG attributes the gold answer's probability to each "
               "layer's output (P2's baseline: the token mean). They cost (L+1)·T and L·steps passes, so they "
               "run on request.")
    a1, a2 = st.columns([3, 1])
    ui.bind(st.text_input, "answer", "Answer span (must end the prompt)", container=a1,
            transform=lambda v: v or None, to_widget=lambda v: v or "",
            help="Default: the benchmark item's gold answer, else the last word.")
    if not view.answer:
        a1.caption(f"Using {app.md(repr(answer))}")
    ui.bind(st.selectbox, "ig_steps", "IG steps", container=a2, options=list(app.IG_STEP_CHOICES),
            to_widget=lambda v: min(app.IG_STEP_CHOICES, key=lambda c: abs(c - v)),
            help="P2 uses 256 (a left Riemann sum); fewer steps are faster and less exact.")
    st.caption("Estimated cost on this text: " + app.attribution_estimate(meta, view.ig_steps))
    if view.demo:
        st.info("Not cached for this answer span and step count; demo mode loads no model.",
                icon=":material/block:")
    elif st.button("Run erasure + integrated gradients", icon=":material/play_arrow:", key="run_attr"):
        return ui.compute(run_store, view.model, prompt_text, view.dtype, view.chat,
                          label="Residual erasure and integrated gradients", config=attr_config)
    return None


def _find_attribution(view, run_store, meta, answer: str):
    """Looks up the erasure / IG run of this answer span and step count, else draws the offer to compute it."""
    attr, prompt_text = None, meta["prompt_text"]  # an error in the look-up (shown by the guard) leaves no run
    with ui.guard():
        attr_config = app.attribution_config(answer, view.ig_steps)
        _, attr = app.find_cached(run_store, view.model, prompt_text, view.dtype, view.chat, attr_config)
        if attr is None:
            attr = _offer_attribution(view, run_store, prompt_text, answer, attr_config, meta)
    return attr


def _attribution_heatmap(view, attr, answer: str, ed, window) -> None:
    """Draws the erasure / IG heatmap of an attribution run with its metric picker and caption."""
    attr_frame = app.attribution_layer_token(attr)
    choices = [m for m in app.ATTR_METRICS if m in set(attr_frame["metric"])]
    if view.attr not in choices:
        view.attr = choices[0]
    ui.bind(st.radio, "attr", "Heatmap", options=choices, format_func=app.ATTR_METRICS.get, horizontal=True,
            key="w_attr")
    shown = app.window_tables({"layer_token": attr_frame, "tokens": attr.tables["tokens"]}, window)
    attr_chart = app.memo_chart((attr.run_id, "attr", view.attr, view.pos, window), lambda: charts.layer_token_heatmap(
        shown["layer_token"], shown["tokens"], view.attr, ed, domain=app.attribution_domain(attr_frame, view.attr),
        selected_pos=view.pos))
    ui.chart(attr_chart, f"{attr.run_id}_{view.attr}", "heat_attr", on_select=_on_cell("heat_attr"))
    st.caption(f"Answer span {app.md(repr(answer))}. Erasure: row k erases h_k[t] (k = 0 is the embeddings, "
               "k = L the final "
               "residual); the colour is the largest ‖Δp‖₂ over the answer-predicting positions — where a column "
               "turns dark, that token's information has moved on. IG (P2 baseline = token mean, "
               f"{attr.meta['probe_config'].get('ig_steps')} steps): red lowers, blue raises the answer's "
               "probability; the colour scale leaves out position 0 as in P2. The horizontal rule is the cosine ED.")


def _attribution(view, run_store, result, window) -> None:
    """Draws the residual erasure and integrated gradients section (probes E, F)."""
    st.subheader("Residual erasure and integrated gradients (probes E, F)")
    answer = app.answer_for(view)
    attr = _find_attribution(view, run_store, result.meta, answer)
    if attr is not None:
        _attribution_heatmap(view, attr, answer, result.tables["ed"], window)


def _talk(view, result) -> None:
    """Draws "Add to a talk": the charts of this run become slides of the view's talk (Present shows them)."""
    with st.popover("Add to a talk", icon=":material/slideshow:"):
        kinds = st.multiselect("Charts", options=list(app.RUN_KINDS), default=["cosine", "lens", "skip"],
                               format_func=app.SLIDE_KINDS.get, key="w_talk_kinds")
        if st.button("Add these slides", key="talk_add", icon=":material/add:"):
            view.slides = app.add_slides(view.slides, [app.Slide(kind, result.run_id) for kind in kinds])
        slides = app.parse_slides(view.slides)
        if slides:
            st.caption(f"The talk has {len(slides)} slide(s).")
            st.page_link(ui.PAGES["present"][0], label="Present", icon=":material/slideshow:",
                         query_params=app.state_to_query(view) | {"slide": "0"})


def main() -> None:
    """Draws the Explore page top to bottom."""
    ui.page_setup("Explore")
    view = ui.state()
    run_store = ui.store()
    result = _url_run(view, run_store)
    _inputs(view)

    st.title("Explore")
    if run_store is None:
        st.stop()
    computed = st.session_state.setdefault("_computed", {})
    result = _find_or_compute(view, run_store, result, computed)
    if result is None:
        st.stop()
    _remaining_probes(view, run_store, result, computed)

    _header(view, result, run_store, computed)
    _talk(view, result)
    _ed_section(result)
    window = _along_the_trace(view, result)
    _contributions(view, result, window)
    _logit_lens(view, run_store, result, window)
    _layer_skipping(view, result)
    _attribution(view, run_store, result, window)
    ui.sync_url(view)


main()
