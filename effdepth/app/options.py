"""The choices the pages offer and their labels: dtypes, metrics, skip variants, examples, models."""

from __future__ import annotations

import pandas as pd

DTYPES = ("float32", "bfloat16")


#: probe A heatmap: family × sublayer -> metric name in the layer_token table
CONTRIB_FAMILIES = {"cosine": "cosine", "rc": "relative contribution"}


SUBLAYERS = {"att": "attention", "mlp": "MLP", "layer": "whole layer"}


LENS_METRICS = {"kl": "KL(layer ‖ final)", "overlap": "top-5 overlap", "entropy": "entropy",
                "rank": "rank of the final top-1"}


#: Explore's lens views: how a layer's residual is read before decoding (docs/SPEC.md §5, §15.2)
LENS_VIEWS = {"logit": "logit lens", "shortcut": "linear shortcut lens", "both": "side by side"}


SKIP_VARIANTS = {"future": "future tokens (P2 Fig. 3)", "current": "current token",
                 "local_future": "direct path, future", "local_current": "direct path, current"}


ED_PROBES = ("cosine", "kl", "overlap", "skip")


#: the ED rules a view can headline (the skip ED has one rule of its own, "proposed")
ED_RULES = {"p1": "P1's rule (the papers)", "guarded": "guarded rule"}


CURVE_METRICS = ("cosine", "kl", "overlap", "skip")


#: short label -> prompt text (teacher-forced: prompt + answer; docs/SPEC.md §2).
EXAMPLES: dict[str, str] = {
    # the default: long enough (>= 13 tokens) for the future-effect skip, so a first run shows every probe
    "Two facts (P2)": "The spouse of the performer of Imagine is Yoko Ono, and the capital of France is Paris.",
    "Two-hop fact (P2)": "The spouse of the performer of Imagine is Yoko Ono",
    "Addition chain (P2)": "5 + 7 + 5 + 3 + 1 + 7 = 28",
    "Word problem (GSM8K style)": (
        "Question: Tom has 3 boxes with 4 apples in each box. He eats 2 of the apples. "
        "How many apples are left?\nAnswer: 3 * 4 = 12 apples. 12 - 2 = 10. The answer is 10"),
    "Factual sentence": "The Eiffel Tower is in Paris, the capital of France, and it was finished in 1889.",
}


DEFAULT_PROMPT = EXAMPLES["Two facts (P2)"]


#: the continuation lengths Explore offers (a URL value snaps to the nearest): 0 = nothing is generated
GENERATE_CHOICES = (0, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)  # up to generate.MAX_NEW_TOKENS
#: the segment sizes Explore offers for the ED along a long trace (the URL's ``seg`` snaps to the nearest)
SEGMENT_CHOICES = (32, 64, 128, 256, 512)
DEFAULT_SEGMENT = 256


#: Compare's first view: a shallower and a deeper model of one family, both embedded (offline), the pair
#: behind bench/sweep_claims.sh
DEMO_PAIR = ("qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")


def default_model() -> str:
    from effdepth import models

    return models.DEFAULT_MODEL


def model_options() -> list[tuple[str, str]]:
    """(name, label) of the embedded models: "smollm2-135m — SmolLM2-135M-Instruct (Q4_1) · 30 layers · 98 MB"."""
    from effdepth import models

    return [(name, f"{name} — {em.display} · {em.n_layers} layers · {em.size_mb} MB")
            for name, em in models.EMBEDDED.items()]


def embedded_models_table() -> pd.DataFrame:
    from effdepth import models

    return pd.DataFrame([{"name": name, "model": em.display, "layers": em.n_layers, "d_model": em.d_model,
                          "size (MB)": em.size_mb, "architecture": em.arch}
                         for name, em in models.EMBEDDED.items()])


def contrib_metric(family: str, part: str) -> str:
    return ("cos_" if family == "cosine" else "rc_") + part


#: datasets whose items the prompt picker offers (teacher-forced prompt + gold answer, docs/SPEC.md §2)
ITEM_DATASETS = {"gsm8k": "GSM8K (test)", "aime2025": "AIME 2025", "hops": "hops (1–4 composition steps)"}


IG_STEP_CHOICES = (16, 32, 64, 128, 256)


ATTR_METRICS = {"erasure": "residual erasure", "ig_layer": "IG: layer output", "ig_attn": "IG: attention output",
                "ig_mlp": "IG: MLP output"}


PROBE_LABELS = {"cosine": "contributions and cosines", "logit_lens": "logit lens", "skip": "layer skipping",
                "erasure": "residual erasure", "igrad": "integrated gradients"}


COMPARE_METRICS = ("cos_layer", "cos_att", "cos_mlp", "rc_layer", "rc_att", "rc_mlp", "kl", "overlap", "entropy")
