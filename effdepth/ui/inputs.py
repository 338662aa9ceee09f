"""The inputs the pages share: model, prompt, benchmark item, demo mode.
"""

from __future__ import annotations

import streamlit as st

from effdepth import app
from effdepth.errors import EffdepthError
from effdepth.ui.state import OTHER, bind, set_view


def model_input(view: app.ViewState, container=None, which: str = "a", label: str = "Model") -> None:
    """Embedded model picker, or a path / HF id / GGUF file for "Other"."""
    target = container or st
    field, dtype_field = ("model", "dtype") if which == "a" else ("model_b", "dtype_b")
    options = [name for name, _ in app.model_options()]
    labels = dict(app.model_options())
    labels[OTHER] = "Other: a local directory, an HF cache id, or a .gguf file…"
    current = getattr(view, field)
    choice_key, path_key = f"w_{field}_choice", f"w_{field}_path"

    def on_choice() -> None:
        picked = st.session_state.get(choice_key)
        if picked is None:  # dropped by a rerun meanwhile
            return
        if picked != OTHER:
            setattr(view, field, picked)
        else:
            setattr(view, field, st.session_state.get(path_key) or "")
        _clear(view, which)

    def on_path() -> None:
        setattr(view, field, (st.session_state.get(path_key) or "").strip())
        _clear(view, which)

    st.session_state[choice_key] = current if current in options else OTHER
    target.selectbox(label, options + [OTHER], format_func=lambda n: labels.get(n, n), key=choice_key,
                     on_change=on_choice)
    if st.session_state[choice_key] == OTHER:
        st.session_state[path_key] = "" if current in options else current
        target.text_input("Model path, HF id or GGUF file", key=path_key, on_change=on_path,
                          placeholder="/path/to/model-dir · Qwen/Qwen2.5-1.5B · ~/models/x.gguf")
    bind(st.radio, dtype_field, "dtype", container=target, options=list(app.DTYPES),
         horizontal=True, clears_run=(which == "a"), clears_run_b=(which == "b"),
         help="bfloat16 halves the weights' memory; its speed depends on the processor (fast with AMX or "
              "AVX512-BF16 and on GPUs, emulated and slow otherwise: the estimate before a run uses the rate measured "
              "on this server). float32 matches the papers' reductions best.")


def _clear(view: app.ViewState, which: str) -> None:
    if which == "a":
        view.run = None
        view.pos = None
    else:
        view.run_b = None


def prompt_input(view: app.ViewState, container=None, height: int = 110, continuation: bool = False) -> None:
    """The examples, the benchmark-item picker, the prompt and the chat-template switch; ``continuation``
    adds the choice to let the model continue the prompt before the probes read it (Explore)."""
    target = container or st
    examples = list(app.EXAMPLES)
    example_key = "w_example"

    def on_example() -> None:
        picked = st.session_state.get(example_key)
        if picked in app.EXAMPLES:
            view.prompt = app.EXAMPLES[picked]
            view.run = None
            view.run_b = None
            view.pos = None

    current = next((k for k, v in app.EXAMPLES.items() if v == view.prompt), None)
    st.session_state[example_key] = current
    target.selectbox("Examples", examples, key=example_key, on_change=on_example,
                     placeholder="Pick a ready example…")
    item_picker(view, target)
    bind(st.text_area, "prompt", "Prompt (teacher-forced: question and answer together)", container=target,
         height=height, clears_run=True, clears_run_b=True,
         help="The text is fed to the model as is (no chat template unless switched on); nothing is generated "
              "unless the model is let to continue it.")
    if continuation:
        trace_file(target)
    bind(st.toggle, "chat", "Apply the chat template", container=target, clears_run=True, clears_run_b=True,
         help="Off in both papers. With a template, ED values are not comparable to the papers' tables.")
    if continuation:
        bind(st.select_slider, "generate", "Let the model continue (new tokens)", container=target,
             options=list(app.GENERATE_CHOICES), clears_run=True,
             format_func=lambda n: "no" if n == 0 else str(n),
             help="The model writes this many tokens after the prompt (greedy), then the probes read prompt + "
                  "continuation; the boundary is marked on every layer × token chart.")
        if view.generate:
            bind(st.number_input, "sample_seed", "Sample with seed (0: greedy)", container=target, clears_run=True,
                 min_value=0, max_value=2**31 - 1, step=1,
                 help="0 lets the model take its most likely token every time (greedy, as in the CLI's default). "
                      "Any other number samples the continuation with that seed, so it can be drawn again.")
            if view.sample_seed:
                bind(st.slider, "temperature", "Temperature", container=target, clears_run=True,
                     min_value=0.1, max_value=2.0, step=0.1)
        positions_input(target)


