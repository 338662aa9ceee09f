"""The Python face of effdepth, for notebooks: ``effdepth.probe(model, text)`` → a :class:`Run`.

    import effdepth
    run = effdepth.probe("smollm2-135m", "The spouse of the performer of Imagine is Yoko Ono, and "
                         "the capital of France is Paris.")
    run.ed                       # ED / EDR per probe and rule (pandas)
    run.tables["layer_token"]    # tidy per layer × token values
    run.curve("cosine")          # Altair charts: they render inline in Jupyter
    run.heatmap("kl"); run.skip_matrix("future")

Runs go through the same cache as the CLI and the app (``cache=False`` computes without it), and the
model stays loaded between calls (one at a time, as in the app; changed weights are reloaded).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from effdepth.contract import DEFAULT_PROBES, Progress
from effdepth.errors import PromptError
from effdepth.models.holder import ModelHolder

_HOLDER = ModelHolder()


@dataclass
class Run:
    """One run of the probes on one model and text: its tables, its EDs and its charts."""

    result: object  # engine.RunResult
    from_cache: bool
    segment_size: int | None = None  # ``probe(..., segments=N)``: the default of ``segments()``

    @property
    def run_id(self) -> str:
        return self.result.run_id

    @property
    def meta(self) -> dict:
        """Model, text, tokens, probe configuration, timings and the run's own checks."""
        return self.result.meta

    @property
    def tables(self) -> dict[str, pd.DataFrame]:
        """The long tables (effdepth.contract.TABLES): tokens, layer_token, layer, skip, skip_output, ..."""
        return self.result.tables

    @property
    def ed(self) -> pd.DataFrame:
        """ED and EDR per probe (cosine, kl, overlap, skip) and rule (p1, guarded, proposed)."""
        return self.tables["ed"]

    def curve(self, probe: str = "cosine"):
        """The per-layer curve of one ED probe (cosine, kl, overlap, skip) with its ED marked."""
        from effdepth import charts

        return charts.probe_curve(self.tables["layer"], probe, self.ed)

    def heatmap(self, metric: str = "cos_layer"):
        """A layer × token heatmap of one metric of the layer_token table (cos_layer, rc_att, kl, ...)."""
        from effdepth import charts

        return charts.layer_token_heatmap(self.tables["layer_token"], self.tables["tokens"], metric, self.ed)

    def skip_matrix(self, variant: str = "future"):
        """The skip effect matrix of one variant with the output change beside it."""
        from effdepth import charts

        return charts.skip_chart(self.tables["skip"], self.tables["skip_output"], variant, self.ed)

    def segments(self, size: int | None = None, n_boot: int | None = None) -> pd.DataFrame:
        """ED / EDR of every rule per segment of ``size`` consecutive measured positions, with a bootstrap
        interval over each segment's positions (effective depth along a trace; ``sweeps.segments``)."""
        from effdepth import sweeps

        size = size or self.segment_size
        if not size or int(size) < 2:
            raise PromptError("Give the segment size: run.segments(256), or probe(..., segments=256); a segment "
                              "holds at least 2 positions.")
        return sweeps.segments(self.tables["layer_token"], int(size),
                               n_boot=sweeps.SEGMENT_BOOT if n_boot is None else int(n_boot))

    def segment_chart(self, size: int | None = None, rule: str = "p1"):
        """The EDR per segment along the trace (a line with its band per probe), boundaries marked."""
        from effdepth import charts, sweeps

        return charts.segment_chart(self.segments(size), rule, sweeps.boundaries(self.meta),
                                    n_tokens=int(self.meta["n_tokens"]))

    def _repr_html_(self) -> str:
        meta = self.meta
        head = (f"<b>{_html(meta.get('model_name'))}</b> · {meta.get('n_layers')} layers · "
                f"{meta.get('n_tokens')} tokens · run {self.run_id}{' (cached)' if self.from_cache else ''}")
        return head + self.ed[["probe", "rule", "ed", "edr"]].to_html(index=False)


def _html(text) -> str:
    import html

    return html.escape(str(text))


def probe(model, text: str, *, probes: Sequence[str] = DEFAULT_PROBES, dtype: str = "float32",
          chat_template: bool = False, answer: str | None = None, cache: bool | str | os.PathLike = True,
          progress: Progress | None = None, segments: int | None = None, **options) -> Run:
    """Run the probes on ``text`` with ``model`` and return the :class:`Run`.

    ``model``: an embedded name, a model directory, an HF cache id, a GGUF file, or a model already
    loaded with ``effdepth.models.load_model``. ``options`` go to ``engine.ProbeConfig`` (splits, seed,
    skip_variants, ig_steps, ig_parts, positions: e.g. ``"last:256"`` or ``"1000:1256"``). ``cache``: True (the
    project cache), a file path, or False. ``segments``: the default segment size of ``run.segments()``.
    Any text up to the model's context is taken. Bad input raises ``effdepth.errors.EffdepthError`` with a
    sentence saying what to do, before any work.
    """
    from contextlib import nullcontext

    from effdepth import engine, models
    from effdepth.compute import Request, check_fits, compute
    from effdepth.store import Store

    unknown = sorted(set(options) - _CONFIG_OPTIONS)
    if unknown:
        raise PromptError(f"effdepth.probe() takes no option {', '.join(map(repr, unknown))}; its options are "
                          f"{', '.join(sorted(_CONFIG_OPTIONS | {'probes', 'dtype', 'chat_template', 'answer'}))}, "
                          "cache, progress and segments.")
    if segments is not None and (not isinstance(segments, int) or segments < 2):
        raise PromptError(f"segments is a number of positions, at least 2, not {segments!r}.")
    config = engine.ProbeConfig(probes=tuple(probes), answer=answer, **options)
    store = None if cache is False else Store(None if cache is True else cache)
    if isinstance(model, models.LoadedModel):
        request = Request(text, model.dtype, chat_template, config)
        result, from_cache = compute(store, request, lambda notify: nullcontext(model),
                                     fingerprint=model.spec.fingerprint, progress=progress)
    else:
        request = Request(text, dtype, chat_template, config)
        spec = models.resolve_model(model)
        check_fits(request, spec)
        result, from_cache = compute(store, request, lambda notify: _HOLDER.lease(str(model), dtype, notify),
                                     fingerprint=spec.fingerprint, progress=progress)
    return Run(result, from_cache=from_cache, segment_size=segments)


#: the ``engine.ProbeConfig`` options ``probe`` passes on
_CONFIG_OPTIONS = {"splits", "seed", "skip_variants", "ig_steps", "ig_parts", "positions"}
