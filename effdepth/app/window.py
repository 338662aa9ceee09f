"""The window a page proposes for a long text: past ``WINDOW_FROM_TOKENS`` tokens, measure the last
``WINDOW`` positions, with what a full run and the windowed one would cost (``effdepth.estimate``)."""

from __future__ import annotations

from dataclasses import dataclass

from effdepth import estimate

#: a text longer than this (in tokens) on "all" positions gets the proposal
WINDOW_FROM_TOKENS = 512
WINDOW = 256
#: characters per token when no tokenizer is at hand (the model is not loaded yet): English text with
#: these tokenizers runs 3.5–4.5 characters a token
CHARS_PER_TOKEN = 4.0


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
        return text + " Layer skipping then measures the window too, but its replay still runs the whole text."


def window_proposal(text: str, positions: str, shape: tuple[int, int, int] | None,
                    n_tokens: int | None = None) -> WindowProposal | None:
    """The proposal for ``text`` measured at ``positions``, or None (short text, or a window is set).

    ``shape``: (layers, d_model, vocabulary) of the model, if known; ``n_tokens``: the exact count, if a
    tokenizer is at hand (else it is estimated from the characters)."""
    if (positions or "all").strip().lower() != "all":
        return None
    exact = n_tokens is not None
    count = n_tokens if exact else round(len(text) / CHARS_PER_TOKEN)
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
