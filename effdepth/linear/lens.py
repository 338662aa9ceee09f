"""The linear shortcut lens (docs/SPEC.md §15.2): per layer l, an affine map from h_l to the same model's
final residual h_L, fitted in closed form on the shipped corpus and decoded with the model's own final
norm and unembedding.

The logit lens decodes h_l as if it already were h_L; early residuals are not in that basis, so the
lens reads them badly (tuned lens; Din et al. 2023, "Jump to Conclusions", fit these very maps). The
shortcut lens reads the same layers through the best linear guess of h_L. A fit is made once per model
weights, dtype and recipe (text, penalty, method), kept in memory and in ``<cache>/lenses/`` as
safetensors, with its held-out report: the mean KL(P_lens ‖ P_final) per layer under either lens.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from effdepth.arch import Taps
from effdepth.arch import taps as resolve_taps
from effdepth.contract import Progress
from effdepth.datasets import corpus
from effdepth.linear.collect import Rows, residual_rows, token_windows
from effdepth.ridge import DEFAULT_ALPHA, RidgeSums

LENS_VERSION = 1
#: held-out rows the report decodes per layer (the full vocabulary per row: a bound on its cost)
REPORT_ROWS = 512
FIT_STAGE = "fitting the shortcut lens"


def recipe(alpha: float = DEFAULT_ALPHA, max_tokens: int | None = None) -> str:
    """The fit's name in a run's cache key: the text, the token budget, the penalty and the method."""
    tokens = "all" if max_tokens is None else str(int(max_tokens))
    return f"{corpus.corpus_id()}:tokens={tokens}:alpha={alpha:g}:v{LENS_VERSION}"


@dataclass
class ShortcutLens:
    """weight [L, d, d] and bias [L, d]: layer l's map h_l -> ĥ_L; ``meta`` says what was fitted and how well."""

    weight: torch.Tensor
    bias: torch.Tensor
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        n_layers, d_model = self.bias.shape
        if self.weight.shape != (n_layers, d_model, d_model):
            raise ValueError(f"weight has shape {tuple(self.weight.shape)}, expected {(n_layers, d_model, d_model)}")

    @property
    def n_layers(self) -> int:
        return self.bias.shape[0]

    def transform(self, rows: torch.Tensor, layers: torch.Tensor) -> torch.Tensor:
        """ĥ_L of residual rows [n, d] entering ``layers`` [n] -> [n, d]."""
        out = torch.empty_like(rows, dtype=self.weight.dtype)
        for layer in torch.unique(layers).tolist():
            mask = layers == layer
            out[mask] = torch.addmm(self.bias[layer], rows[mask].to(self.weight.dtype), self.weight[layer])
        return out


def _kl_to_final(z: torch.Tensor, final_logp: torch.Tensor) -> torch.Tensor:
    """KL(softmax(z) ‖ P_final) per row, as the logit lens measures it."""
    logp = torch.log_softmax(z, dim=-1)
    return (logp.exp() * (logp - final_logp)).sum(-1)


@torch.no_grad()
def held_out_kl(lens: ShortcutLens, held: Rows, model_taps: Taps,
                rows: int = REPORT_ROWS) -> dict[str, list[float]]:
    """{"logit": [L], "shortcut": [L]}: the mean KL to the model's output over ≤ ``rows`` held-out rows."""
    index = torch.linspace(0, held.n_rows - 1, min(rows, held.n_rows)).round().long().unique()
    final_logp = torch.log_softmax(model_taps.to_logits(held.layer(-1)[index]), dim=-1)
    report: dict[str, list[float]] = {"logit": [], "shortcut": []}
    for layer in range(lens.n_layers):
        h = held.layer(layer)[index]
        shortcut = lens.transform(h, torch.full((len(index),), layer))
        report["logit"].append(float(_kl_to_final(model_taps.to_logits(h), final_logp).mean()))
        report["shortcut"].append(float(_kl_to_final(model_taps.to_logits(shortcut), final_logp).mean()))
    return report


@torch.no_grad()
def fit_shortcut_lens(loaded, alpha: float = DEFAULT_ALPHA, max_tokens: int | None = None,
                      progress: Progress | None = None) -> ShortcutLens:
    """Fit every layer's map on the corpus's fit part and report it on the held-out part."""
    clock = time.perf_counter()
    notify = progress or (lambda stage, frac=None: None)
    fit = residual_rows(loaded.model, token_windows(loaded.tokenizer, False, max_tokens,
                                                    max_context=loaded.max_context),
                        notify, f"{FIT_STAGE}: residuals of the fit text")
    n_layers, d_model = fit.shape[0] - 1, fit.shape[2]
    weight, bias = torch.empty(n_layers, d_model, d_model), torch.empty(n_layers, d_model)
    for layer in range(n_layers):
        sums = RidgeSums(d_model, d_model)
        for start in range(0, fit.n_rows, 1024):
            stop = min(start + 1024, fit.n_rows)
            sums.add(fit.layer(layer, start, stop), fit.layer(-1, start, stop))
        affine = sums.solve(alpha)
        weight[layer], bias[layer] = affine.weight, affine.bias
        notify(FIT_STAGE, (layer + 1) / n_layers)
    lens = ShortcutLens(weight=weight, bias=bias)
    held = residual_rows(loaded.model, token_windows(loaded.tokenizer, True, max_context=loaded.max_context),
                         notify, f"{FIT_STAGE}: residuals of the held-out text")
    lens.meta = {"recipe": recipe(alpha, max_tokens), "model_fingerprint": loaded.spec.fingerprint,
                 "dtype": loaded.dtype, "n_fit_tokens": fit.n_rows, "n_held_tokens": held.n_rows,
                 "held_out_kl": held_out_kl(lens, held, resolve_taps(loaded.model)),
                 "seconds": round(time.perf_counter() - clock, 2)}
    return lens


_LENSES: dict[tuple[str, str, str], ShortcutLens] = {}
_FITTING = threading.Lock()  # two sessions asking for one model's lens fit it once


def lens_path(directory: Path, fingerprint: str, dtype: str, name: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return Path(directory) / f"{fingerprint}-{dtype}-{safe}.safetensors"


def shortcut_lens(loaded, directory: Path, alpha: float = DEFAULT_ALPHA, max_tokens: int | None = None,
                  progress: Progress | None = None) -> ShortcutLens:
    """The model's fitted lens: from memory, from ``directory``, or fitted now (and saved there)."""
    from safetensors.torch import load_file, safe_open, save_file

    name = recipe(alpha, max_tokens)
    key = (loaded.spec.fingerprint, loaded.dtype, name)
    with _FITTING:
        if key in _LENSES:
            return _LENSES[key]
        path = lens_path(directory, *key)
        expected = (loaded.n_layers, loaded.d_model)
        if path.exists():
            try:
                tensors = load_file(str(path))
                with safe_open(str(path), framework="pt") as handle:
                    meta = json.loads(handle.metadata()["meta"])
                lens = ShortcutLens(weight=tensors["weight"], bias=tensors["bias"], meta=meta)
                if tuple(lens.bias.shape) == expected:
                    _LENSES[key] = lens
                    return lens
            except Exception:  # noqa: BLE001 - a broken or foreign file is fitted again
                pass
        lens = fit_shortcut_lens(loaded, alpha, max_tokens, progress)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        save_file({"weight": lens.weight.contiguous(), "bias": lens.bias.contiguous()}, str(tmp),
                  metadata={"meta": json.dumps(lens.meta)})
        tmp.replace(path)
        _LENSES[key] = lens
        return lens
