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

from effdepth.contract import DEFAULT_PROBES, DEFAULT_SWEEP_N, DEFAULT_SWEEP_PROBES, Progress
from effdepth.errors import PromptError
from effdepth.models.holder import ModelHolder

_HOLDER = ModelHolder()


@dataclass
class Run:
    """One run of the probes on one model and text: its tables, its EDs and its charts."""

    result: object  # engine.RunResult
    from_cache: bool
    segment_size: int | None = None  # ``probe(..., segments=N)``: the default of ``segments()``
    generation: object | None = None  # ``effdepth.generate``: the model's continuation the run read

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
    import dataclasses

    from effdepth import engine, models
    from effdepth.compute import Request, check_fits

    unknown = sorted(set(options) - _CONFIG_OPTIONS)
    if unknown:
        raise PromptError(f"effdepth.probe() takes no option {', '.join(map(repr, unknown))}; its options are "
                          f"{', '.join(sorted(_CONFIG_OPTIONS | {'probes', 'dtype', 'chat_template', 'answer'}))}, "
                          "cache, progress and segments.")
    if segments is not None and (not isinstance(segments, int) or segments < 2):
        raise PromptError(f"segments is a number of positions, at least 2, not {segments!r}.")
    config = engine.ProbeConfig(probes=probes, answer=answer, **options)
    if any(p in config.probes for p in engine.ANSWER_PROBES) and config.answer is None and isinstance(text, str):
        config = dataclasses.replace(config, answer=engine.answer_span(None, None, text))  # as the CLI and the app
    store = None if cache is False else _store(cache)
    loaded = isinstance(model, models.LoadedModel)
    request = Request(text, model.dtype if loaded else dtype, chat_template, config)
    if not loaded:
        check_fits(request, models.resolve_model(model))
    result, from_cache = _compute(model, request, store, progress)
    return Run(result, from_cache=from_cache, segment_size=segments)


def _cache_path(cache) -> str:
    """A cache file the caller named: its folder must exist (a typo is not silently created)."""
    from pathlib import Path

    if isinstance(cache, bool) or not isinstance(cache, (str, os.PathLike)):
        raise PromptError(f"cache is True (the project cache), False (none) or a file path, not {cache!r}.")
    path = Path(cache).expanduser()
    if not path.parent.is_dir():
        raise PromptError(f"The cache folder {path.parent} does not exist; create it, or give another file.")
    return str(path)


def generate(model, text: str, new_tokens: int, *, seed: int | None = None, temperature: float = 1.0,
             chat_template: bool = False, probes: Sequence[str] = DEFAULT_PROBES, dtype: str = "float32",
             cache: bool | str | os.PathLike = True, progress: Progress | None = None, on_text=None,
             segments: int | None = None, **options) -> Run:
    """Let ``model`` continue ``text`` by ``new_tokens`` tokens (greedy, or sampled with ``seed`` at
    ``temperature``; with the chat template rendered where asked), then run the probes on text + continuation:
    the flow of ``effdepth probe --generate`` and Explore's "Let the model continue", cached alike.
    ``on_text(so_far)`` hears the continuation as it is written; ``run.generation`` is what it wrote."""
    from effdepth import engine, models
    from effdepth import generation as generating
    from effdepth.compute import Request, continuation, reading

    if isinstance(model, models.LoadedModel):
        raise PromptError("effdepth.generate takes a model name or path (it holds the model between calls).")
    unknown = sorted(set(options) - _CONFIG_OPTIONS)
    if unknown:
        raise PromptError(f"effdepth.generate() takes no option {', '.join(map(repr, unknown))}.")
    config = engine.ProbeConfig(probes=probes, answer=options.pop("answer", None), **options)
    request = Request(text, dtype, chat_template, config)
    settings = generating.settings_for(new_tokens, seed, temperature, chat_template)
    spec = models.resolve_model(model)
    store = None if cache is False else _store(cache)
    written = continuation(store, request, settings, lambda notify: _HOLDER.lease(str(model), request.dtype, notify),
                           spec.fingerprint, progress=progress, on_text=on_text)
    read = reading(request, written, answer_given=config.answer is not None)
    run = _compute(model, read, store, progress)
    return Run(run[0], from_cache=run[1], segment_size=segments, generation=written)


