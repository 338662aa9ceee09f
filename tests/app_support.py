"""Helpers for the app tests (test_charts, test_app, test_browser): tiny saved models and cached runs.

A tiny model is a random Llama saved as a Hugging Face directory together with a small byte-level BPE
tokenizer trained here (no download), so it loads through ``models.load_model(path)`` like any local
model. Runs of the default embedded model (smollm2-135m) are computed once through the engine and
pickled under pytest's cache directory, keyed by the run id (which covers the weights, the text, the
dtype, the probe configuration and the probe version), so a re-run of the suite reuses them.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

CORPUS = [
    "The spouse of the performer of Imagine is Yoko Ono.",
    "5 + 7 + 5 + 3 + 1 + 7 = 28",
    "Tom has 3 boxes with 4 apples in each box. He eats 2 of the apples. How many apples are left?",
    "The Eiffel Tower is in Paris, the capital of France, and it was finished in 1889.",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
    "The quick brown fox jumps over the lazy dog. 0123456789",
] * 4

PROMPT = "5 + 7 + 5 + 3 + 1 + 7 = 28"  # 20 tokens on smollm2: enough for the future-effect skip
TINY_PROMPT = "The Eiffel Tower is in Paris, the capital of France, and it was finished in 1889."


def unescape(markdown: str) -> str:
    """A markdown body as a person reads it: the app escapes every punctuation mark of user text (app.md)
    and breaks autolink patterns with word joiners; both are invisible on the page."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", markdown).replace("\u2060", "")


def build_tiny_dir(path: Path, seed: int = 0, n_layers: int = 6, vocab_size: int = 320) -> Path:
    """Write a random tiny Llama (+ tokenizer) to ``path``; returns the directory."""
    import torch
    import transformers as tf
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(CORPUS, trainer)
    tokenizer = tf.PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>")
    tokenizer.save_pretrained(path)

    torch.manual_seed(seed)
    config = tf.LlamaConfig(vocab_size=len(tokenizer), hidden_size=48, intermediate_size=96,
                            num_hidden_layers=n_layers, num_attention_heads=4, num_key_value_heads=2,
                            max_position_embeddings=128, bos_token_id=0, eos_token_id=1, tie_word_embeddings=False)
    model = tf.LlamaForCausalLM(config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # a larger init so that the layers do visible work
        for name, param in model.named_parameters():
            if param.dim() == 2:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.15)
    model.save_pretrained(path)
    return path


def compute_run(model: str, text: str, dtype: str = "float32"):
    """RunResult of ``text`` on ``model`` through the engine, with the app's probe configuration."""
    from effdepth import app, engine, models

    loaded = models.load_model(model, dtype=dtype)
    config = app.config_for(len(engine.tokenize(loaded, text)))
    return engine.run_probes(loaded, text, config)


def code_hash() -> str:
    """A hash of every source file of the package: a run memoised by an older engine is never reused."""
    import hashlib

    root = Path(__file__).resolve().parents[1] / "effdepth"
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def cached_run(cache_dir: Path, model: str, text: str, dtype: str = "float32"):
    """``compute_run`` memoised on disk under ``cache_dir`` by the run id and the code's own hash (no model load
    on a hit; a change anywhere in the engine runs it again, even one that keeps the probe version)."""
    from effdepth import app

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    code = code_hash()
    for key in app.run_keys(model, text, dtype, False):
        path = cache_dir / f"{key}-{code}.pkl"
        if path.is_file():
            try:
                result = pickle.loads(path.read_bytes())
                # re-validate: a pickle from older code may lack tables added since (filled empty)
                return type(result)(meta=result.meta, tables=dict(result.tables))
            except Exception:  # a stale or truncated pickle: recompute
                path.unlink(missing_ok=True)
    for stale in cache_dir.glob("*.pkl"):  # pickles of other code
        if not stale.name.endswith(f"-{code}.pkl"):
            stale.unlink(missing_ok=True)
    result = compute_run(model, text, dtype)
    (cache_dir / f"{result.run_id}-{code}.pkl").write_bytes(pickle.dumps(result))
    return result


def fill_store(path: Path, results) -> Path:
    """A fresh DuckDB cache at ``path`` holding ``results``."""
    from effdepth.store import Store

    store = Store(path)
    for result in results:
        store.put(result)
    return Path(path)


# --------------------------------------------------------------------------------------------------
# Benchmark sweeps (Difficulty page, Compare's items mode)
# --------------------------------------------------------------------------------------------------

#: (dataset, prompt, answer): two datasets of three items each, every text long enough (>= 13 tokens
#: on the tiny tokenizer) for the future-effect skip
SWEEP_TEXTS = [
    ("arith", "Question: 5 + 7 + 5 + 3 + 1 + 7 = ", "28, and 28 + 4 = 32"),
    ("arith", "Question: Tom has 3 boxes with 4 apples in each box. How many apples? ", "3 * 4 = 12"),
    ("arith", "Question: 0123456789 and then 5 + 7 = ", "12 apples in April"),
    ("story", "The spouse of the performer of Imagine is ", "Yoko Ono, the capital of France is Paris."),
    ("story", "The Eiffel Tower is in Paris, the capital of France, and ", "it was finished in 1889."),
    ("story", "The quick brown fox jumps over the lazy dog. Natalia sold clips to ", "48 of her friends."),
]


def sweep_items():
    from effdepth.datasets import Item

    counters: dict[str, int] = {}
    items = []
    for dataset, prompt, answer in SWEEP_TEXTS:
        index = counters.get(dataset, 0)
        counters[dataset] = index + 1
        items.append(Item(dataset=dataset, index=index, prompt=prompt, answer=answer))
    return items


def fill_sweeps(path: Path, model_a: str, model_b: str | None = None, skip: bool = True) -> Path:
    """A DuckDB cache at ``path`` with benchmark sweeps: ``model_a`` with cosine + logit lens on every
    item and (``skip``) a separate skip-only future sweep of the same items (two configs per item, merged
    by the Difficulty view); ``model_b`` (if given) with cosine + logit lens on the same items."""
    from effdepth import sweeps
    from effdepth.engine import ProbeConfig
    from effdepth.store import Store

    store = Store(path)
    items = sweep_items()
    quiet = lambda *_a, **_k: None  # noqa: E731 - no progress bar in tests
    sweeps.sweep(model_a, items, store, ProbeConfig(probes=("cosine", "logit_lens")), progress=quiet)
    if skip:
        sweeps.sweep(model_a, items, store, ProbeConfig(probes=("skip",), skip_variants=("future",)), progress=quiet)
    if model_b:
        sweeps.sweep(model_b, items, store, ProbeConfig(probes=("cosine", "logit_lens")), progress=quiet)
    return Path(path)