def positions_input(target, both: bool = False) -> None:
    """The measured positions (``both``: a change clears model B's run too, as in Compare)."""
    bind(st.text_input, "positions", "Measured positions", container=target, clears_run=True, clears_run_b=both,
         transform=lambda v: (v or "all").strip() or "all",
         help="all, last:N, A:B (positions A … B−1), from:A, stride:K or answer. The forward pass covers the "
              "whole text; every probe reads these positions only (its cost follows), and the heatmaps shade "
              "the others. Layer skipping skips the layer from the first of them on and draws its split "
              "points inside them; it, erasure and IG replay only this window, against the clean keys / "
              "values of the text before it.")


def trace_file(target) -> None:
    """A long trace from a file: a .txt file, or one line of a .jsonl file of {"prompt", "response"}; the
    button makes it the prompt (the file's text is shown as text, never rendered)."""
    uploaded = target.file_uploader("Or read a long trace from a file", type=["txt", "jsonl"], key="w_trace_file",
                                    max_upload_size=app.MAX_TRACE_FILE_MB,
                                    help="A .txt file is read as it is; a .jsonl file holds one trace per line as "
                                         '{"prompt": ..., "response": ...}, read as prompt + response.')
    if uploaded is None:
        return
    line = 1
    if uploaded.name.lower().endswith(".jsonl"):
        line = target.number_input("Line of the file", min_value=1, value=1, step=1, key="w_trace_line")
    try:
        trace = app.read_trace_file(uploaded.name, uploaded.getvalue(), int(line))
    except EffdepthError as err:
        target.error(app.md(str(err)), icon=":material/error:")
        return
    lines = f", line {int(line)} of {trace.n_lines}" if trace.n_lines > 1 or trace.prompt is not None else ""
    target.caption(f"{app.md(uploaded.name)}{lines}: {len(trace.text):,} characters.")
    target.button("Use this text as the prompt", key="w_trace_use", icon=":material/input:", on_click=set_view,
                  args=("prompt", trace.text))


def item_picker(view: app.ViewState, container=None) -> None:
    """Benchmark item → prompt: dataset + index; the prompt becomes the teacher-forced item (docs/SPEC.md §2)."""
    target = container or st
    item = app.current_item(view)
    names = list(app.ITEM_DATASETS)
    ds_key, idx_key = "w_item_dataset", "w_item_index"
    st.session_state[ds_key] = item.dataset if item is not None and item.dataset in names else None
    if item is not None:
        st.session_state[idx_key] = int(item.index)
    elif idx_key not in st.session_state:
        st.session_state[idx_key] = 0

    def on_pick() -> None:
        dataset = st.session_state.get(ds_key)
        if not dataset:
            return
        index = min(int(st.session_state.get(idx_key) or 0), app.item_size(dataset) - 1)
        picked = app.load_item(app.item_spec(dataset, index))
        view.prompt, view.item, view.answer = picked.text, app.item_spec(dataset, index), None
        view.run = view.run_b = view.pos = None

    left, right = target.columns([3, 2])
    left.selectbox("Benchmark item", names, format_func=app.ITEM_DATASETS.get, key=ds_key, on_change=on_pick,
                   placeholder="Dataset…", help="Question + gold answer, teacher-forced, in P1's format.")
    right.number_input("Index", min_value=0, step=1, key=idx_key, on_change=on_pick)


def demo_toggle(view: app.ViewState, container=None) -> None:
    target = container or st.sidebar
    if app.demo_locked():
        view.demo = True
        target.caption("Demo mode is locked on by this server (read-only, cache only).")
        return
    bind(st.toggle, "demo", "Demo mode (read-only, cache only)", container=target,
         help="For talks: every view reads the cache only; no model loads and no compute buttons.")