@dataclass
class Sweep:
    """A sweep's runs (one per item, in item order) and what they say together."""

    run_ids: list[str]
    store: object  # effdepth.store.Store
    failed: list  # (item, error) of the items that could not be probed

    def ed(self, how: str = "token", n_boot: int = 1000) -> pd.DataFrame:
        """ED / EDR of the aggregate curves with 95 % bootstrap intervals over items (``token``: P1's token
        weighting, ``prompt``: P2's per-prompt mean)."""
        from effdepth import sweeps

        frames, counts = sweeps.collect(self.store, self.run_ids)
        return sweeps.bootstrap_ci(frames, counts, how=how, n_boot=n_boot).ed

    def segments(self, size: int, n_boot: int = 1000) -> pd.DataFrame:
        """The EDR per segment index of ``size`` measured positions along the items (``sweeps.segments_over_items``)."""
        from effdepth import sweeps

        return sweeps.segments_over_items({r: self.store.table(r, "layer_token") for r in self.run_ids}, size, n_boot)

    def run(self, index: int) -> Run:
        """The ``index``-th item's run."""
        return Run(self.store.get(self.run_ids[index]), from_cache=True)


def sweep(model, dataset: str | None = None, *, jsonl: str | os.PathLike | None = None, n: int = DEFAULT_SWEEP_N,
          start: int = 0, probes: Sequence[str] = DEFAULT_SWEEP_PROBES, dtype: str = "float32",
          cache: bool | str | os.PathLike = True, max_tokens: int | None = None, progress: Progress | None = None,
          **options) -> Sweep:
    """Run the probes on ``n`` items of a built-in ``dataset`` (or of a ``jsonl`` file of {"prompt", "answer"}),
    each cached (a second call computes only what is missing): the flow of ``effdepth sweep`` and of the
    Difficulty page, with their defaults. AIME items keep P1's 400-token filter, every item the model's context."""
    from effdepth import datasets, engine, sweeps
    from effdepth.errors import EffdepthError

    unknown = sorted(set(options) - _CONFIG_OPTIONS)
    if unknown:
        raise PromptError(f"effdepth.sweep() takes no option {', '.join(map(repr, unknown))}.")
    if (dataset is None) == (jsonl is None):
        raise PromptError("effdepth.sweep takes a built-in dataset name or a jsonl file, one of the two.")
    config = engine.ProbeConfig(probes=probes, **options)
    dtype = _dtype_name(dtype)
    if jsonl is not None:
        items = datasets.load_jsonl(jsonl).items[start:start + n]
    else:
        items = datasets.items(dataset, n=n, start=start)
    if cache is False:
        raise PromptError("A sweep stores every item's run: give cache=True (the project cache) or a file path.")
    store = _store(cache)
    failed: list = []
    with _HOLDER.lease(str(model), dtype, progress or (lambda *a: None)) as loaded:
        items, _dropped, _limit = datasets.sweep_filter(items, loaded.tokenizer, dataset, max_tokens,
                                                        loaded.max_context)
        ids = sweeps.sweep(str(model), items, store, config, dtype, progress=progress or (lambda *a: None),
                           load=lambda *a, **k: loaded, skip_errors=(EffdepthError,), failed=failed)
    return Sweep(ids, store, failed)


def _dtype_name(dtype) -> str:
    from effdepth.contract import dtype_name

    try:
        return dtype_name(dtype)
    except ValueError as err:
        raise PromptError(f"The {err}.") from None


def _store(cache):
    from effdepth.store import Store

    return Store(None if cache is True else _cache_path(cache))


def _compute(model, request, store, progress):
    """(RunResult, from_cache) of a request on a model name (held between calls) or a loaded model."""
    from contextlib import nullcontext

    from effdepth import models
    from effdepth.compute import compute

    if isinstance(model, models.LoadedModel):
        return compute(store, request, lambda notify: nullcontext(model), fingerprint=model.spec.fingerprint,
                       progress=progress)
    spec = models.resolve_model(model)
    return compute(store, request, lambda notify: _HOLDER.lease(str(model), request.dtype, notify),
                   fingerprint=spec.fingerprint, progress=progress)


#: the ``engine.ProbeConfig`` options ``probe`` passes on
_CONFIG_OPTIONS = {"splits", "seed", "skip_variants", "ig_steps", "ig_parts", "positions"}
