"""Linear maps from a shallow model's residuals to a deep model's (P2 §10; docs/SPEC.md §15.1).

For every source depth s (0 = embeddings … L_A) one affine map sends h^A_s[i] to every target residual
h^B_j[i] (j = 0 … L_B) at the same token i, fitted in closed form (``ridge``) on the corpus's fit part
and scored on its held-out part by P2's relative error mean_i ‖ŷ_j − h^B_j‖ / ‖h^B_j‖. P2 trains the
same ``Linear(d_A → (L_B+1)·d_B)`` by AdamW on C4; the closed form is its exact minimiser with a small
ridge penalty, on far less text.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable

import numpy as np
import torch

from effdepth.contract import LinearMap, Progress
from effdepth.errors import PromptError
from effdepth.linear.collect import Rows
from effdepth.ridge import DEFAULT_ALPHA, RidgeSums, relative_error

#: rows per chunk of the normal equations (a chunk of all target depths is ~180 MB in float64 for a 1.5B)
CHUNK_ROWS = 512
#: bumped when the fit or its score changes meaning (part of the stored map's key)
MAP_VERSION = 1


def map_key(source_fingerprint: str, target_fingerprint: str, source_dtype: str, target_dtype: str,
            corpus_id: str, max_tokens: int | None, alpha: float) -> str:
    """The stored map's id: both weights and dtypes, the text, the token budget, the penalty, the method."""
    payload = json.dumps({"source": source_fingerprint, "target": target_fingerprint, "source_dtype": source_dtype,
                          "target_dtype": target_dtype, "corpus": corpus_id, "tokens": max_tokens,
                          "alpha": float(alpha), "version": MAP_VERSION}, sort_keys=True)
    return "map-" + hashlib.sha256(payload.encode()).hexdigest()[:16]


def check_same_tokenizer(source_name: str, target_name: str, source_tokenizer, target_tokenizer) -> None:
    """Maps pair tokens position by position, so both models must read the same tokens (PromptError)."""
    if source_tokenizer.get_vocab() != target_tokenizer.get_vocab():
        raise PromptError(f"A linear map pairs the two models token by token, so they need the same tokenizer: "
                          f"{source_name} ({len(source_tokenizer)} tokens) and {target_name} "
                          f"({len(target_tokenizer)} tokens) tokenize text differently. Pick two models of one "
                          "family (e.g. qwen2.5-coder-0.5b and qwen2.5-coder-1.5b).")


def check_pair(source_spec, target_spec, source_dtype: str, target_dtype: str) -> None:
    """Before any install, load or fit (PromptError): two different models, or one in two dtypes, that read
    the same tokens. Embedded models say their tokenizer family; others are held to their vocabularies where
    the tokenizer loads alone (a GGUF file's is checked once its model is loaded)."""
    from effdepth import models

    if source_spec.fingerprint == target_spec.fingerprint and source_dtype == target_dtype:
        raise PromptError(f"The source and the target are the same model ({source_spec.name}, {source_dtype}): its "
                          "map onto itself is the identity. Pick a shallower and a deeper model of one family.")
    source, target = source_spec.embedded, target_spec.embedded
    if source is not None and target is not None:
        if source.tokenizer != target.tokenizer:
            raise PromptError(f"A linear map pairs the two models token by token, so they need the same tokenizer: "
                              f"{source_spec.name} reads {source.tokenizer} tokens and {target_spec.name} "
                              f"{target.tokenizer} tokens. Pick two models of one family (e.g. qwen2.5-coder-0.5b "
                              "and qwen2.5-coder-1.5b).")
        return
    source_tokenizer, target_tokenizer = models.load_tokenizer(source_spec), models.load_tokenizer(target_spec)
    if source_tokenizer is not None and target_tokenizer is not None:
        check_same_tokenizer(source_spec.name, target_spec.name, source_tokenizer, target_tokenizer)


@torch.no_grad()
def fit_errors(source_fit: Rows, target_fit: Rows, source_held: Rows, target_held: Rows,
               alpha: float = DEFAULT_ALPHA, progress: Progress | None = None) -> np.ndarray:
    """The held-out relative error of the ridge map of every source depth onto every target depth
    -> [L_A+1, L_B+1]. The rows of source and target must be the same tokens (same windows).

    One source depth at a time: its sums against every target depth (d_A × (L_B+1)·d_B in float64,
    ~320 MB for the demo pair), the rows read a block of ``CHUNK_ROWS`` at a time, so the rows themselves
    may live in a file (``Rows.file``)."""
    for src, tgt, part in ((source_fit, target_fit, "fit"), (source_held, target_held, "held-out")):
        if src.windows != tgt.windows:
            raise ValueError(f"the {part} rows of source and target are not the same tokens")
    n_source, _, d_source = source_fit.shape
    n_target, _, d_target = target_fit.shape
    error = np.empty((n_source, n_target))
    for s in range(n_source):
        sums = RidgeSums(d_source, n_target * d_target)
        for start in range(0, source_fit.n_rows, CHUNK_ROWS):
            stop = min(start + CHUNK_ROWS, source_fit.n_rows)
            sums.add(source_fit.layer(s, start, stop), target_fit.depths(start, stop))
        fitted = sums.solve(alpha)
        del sums
        total = torch.zeros(n_target, dtype=torch.float64)
        for start in range(0, source_held.n_rows, CHUNK_ROWS):
            stop = min(start + CHUNK_ROWS, source_held.n_rows)
            predicted = fitted(source_held.layer(s, start, stop)).reshape(stop - start, n_target, d_target)
            held = target_held.depths(start, stop).reshape(stop - start, n_target, d_target)
            for j in range(n_target):
                total[j] += relative_error(predicted[:, j], held[:, j]).double().sum()
        error[s] = (total / source_held.n_rows).numpy()
        if progress is not None:
            progress("fitting the maps", (s + 1) / n_source)
    return error


