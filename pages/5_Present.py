"""Present: a talk, one chart per screen in large type, the controls folded away; ← / → step through the slides,
and the URL holds the talk and the slide shown."""

import streamlit as st

from effdepth import app, charts, ui

#: larger type for a room: the page's text (the charts' fonts: charts.projector_spec)
_CSS = """<style>
[data-testid="stMainBlockContainer"] {padding-top: 3.5rem; max-width: 96vw;}
[data-testid="stMainBlockContainer"] h1, [data-testid="stMainBlockContainer"] h2 {font-size: 2.6rem;}
[data-testid="stMainBlockContainer"] p, [data-testid="stCaptionContainer"] {font-size: 1.35rem;}
</style>"""


def _step(view, slides: list, delta: int) -> None:
    view.slide = min(max(0, view.slide + delta), len(slides) - 1)


def _controls(view, slides: list) -> None:
    """Draws ← k / n → (the arrow keys press them)."""
    back, where, forward = st.columns([1, 6, 1], vertical_alignment="center")
    back.button("←", key="slide_back", shortcut="Left", disabled=view.slide == 0, on_click=_step,
                args=(view, slides, -1), help="Previous slide (←)")
    where.markdown(f"<div style='text-align:center;font-size:1.5rem'>{view.slide + 1} / {len(slides)}</div>",
                   unsafe_allow_html=True)
    forward.button("→", key="slide_next", shortcut="Right", disabled=view.slide >= len(slides) - 1,
                   on_click=_step, args=(view, slides, 1), help="Next slide (→)")


def _slide(run_store, slides: list, index: int) -> None:
    """Draws one slide: its title, its chart at the screen's width, one line under it."""
    shown = None
    with ui.guard():
        shown = app.slide_view(run_store, slides[index])
    if shown is None:
        st.warning(f"Slide {index + 1} ({app.md(slides[index].kind)}) names nothing in this cache.",
                   icon=":material/warning:")
        return
    st.header(app.md(shown.title))  # model names come from the cache: shown as text
    st.vega_lite_chart(charts.projector_spec(shown.chart), width="stretch", key=f"slide_chart_{index}")
    st.caption(app.md(shown.caption))


def main() -> None:
    """Draws the Present page: the talk of the URL (or one made from the cache) and the slide shown."""
    st.set_page_config(page_title="effdepth · Present", page_icon=":material/slideshow:", layout="wide",
                       initial_sidebar_state="collapsed")
    view = ui.state()
    ui.nav(view, "present")
    run_store = ui.store()
    if run_store is None:
        st.stop()
    st.html(_CSS)
    slides = app.parse_slides(view.slides)
    made = not slides
    asked = str(st.query_params.get("slides") or "")
    if made and asked.strip():  # the link's slides were all malformed (the URL parser left them out)
        st.warning(f"The link's slides ({app.md(asked[:80])}) name nothing this page can show: each is kind:ref, "
                   f"kind one of {', '.join(app.SLIDE_KINDS)}. Showing a talk made from the cache instead.",
                   icon=":material/link_off:")
    if made:
        with ui.guard():
            slides = app.default_talk(run_store)
    if not slides:
        st.info("Nothing to present: the cache holds no runs, sweeps or maps. Run `effdepth demo` to fill it, or "
                "add charts to a talk from Explore.", icon=":material/inbox:")
        st.stop()
    view.slide = min(view.slide, len(slides) - 1)
    _controls(view, slides)
    _slide(run_store, slides, view.slide)
    with st.expander("The slides of this talk"):
        st.caption(("A talk made from the cache (newest runs, every sweep, every map). " if made else "")
                   + "The page's link holds the talk and the slide: copy it to keep this talk.")
        for k, slide in enumerate(slides):
            st.caption(f"{k + 1}. {app.md(app.SLIDE_KINDS[slide.kind])} · {app.md(slide.ref)}")
    ui.sync_url(view)


main()
