"""Generate, then probe: the model continues a text, and the probes read text + continuation.

A long-CoT model is most interesting on its own reasoning. ``continue_text`` lets the loaded model write
``max_new_tokens`` tokens after the text (greedy by default; sampled when a seed is given), holding the
model alone (``turns.turn_on``), calling ``on_text`` with the continuation so far after every token. The
text the probes then read is exactly what the model saw and wrote: the prompt as the model got it (with
its chat template rendered, when asked) followed by the continuation, probed as raw text.

Continuations are cached as JSON files under ``<cache>/generations/``, keyed by the model's fingerprint,
the dtype, the text and the settings, so a second look (or Compare's other model reading the same text)
does not generate again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from effdepth import contract, turns
from effdepth.contract import Progress
from effdepth.errors import PromptError

MAX_NEW_TOKENS = contract.MAX_NEW_TOKENS  # a bound on the work one request can start


@dataclass(frozen=True)
class Generation:
    """A continuation: ``prompt`` is the text as the model got it (chat template rendered, if used)."""

    prompt: str
    text: str  # the continuation alone
    token_ids: tuple[int, ...]  # the new tokens
    prompt_tokens: int  # tokens of the prompt (where the continuation starts)
    settings: dict = field(default_factory=dict)  # max_new_tokens, sample, seed, temperature, chat_template
    exact: bool = True  # the probes' tokenisation of prompt + continuation gives back these very ids

    @property
    def n_new_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def full_text(self) -> str:
        """What the probes read: the prompt followed by the continuation."""
        return self.prompt + self.text

    def as_meta(self) -> dict:
        """The run's ``generation`` meta (and the JSON document's)."""
        return {"text": self.text, "token_ids": list(self.token_ids), "n_new_tokens": self.n_new_tokens,
                "settings": dict(self.settings), "exact": self.exact}

    def run_meta(self) -> dict:
        """What a run of ``full_text`` carries besides its own meta: the continuation and where it starts."""
        return {"generation": self.as_meta(), "prompt_tokens": self.prompt_tokens}


def settings_for(max_new_tokens: int, seed: int | None = None, temperature: float = 1.0,
                 chat_template: bool = False) -> dict:
    """The generation settings, checked (PromptError): greedy unless ``seed`` is given."""
    if not 1 <= int(max_new_tokens) <= MAX_NEW_TOKENS:
        raise PromptError(f"The model can continue by 1 to {MAX_NEW_TOKENS} tokens, not {max_new_tokens}.")
    if seed is not None and not float(temperature) > 0:
        raise PromptError(f"A sampled continuation needs a temperature above 0, not {temperature}.")
    return {"max_new_tokens": int(max_new_tokens), "sample": seed is not None,
            "seed": None if seed is None else int(seed),
            "temperature": None if seed is None else float(temperature), "chat_template": bool(chat_template)}


def cache_key(fingerprint: str, dtype: str, text: str, settings: dict) -> str:
    payload = json.dumps({"fingerprint": fingerprint, "dtype": dtype, "text": text, "settings": settings},
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def directory_for(store) -> Path:
    """Continuations live beside the result cache they were probed for."""
    return Path(store.path).parent / "generations"


def cached_or_written(directory: Path | None, key: str, write: Callable[[], Generation]) -> Generation:
    """The continuation cached under ``key``, else ``write()``, saved there (``directory`` None: no cache)."""
    found = cached(directory, key) if directory is not None else None
    if found is not None:
        return found
    generation = write()
    if directory is not None:
        save(directory, key, generation)
    return generation


def cached(directory: Path, key: str) -> Generation | None:
    """The cached continuation of ``key`` (None when there is none, or the file is unreadable)."""
    path = directory / f"{key}.json"
    try:
        data = json.loads(path.read_text())
        return Generation(prompt=data["prompt"], text=data["text"], token_ids=tuple(data["token_ids"]),
                          prompt_tokens=int(data["prompt_tokens"]), settings=data["settings"],
                          exact=bool(data.get("exact", True)))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save(directory: Path, key: str, generation: Generation) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{key}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(asdict(generation)))
    tmp.replace(directory / f"{key}.json")


def continue_text(loaded, text: str, settings: dict, on_text: Callable[[str], None] | None = None,
                  progress: Progress | None = None) -> Generation:
    """Let the model continue ``text`` (see the module docstring); ``settings`` from :func:`settings_for`.
    ``progress`` hears "the model writes N tokens" with the share written after every token."""
    import torch

    from effdepth import engine

    engine.check_text(text)
    ids = engine.tokenize(loaded, text, settings["chat_template"])  # [T]
    prompt = loaded.tokenizer.decode(ids.tolist(), skip_special_tokens=False) if settings["chat_template"] else text
    if settings["chat_template"] and loaded.add_bos and prompt.startswith(loaded.bos_token or "\0"):
        prompt = prompt[len(loaded.bos_token):]  # the tokenizer adds it again when the probes read the text
    streamer = _Streamer(loaded.tokenizer, on_text, progress, settings["max_new_tokens"]) \
        if on_text or progress else None
    eos = loaded.tokenizer.eos_token_id
    kwargs = {"max_new_tokens": settings["max_new_tokens"], "do_sample": settings["sample"],
              "pad_token_id": eos if eos is not None else 0, "streamer": streamer}
    if settings.get("min_new_tokens"):  # EOS held back until then (a benchmark's long chains of thought)
        kwargs["min_new_tokens"] = int(settings["min_new_tokens"])
    if settings["sample"]:
        torch.manual_seed(settings["seed"])
        kwargs.update(temperature=settings["temperature"], top_k=0, top_p=1.0)
    else:
        kwargs.update(temperature=None, top_k=None, top_p=None)
    with turns.turn_on(loaded.model), torch.no_grad():
        out = loaded.model.generate(input_ids=ids[None], attention_mask=torch.ones_like(ids)[None], **kwargs)
    new = out[0, ids.numel():].tolist()
    continuation = _continuation(loaded.tokenizer, ids.tolist(), new)
    generation = Generation(prompt=prompt, text=continuation, token_ids=tuple(new), prompt_tokens=int(ids.numel()),
                            settings=dict(settings))
    read = engine.tokenize(loaded, generation.full_text, False).tolist()
    return dataclasses.replace(generation, exact=read == ids.tolist() + new)


def _continuation(tokenizer, prompt_ids: list[int], new_ids: list[int]) -> str:
    """The continuation as text, with the separator the tokenizer puts between prompt and continuation
    (a word-level tokenizer joins words with spaces; byte-level BPE carries them in the tokens)."""
    base = tokenizer.decode(prompt_ids, skip_special_tokens=True)
    full = tokenizer.decode(prompt_ids + new_ids, skip_special_tokens=True)
    return full[len(base):] if full.startswith(base) else tokenizer.decode(new_ids, skip_special_tokens=True)


class _Streamer:
    """The transformers streamer protocol (put / end): the continuation so far after every new token."""

    def __init__(self, tokenizer, on_text: Callable[[str], None] | None, progress: Progress | None, n_new: int):
        self.tokenizer, self.on_text, self.progress, self.n_new = tokenizer, on_text, progress, n_new
        self.ids, self.prompt_seen = [], False

    def put(self, value) -> None:
        if not self.prompt_seen:  # generate() first puts the prompt itself
            self.prompt_seen = True
            return
        self.ids += value.reshape(-1).tolist()
        if self.progress:
            self.progress(f"the model writes {self.n_new} tokens", len(self.ids) / self.n_new)
        if self.on_text:
            self.on_text(self.tokenizer.decode(self.ids, skip_special_tokens=True))

    def end(self) -> None:
        return None