def linear_map(take_source: Callable[[], object], take_target: Callable[[], object], max_tokens: int | None = None,
               alpha: float = DEFAULT_ALPHA, progress: Progress | None = None) -> LinearMap:
    """Fit and score the maps of one model pair. ``take_source`` / ``take_target`` give each LoadedModel
    when its turn comes (the source's residuals are collected before the target is asked for, so a caller
    may hold one model at a time)."""
    from effdepth.datasets import corpus
    from effdepth.linear.collect import residual_rows, token_windows

    clock = time.perf_counter()
    source = take_source()
    windows = {held: token_windows(source.tokenizer, held, max_tokens if not held else None,
                                   max_context=source.max_context) for held in (False, True)}
    source_rows = {held: residual_rows(source.model, windows[held], progress,
                                       f"{source.spec.name}: residuals ({'held-out' if held else 'fit'} text)")
                   for held in (False, True)}
    source_meta = _model_meta(source, "source")
    del source
    target = take_target()
    check_same_tokenizer(source_meta["source_name"], target.spec.name, source_meta.pop("_tokenizer"),
                         target.tokenizer)
    target_windows = {held: token_windows(target.tokenizer, held, max_tokens if not held else None,
                                          max_context=target.max_context) for held in (False, True)}
    if target_windows != windows:  # same vocabulary, other special tokens or context
        raise PromptError(f"{source_meta['source_name']} and {target.spec.name} cut the corpus into different "
                          "tokens (a BOS added by one only, or a shorter context); a linear map needs the same ones.")
    target_rows = {held: residual_rows(target.model, windows[held], progress,
                                       f"{target.spec.name}: residuals ({'held-out' if held else 'fit'} text)")
                   for held in (False, True)}
    target_meta = _model_meta(target, "target")
    target_meta.pop("_tokenizer")
    del target  # the fit needs the rows only: the weights go before its sums are made
    error = fit_errors(source_rows[False], target_rows[False], source_rows[True], target_rows[True], alpha, progress)
    meta = {**source_meta, **target_meta, "corpus": corpus.corpus_id(), "max_tokens": max_tokens,
            "alpha": float(alpha), "n_fit_tokens": source_rows[False].n_rows,
            "n_held_tokens": source_rows[True].n_rows, "version": MAP_VERSION,
            "seconds": round(time.perf_counter() - clock, 2)}
    meta["map_id"] = map_key(meta["source_fingerprint"], meta["target_fingerprint"], meta["source_dtype"],
                             meta["target_dtype"], meta["corpus"], max_tokens, alpha)
    return LinearMap(meta=meta, error=error)


def _model_meta(loaded, role: str) -> dict:
    return {f"{role}_name": loaded.spec.name, f"{role}_fingerprint": loaded.spec.fingerprint,
            f"{role}_dtype": loaded.dtype, f"{role}_layers": loaded.n_layers, f"{role}_d_model": loaded.d_model,
            "_tokenizer": loaded.tokenizer}


def _layers_and_width(spec) -> tuple[int, int] | None:
    """(L, d) from the model's configuration, without loading it (None where the configuration says neither)."""
    try:
        config = getattr(spec.config, "text_config", None) or spec.config
    except Exception:  # noqa: BLE001 - an estimate never stops a command
        return None
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None)
    width = getattr(config, "hidden_size", None) or getattr(config, "n_embd", None)
    return (int(layers), int(width)) if layers and width else None


def peak_bytes(source_spec, target_spec, source_dtype: str, target_dtype: str, n_rows: int,
               dequantise: bool | None = None) -> int | None:
    """The estimated peak memory of ``linear_map`` (bytes): the larger of loading either model (one at a time;
    the rows past ``collect.SPILL_FROM_BYTES`` go to a file) and the fit of one source depth against every
    target depth (the float64 sums, their solution and one block of rows). None where a shape is unknown.
    ``dequantise``: as ``models.memory.estimate_memory_bytes`` (None: a model not yet installed dequantises
    its GGUF on this first load, which needs more than any later one)."""
    from effdepth.estimate import PROCESS_BYTES
    from effdepth.linear.collect import SPILL_FROM_BYTES, rows_bytes
    from effdepth.models.memory import estimate_memory_bytes

    shapes = _layers_and_width(source_spec), _layers_and_width(target_spec)
    if None in shapes:
        return None
    (layers_a, d_a), (layers_b, d_b) = shapes
    kept = sum(size for size in (rows_bytes(layers_a, d_a, n_rows), rows_bytes(layers_b, d_b, n_rows))
               if size <= SPILL_FROM_BYTES)  # rows small enough to stay in memory
    load = max(estimate_memory_bytes(source_spec, source_dtype, dequantise),
               estimate_memory_bytes(target_spec, target_dtype, dequantise))
    out = (layers_b + 1) * d_b
    fit = PROCESS_BYTES + int(4.5 * d_a * out * 8) + CHUNK_ROWS * out * 20
    return max(load, fit) + kept
