"""Generate, then probe, for a page: the cached continuation of a view's text, or the model writes it (its
tokens handed to the page as they come), then the probes run on text + continuation."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from effdepth import generate
from effdepth.app.inputs import check_prompt, config_for, resolve
from effdepth.app.running import compute_run
from effdepth.contract import Progress
from effdepth.models.holder import ModelHolder


def generations_dir(store) -> Path:
    """Continuations live beside the result cache they were probed for."""
    return Path(store.path).parent / "generations"


def cached_generation(store, name: str, text: str, dtype: str, chat: bool, n_new: int) -> generate.Generation | None:
    """The stored continuation of this text by this model (greedy, ``n_new`` tokens), without loading it."""
    settings = generate.settings_for(n_new, chat_template=chat)
    key = generate.cache_key(resolve(name).fingerprint, dtype, check_prompt(text), settings)
    return generate.cached(generations_dir(store), key)


def continue_and_compute(store, name: str, text: str, dtype: str, chat: bool, n_new: int, holder: ModelHolder,
                         progress: Progress | None = None, on_text: Callable[[str], None] | None = None,
                         on_result: Callable | None = None, positions: str = "all"):
    """(Generation, RunResult): the model continues ``text`` by ``n_new`` tokens (greedy; cached), then the
    probes read text + continuation as raw text (a chat template is already rendered into it)."""
    text = check_prompt(text)
    store.check_writable()  # neither the continuation nor the run is computed for a cache that cannot keep them
    settings = generate.settings_for(n_new, chat_template=chat)
    generation = cached_generation(store, name, text, dtype, chat, n_new)
    if generation is None:
        notify = progress or (lambda stage, frac=None: None)
        with holder.lease(name, dtype, notify) as loaded:
            notify(f"the model writes {n_new} tokens", 0.0)
            written = {"n": 0}

            def heard(so_far: str) -> None:
                written["n"] += 1
                notify(f"the model writes {n_new} tokens", written["n"] / n_new)
                if on_text:
                    on_text(so_far)

            generation = generate.continue_text(loaded, text, settings, on_text=heard)
            key = generate.cache_key(loaded.spec.fingerprint, loaded.dtype, text, settings)
            generate.save(generations_dir(store), key, generation)
    extra = {"generation": generation.as_meta(), "prompt_tokens": generation.prompt_tokens}
    result = compute_run(store, name, generation.full_text, dtype, False, holder, progress,
                         config=config_for(positions=positions), on_result=on_result, extra_meta=extra)
    return generation, result
