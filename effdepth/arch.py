"""Architecture knowledge: the one place that names Hugging Face module paths.

Every supported family maps to a fixed vocabulary of tap points:

- ``resid_pre``  h_l, the input of decoder layer l (a forward pre-hook on the layer);
- ``attn_out``   a_l, the attention contribution *as added to the residual*;
- ``mlp_out``    m_l, the MLP contribution *as added to the residual*;
- ``resid_post`` h_{l+1}, the output of layer l;
- ``final_norm`` and ``unembed``, which turn a residual into logits (plus an optional soft-cap).

For plain pre-norm blocks (Llama, Qwen2/3, Mistral, GPT-2) the contribution is the attention / MLP
module's own output. Gemma 3 and OLMo 2 normalise *after* the sublayer ("sandwich"/post norms), so the
contribution is the output of the post-norm module. A new family is one row in ``FAMILIES``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from effdepth.errors import UnsupportedArchitectureError


@dataclass(frozen=True)
class Family:
    """Module paths (relative to the CausalLM) of one model family."""

    layers: str  # the ModuleList of decoder blocks
    attn_out: str  # relative to a block: the module whose output is a_l
    mlp_out: str  # relative to a block: the module whose output is m_l
    final_norm: str
    unembed: str
    note: str = ""


_PRE_NORM = dict(layers="model.layers", attn_out="self_attn", mlp_out="mlp",
                 final_norm="model.norm", unembed="lm_head")
_POST_NORM = dict(layers="model.layers", attn_out="post_attention_layernorm",
                  mlp_out="post_feedforward_layernorm", final_norm="model.norm", unembed="lm_head")

#: config.model_type -> family table.
FAMILIES: dict[str, Family] = {
    "llama": Family(**_PRE_NORM, note="Llama 2/3, SmolLM2"),
    "qwen2": Family(**_PRE_NORM, note="Qwen2 / Qwen2.5, DeepSeek-R1-Distill-Qwen"),
    "qwen3": Family(**_PRE_NORM, note="Qwen3"),
    "mistral": Family(**_PRE_NORM, note="Mistral"),
    "gemma3_text": Family(**_POST_NORM, note="Gemma 3 (sandwich norms: contribution = post-norm output)"),
    "olmo2": Family(**_POST_NORM, note="OLMo 2 (post norms: contribution = post-norm output)"),
    "gpt2": Family(layers="transformer.h", attn_out="attn", mlp_out="mlp",
                   final_norm="transformer.ln_f", unembed="lm_head", note="GPT-2"),
}
FAMILIES["gemma3"] = FAMILIES["gemma3_text"]

SUPPORTED = tuple(sorted(FAMILIES))


def model_type_of(config) -> str:
    """The model_type that decides the family (text config for multimodal wrappers)."""
    text_config = getattr(config, "text_config", None)
    if text_config is not None and getattr(config, "model_type", "") == "gemma3":
        return text_config.model_type
    return getattr(config, "model_type", "") or ""


def check_supported(config) -> str:
    """Return the family key for ``config`` or raise a clear UnsupportedArchitectureError."""
    model_type = model_type_of(config)
    if model_type not in FAMILIES:
        raise UnsupportedArchitectureError(
            f"Architecture '{model_type or 'unknown'}' is not supported by effdepth's probes. "
            f"Supported families: {', '.join(s for s in SUPPORTED if s != 'gemma3')}. "
            "Adding one is a single row in effdepth/arch.py."
        )
    return model_type


#: config key aliases: the first one a config has wins (GPT-2 names them n_layer, n_embd, n_positions).
CONFIG_KEYS = {"n_layers": ("num_hidden_layers", "n_layer"), "d_model": ("hidden_size", "n_embd", "d_model"),
               "vocab_size": ("vocab_size",), "max_context": ("max_position_embeddings", "n_positions", "n_ctx")}
#: families whose outputs are garbage without <bos> first (docs/SPEC.md §12): loading refuses otherwise
NEEDS_BOS = ("gemma3", "gemma3_text")


def text_config(config):
    """The text-model config (multimodal wrappers such as Gemma 3 keep it in ``text_config``)."""
    return getattr(config, "text_config", None) or config


def config_value(config, key: str, default=None):
    """A model dimension by effdepth's name (``CONFIG_KEYS``), read from the text config."""
    inner = text_config(config)
    for name in CONFIG_KEYS[key]:
        value = getattr(inner, name, None)
        if value is not None:
            return value
    return default


def _get(root: nn.Module, path: str) -> nn.Module:
    return root.get_submodule(path)


@dataclass
class Taps:
    """Resolved tap points of one loaded model."""

    family: str
    layers: list[nn.Module]
    attn_modules: list[nn.Module]
    mlp_modules: list[nn.Module]
    final_norm: nn.Module
    unembed: nn.Module
    logit_softcap: float | None

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    def to_logits(self, resid: torch.Tensor) -> torch.Tensor:
        """Final norm + unembedding (+ soft-cap) of residuals [..., d] -> logits [..., V] in fp32."""
        param = next(self.unembed.parameters())
        z = self.unembed(self.final_norm(resid.to(param.dtype))).float()
        if self.logit_softcap:
            z = torch.tanh(z / self.logit_softcap) * self.logit_softcap
        return z


def taps(model: nn.Module) -> Taps:
    """Resolve the tap points of a Hugging Face CausalLM."""
    family_key = check_supported(model.config)
    fam = FAMILIES[family_key]
    layers = list(_get(model, fam.layers))
    text_config = getattr(model.config, "text_config", None) or model.config
    return Taps(
        family=family_key,
        layers=layers,
        attn_modules=[_get(layer, fam.attn_out) for layer in layers],
        mlp_modules=[_get(layer, fam.mlp_out) for layer in layers],
        final_norm=_get(model, fam.final_norm),
        unembed=_get(model, fam.unembed),
        logit_softcap=getattr(text_config, "final_logit_softcapping", None),
    )


def first_tensor(output) -> torch.Tensor:
    """Unwrap a module output: transformers 5 layers return a bare tensor, 4.x a tuple (h, ...).

    Attention modules return (attn_out, weights). docs/SPEC.md §12.1: never index a bare tensor with [0].
    """
    tensor = output[0] if isinstance(output, (tuple, list)) else output
    if not isinstance(tensor, torch.Tensor) or tensor.dim() != 3:
        raise RuntimeError(f"expected a [B, T, d] tensor from a tap point, got {type(tensor)}")
    return tensor
