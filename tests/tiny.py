"""Tiny random models of every supported family, built from a config in the test (no download)."""

from __future__ import annotations

import torch
import transformers as tf

VOCAB = 97
COMMON = dict(vocab_size=VOCAB, hidden_size=48, intermediate_size=96, num_hidden_layers=5,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)

CONFIGS = {
    "llama": lambda: tf.LlamaConfig(**COMMON),
    "qwen2": lambda: tf.Qwen2Config(**COMMON),
    "qwen3": lambda: tf.Qwen3Config(**COMMON, head_dim=12),
    "mistral": lambda: tf.MistralConfig(**COMMON, sliding_window=None),
    "gemma3_text": lambda: tf.Gemma3TextConfig(**COMMON, head_dim=12, sliding_window=8,
                                               final_logit_softcapping=30.0),
    "olmo2": lambda: tf.Olmo2Config(**COMMON),
    "gpt2": lambda: tf.GPT2Config(vocab_size=VOCAB, n_embd=48, n_layer=5, n_head=4, n_positions=256),
}
FAMILIES = tuple(CONFIGS)


def scale_init(model: torch.nn.Module, std: float = 0.15, seed: int = 0) -> torch.nn.Module:
    """Re-initialise linear/embedding weights with a larger std so that layers do real work."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() == 2:
                param.copy_(torch.randn(param.shape, generator=gen) * std)
            elif "norm" not in name and "ln" not in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.02)
    return model


def tiny_model(family: str, seed: int = 0, dtype=torch.float32) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = CONFIGS[family]()
    model = tf.AutoModelForCausalLM.from_config(config, attn_implementation="sdpa", dtype=dtype)
    return scale_init(model, seed=seed).eval()


def random_ids(n_tokens: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (1, n_tokens), generator=gen)
