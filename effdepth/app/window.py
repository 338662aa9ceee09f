"""The window a page proposes for a long text: past ``WINDOW_FROM_TOKENS`` tokens, measure the last
``WINDOW`` positions, with what a full run and the windowed one would cost (``effdepth.estimate``)."""

from __future__ import annotations

from dataclasses import dataclass

from effdepth import estimate

#: a text longer than this (in tokens) on "all" positions gets the proposal
WINDOW_FROM_TOKENS = 512
WINDOW = 256


@dataclass(frozen=True)
class WindowProposal:
    """What the page says: the text's size, the two costs, and the positions to switch to."""

    n_tokens: int
    exact: bool  # counted by the model's tokenizer (else from the characters)
    positions: str  # the proposed spec, e.g. "last:256"
    full_cost: str | None  # estimate.describe of the probes over every position (None: shape unknown)
    window_cost: str | None

    @property
    def message(self) -> str:
        size = f"{self.n_tokens:,} tokens" if self.exact else f"about {self.n_tokens:,} tokens (from its length)"
        text = (f"This text has {size}. Every position is measured, so the logit lens decodes each one at every "
                f"layer. Measuring the last {WINDOW} positions (`{self.positions}`) keeps the forward pass over "
                "the whole text and decodes only those.")
        if self.full_cost and self.window_cost:
            text += f" Estimated: all positions {self.full_cost}; last {WINDOW}: {self.window_cost}."
        return text + (" Layer skipping, erasure and integrated gradients then work inside the window too: they "
                       "replay only it, against the clean keys / values of the text before it.")


def window_proposal(text: str, positions: str, shape: tuple[int, int, int] | None,
                    n_tokens: int | None = None, extra_tokens: int = 0) -> WindowProposal | None:
    """The proposal for ``text`` measured at ``positions``, or None (short text, or a window is set).

    ``shape``: (layers, d_model, vocabulary) of the model, if known; ``n_tokens``: the exact count, if a
    tokenizer is at hand (else it is estimated from the characters); ``extra_tokens``: the continuation the
    model writes first."""
    if (positions or "all").strip().lower() != "all":
        return None
    exact = n_tokens is not None and not extra_tokens
    count = (n_tokens if n_tokens is not None else round(len(text) / estimate.CHARS_PER_TOKEN)) + int(extra_tokens)
    if count <= WINDOW_FROM_TOKENS:
        return None
    full = window = None
    if shape is not None:
        n_layers, d_model, vocab = shape
        every = estimate.Shape(n_layers, d_model, vocab, count)
        last = estimate.Shape(n_layers, d_model, vocab, count, measured=WINDOW, first_measured=count - WINDOW)
        full = estimate.describe(every, ("logit_lens",))
        window = estimate.describe(last, ("logit_lens",))
    return WindowProposal(count, exact, f"last:{WINDOW}", full, window)


def model_shape(name: str) -> tuple[int, int, int] | None:
    """(layers, d_model, vocabulary) of a model name without loading it (None where it cannot be read
    cheaply: a GGUF outside the registry, a broken directory)."""
    from effdepth.arch import config_value
    from effdepth.models import resolve_model

    try:
        spec = resolve_model(name)
        if spec.embedded is not None:
            return spec.embedded.n_layers, spec.embedded.d_model, spec.embedded.vocab
        if spec.kind == "gguf":
            return None
        config = spec.config
        return int(config_value(config, "n_layers")), int(config_value(config, "d_model")), \
            int(config_value(config, "vocab_size"))
    except Exception:  # noqa: BLE001 - a proposal never stops the page (the run says what is wrong)
        return None


def run_cost(text: str, positions_spec: str, name: str, probes, dtype: str, extra_tokens: int = 0) -> str | None:
    """What the page says before a run: the text's size (from its characters), the estimated time of the
    forward pass and of each probe, and the peak memory (``effdepth.estimate``); past the model's context,
    that it will not fit. None where the model's shape is not known without loading it."""
    from effdepth import positions

    shape = model_shape(name)
    if shape is None:
        return None
    count = max(2, round(len(text) / estimate.CHARS_PER_TOKEN) + int(extra_tokens))
    try:
        selected = positions.select(positions_spec, count, 1)
    except Exception:  # noqa: BLE001 - a range past the estimated length: the run says what is wrong
        selected = list(range(count))
    windowed = len(selected) < count
    sizes = estimate.Shape(*shape, count, measured=len(selected) if windowed else None,
                           first_measured=selected[0] if windowed else 0,
                           last_measured=selected[-1] if windowed else None)
    said = (f"About {count:,} tokens (from its length): "
            + estimate.describe(sizes, probes, dtype=dtype, memory=True) + ".")
    context = model_context(name)
    if context is not None and count > context:
        said += f" That is past the model's context of {context:,} tokens: it will be refused."
    return said


def model_context(name: str) -> int | None:
    """The model's context in tokens without loading it (None where it cannot be read cheaply)."""
    from effdepth.arch import config_value
    from effdepth.models import resolve_model

    try:
        spec = resolve_model(name)
        if spec.embedded is not None:
            return spec.embedded.context
        if spec.kind == "gguf":
            return None
        value = config_value(spec.config, "max_context")
        return int(value) if value else None
    except Exception:  # noqa: BLE001 - an estimate never stops the page
        return None
