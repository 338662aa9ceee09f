"""Generate, then probe, for a page: the cached continuation of a view's text, or the model writes it (its
tokens handed to the page as they come), then the probes run on text + continuation."""

from __future__ import annotations

from collections.abc import Callable

from effdepth import generation as generate
from effdepth.app.inputs import check_prompt, config_for, resolve
from effdepth.app.running import compute_run
from effdepth.contract import Progress
from effdepth.models.holder import ModelHolder


def cached_generation(store, name: str, text: str, dtype: str, chat: bool, n_new: int, seed: int | None = None,
                      temperature: float = 1.0) -> generate.Generation | None:
    """The stored continuation of this text by this model (``n_new`` tokens; greedy, or sampled with ``seed``
    at ``temperature``), without loading it."""
    _, key = _settings_and_key(name, dtype, check_prompt(text), chat, n_new, seed, temperature)
    return generate.cached(generate.directory_for(store), key)


def _settings_and_key(name: str, dtype: str, text: str, chat: bool, n_new: int, seed: int | None,
                      temperature: float) -> tuple[dict, str]:
    """The continuation's settings and its cache key (model fingerprint, dtype, text, settings)."""
    settings = generate.settings_for(n_new, seed, temperature, chat)
    return settings, generate.cache_key(resolve(name).fingerprint, dtype, text, settings)


def continue_and_compute(store, name: str, text: str, dtype: str, chat: bool, n_new: int, holder: ModelHolder,
                         progress: Progress | None = None, on_text: Callable[[str], None] | None = None,
                         on_result: Callable | None = None, positions: str = "all", seed: int | None = None,
                         temperature: float = 1.0):
    """(Generation, RunResult): the model continues ``text`` by ``n_new`` tokens (greedy, or sampled with
    ``seed``; cached), then the probes read text + continuation as raw text (a chat template is already
    rendered into it)."""
    from effdepth.compute import Request, continuation, reading

    request = Request(check_prompt(text), dtype, chat, config_for(positions=positions))
    settings = generate.settings_for(n_new, seed, temperature, chat)
    generation = continuation(store, request, settings, lambda notify: holder.lease(name, dtype, notify),
                              resolve(name).fingerprint, progress=progress, on_text=on_text)
    read = reading(request, generation, answer_given=False)
    result = compute_run(store, name, read.text, read.dtype, False, holder, progress, config=read.config,
                         on_result=on_result, extra_meta=dict(read.extra_meta))
    return generation, result


def continuation_start(meta) -> int | None:
    """Where a run's model-written continuation starts, in its tokens (None for a text the user gave whole,
    or one another model wrote with another tokenizer)."""
    return int(meta["prompt_tokens"]) if meta.get("generation") and meta.get("prompt_tokens") else None


def reader_meta(generation: generate.Generation, writer: str, reader: str) -> dict:
    """The meta of a run in which ``reader`` reads what ``writer`` wrote ("A thinks, both read" in Compare):
    the continuation and its writer; where it starts only when both tokenise alike (else its token index
    would be the writer's, not the reader's)."""
    meta = {"generation": {**generation.as_meta(), "written_by": writer}}
    if writer == reader or resolve(writer).tokenizer_id == resolve(reader).tokenizer_id:
        meta["prompt_tokens"] = generation.prompt_tokens
    return meta
