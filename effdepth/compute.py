"""One way to compute a run, shared by the CLI, the Python API and the app.

The steps, in order: check the input before any model loads (text, answer span), look in the cache
with the key the model's cheap fingerprint gives, check that the cache can take a result before any
work, take the model (a turn on the app's held model, or a plain load), look again (another session
may have stored the same input meanwhile), run the probes, store the result. A stopped run can keep
the probes that finished (the app asks for it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from effdepth import contract, engine
from effdepth.contract import Progress
from effdepth.errors import PromptError


@dataclass(frozen=True)
class Request:
    """What to compute: one text on one model, with one probe configuration."""

    text: str
    dtype: str = "float32"
    chat_template: bool = False
    config: engine.ProbeConfig = field(default_factory=engine.ProbeConfig)
    extra_meta: Mapping[str, Any] | None = None  # e.g. a benchmark item's dataset and index

    def __post_init__(self) -> None:
        """The dtype by its canonical name before any key is built (``bf16`` finds the ``bfloat16`` runs)."""
        try:
            object.__setattr__(self, "dtype", contract.dtype_name(self.dtype))
        except ValueError as err:
            raise PromptError(f"The {err}.") from None
        if not isinstance(self.chat_template, bool):
            raise PromptError(f"chat_template is True or False, not {self.chat_template!r}.")

    def key(self, fingerprint: str) -> str:
        """The run id this request is stored under for a model of that fingerprint."""
        return engine.run_key(fingerprint, self.text, self.dtype, self.config, self.chat_template)


#: A model source: called with the progress callback, gives a context manager holding the loaded model
#: for the run (``ModelHolder.lease`` for the app and the API, a plain load for the CLI).
TakeModel = Callable[[Progress], AbstractContextManager]


def check(request: Request) -> None:
    """Refuse bad input before any model loads (``PromptError`` saying what to change)."""
    engine.check_text(request.text)
    if any(p in request.config.probes for p in engine.ANSWER_PROBES):
        engine.check_answer(request.text, request.config.answer, request.chat_template)


def check_fits(request: Request, spec) -> None:
    """Before any weights load: the text against the model's context, and a range of measured positions
    (``A:B``) against the text (PromptError). Reads the tokenizer alone, and only where it loads cheaply and
    the question arises (a range, or a text that may pass the context); otherwise the run says it at load."""
    from effdepth import estimate, models, positions

    check(request)
    context = models.context_of(spec)
    long = context is not None and len(request.text) / estimate.CHARS_PER_TOKEN > context / 2
    if positions.span(request.config.positions) is None and not long:
        return
    tokenizer = models.load_tokenizer(spec)
    if tokenizer is None:
        return
    ids = engine.encode(tokenizer, request.text, request.chat_template, spec.name)
    if context is not None:
        engine.check_length(tokenizer, request.text, request.chat_template, len(ids), context, spec.name)
    if positions.span(request.config.positions) is not None:
        positions.select(request.config.positions, len(ids))


def compute(store, request: Request, take_model: TakeModel, *, fingerprint: str | None = None,
            progress: Progress | None = None, keep_partial: bool = False,
            on_result: Callable[[Any], None] | None = None, reuse=None) -> tuple[Any, bool]:
    """(RunResult, from_cache) for ``request``; ``store`` None computes without the cache.

    ``fingerprint``: the model's fingerprint when it is known without loading it, so that a cached run
    loads nothing. ``keep_partial``: a stopped run stores the probes that had finished (see
    ``engine.run_probes``: the stop carries them as ``partial_result``) and names them in ``err.kept``.
    ``on_result`` hears the run after each probe; ``reuse``: an earlier run whose matching probes are taken
    instead of computed (both go to ``engine.run_probes``).
    """
    check(request)
    notify = progress or _quiet
    if store is not None:
        if fingerprint is not None:
            cached = store.get(request.key(fingerprint))
            if cached is not None:
                return cached, True
        store.check_writable()  # a result that cannot be stored is not computed
    with take_model(notify) as loaded:
        if request.dtype != loaded.dtype:  # the loader's canonical name (bf16 -> bfloat16)
            request = dataclasses.replace(request, dtype=loaded.dtype)
        key = request.key(loaded.spec.fingerprint)
        if reuse is None and store is not None:
            reuse = stored_probes(store, request, loaded)

        def run():
            return engine.run_probes(loaded, request.text, request.config, request.chat_template, progress=notify,
                                     derived_dir=None if store is None else Path(store.path).parent,
                                     extra_meta=dict(request.extra_meta) if request.extra_meta else None,
                                     on_result=on_result, reuse=reuse)

        if store is None:
            return run(), False
        try:
            return store.get_or_compute(key, run)
        except BaseException as err:  # a stop (button, closed tab, Ctrl-C): keep what finished if asked
            if keep_partial:
                _keep_partial(store, err)
            raise


def continuation(store, request: Request, settings: dict, take_model: TakeModel, fingerprint: str,
                 progress: Progress | None = None, on_text: Callable[[str], None] | None = None):
    """The model's continuation of the request's text with ``settings`` (``generate.settings_for``), cached
    beside ``store`` (None: not cached): the one generate step of the CLI, the app and the API. A cache that
    could not keep the run is refused before a token is written."""
    from effdepth import generation as generate

    check(Request(request.text, request.dtype, request.chat_template))
    if store is not None:
        store.check_writable()
    key = generate.cache_key(fingerprint, request.dtype, request.text, settings)

    def write():
        with take_model(progress or _quiet) as loaded:
            return generate.continue_text(loaded, request.text, settings, on_text=on_text, progress=progress)

    return generate.cached_or_written(None if store is None else generate.directory_for(store), key, write)


def reading(request: Request, generation, answer_given: bool) -> Request:
    """The request that probes text + the model's continuation (raw text: a chat template is rendered in it);
    without an answer given, erasure / IG measure the continuation's last word."""
    extra = {**(request.extra_meta or {}), **generation.run_meta()}
    config = request.config
    if any(p in config.probes for p in engine.ANSWER_PROBES) and not answer_given:
        config = dataclasses.replace(config, answer=engine.answer_span(None, None, generation.full_text))
    return Request(generation.full_text, request.dtype, False, config, extra)


def stored_probes(store, request: Request, loaded):
    """The stored run of this model, dtype and text that holds the most of the requested probes with the
    same options (``stages.reusable``), or None: its probes are taken, the others computed."""
    from effdepth import stages

    best, best_count = None, 0
    try:
        candidates = store.same_input(loaded.spec.fingerprint, loaded.dtype, engine.prompt_hash(request.text),
                                      request.chat_template)
        for run_id in candidates[:20]:  # newest first; a text is rarely run in more configurations
            meta = store.meta(run_id)
            if meta is None:
                continue
            count = len(stages.reusable_from_meta(meta, request.config, loaded, request.text,
                                                  request.chat_template))
            if count > best_count:
                best, best_count = run_id, count
        return store.get(best) if best is not None else None
    except Exception:  # noqa: BLE001 - a cache that cannot say is no reason not to compute
        return None


def _quiet(stage: str, frac: float | None = None) -> None:
    return None


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
