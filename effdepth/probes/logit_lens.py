"""Probe B (docs/SPEC.md §5): the logit lens on the residual entering each layer.

z_l = unembed(final_norm(h_l)) for l = 0..L-1 (index 0 = embeddings); the reference is the model's own
output. KL(P_layer || P_final), top-5 overlap, the entropy of P_layer and the rank of the final top-1
token in P_layer, per layer and token. Rows are decoded in chunks so that memory stays bounded for
150k-token vocabularies: at most ``budget_bytes`` of fp32 [rows, V] work tensors at a time.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import torch

from effdepth.arch import Taps
from effdepth.capture import Trace
from effdepth.contract import Progress
from effdepth.probes._tables import layer_token_frame
from effdepth.tokens import token_label

TOP_K = 5


#: the metrics of the layer_token table this probe writes
METRICS = ("kl", "overlap", "entropy", "rank")


@torch.no_grad()
def lens_metrics(trace: Trace, model_taps: Taps, top_k: int = TOP_K, keep_top: int = 5,
                 budget_bytes: int = 256 * 2**20, progress: Progress | None = None,
                 transform: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                 stage: str = "logit lens") -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Returns ({kl, overlap, entropy, rank: [L, T]}, {top_ids, top_probs: [L, T, keep_top]}).

    ``transform(rows [n, d], layers [n]) -> [n, d]``: what is decoded instead of h_l itself (the linear
    shortcut lens maps each h_l to its guess of h_L; None: the logit lens). ``progress(stage, fraction)``
    after every chunk of rows (an exception from it stops the lens)."""
    n_layers, n_tokens = trace.n_layers, trace.n_tokens
    logits = trace.full_logits  # [T, V]
    vocab = logits.shape[-1]
    device = next(model_taps.unembed.parameters()).device
    final_logp = torch.log_softmax(logits, dim=-1)  # [T, V]
    final_top = logits.topk(top_k, dim=-1).indices  # [T, K]
    final_best = logits.argmax(dim=-1)  # [T]

    rows = trace.resid[:-1].reshape(n_layers * n_tokens, -1)  # (layer, pos) flattened, [L*T, d]
    out = {name: torch.empty(n_layers * n_tokens) for name in METRICS}
    top_ids = torch.empty(n_layers * n_tokens, keep_top, dtype=torch.long)
    top_probs = torch.empty(n_layers * n_tokens, keep_top)
    chunk = max(1, budget_bytes // (4 * vocab * 4))  # ~4 live [chunk, V] fp32 tensors
    # Reused work buffers: a fresh 100 MB tensor per chunk costs more in page faults than its arithmetic.
    p_buf = torch.empty(min(chunk, rows.shape[0]), vocab)
    work_buf = torch.empty_like(p_buf)
    above_buf = torch.empty(p_buf.shape, dtype=torch.bool)
    for start in range(0, rows.shape[0], chunk):
        stop = min(start + chunk, rows.shape[0])
        n = stop - start
        pos = torch.arange(start, stop) % n_tokens
        block = rows[start:stop]
        if transform is not None:
            block = transform(block, torch.arange(start, stop) // n_tokens)
        z = model_taps.to_logits(block.to(device)).cpu()  # [c, V]
        logp = torch.log_softmax(z, dim=-1)
        p = torch.exp(logp, out=p_buf[:n])
        work = torch.index_select(final_logp, 0, pos, out=work_buf[:n])  # log P_final, then reused
        # in place, summed along V (torch's pairwise sum; a BLAS dot loses ~1e-4 relative here)
        out["kl"][start:stop] = work.neg_().add_(logp).mul_(p).sum(-1)
        out["entropy"][start:stop] = -torch.mul(p, logp, out=work).sum(-1)
        layer_top = z.topk(max(top_k, keep_top), dim=-1).indices
        hits = (layer_top[:, :top_k, None] == final_top[pos][:, None, :]).any(-1).sum(-1)
        out["overlap"][start:stop] = hits.float() / top_k
        best_logit = z.gather(1, final_best[pos][:, None])
        above = torch.gt(z, best_logit, out=above_buf[:n]).view(torch.uint8)
        out["rank"][start:stop] = 1 + above.sum(-1, dtype=torch.int32).float()  # 1 = the layer's top-1
        top_ids[start:stop] = layer_top[:, :keep_top]
        top_probs[start:stop] = p.gather(1, layer_top[:, :keep_top])
        if progress is not None:
            progress(stage, stop / rows.shape[0])
    metrics = {name: values.reshape(n_layers, n_tokens) for name, values in out.items()}
    tops = {"top_ids": top_ids.reshape(n_layers, n_tokens, keep_top),
            "top_probs": top_probs.reshape(n_layers, n_tokens, keep_top)}
    return metrics, tops


def logit_lens(trace: Trace, model_taps: Taps, tokenizer=None, keep_top: int = 5,
               progress: Progress | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(DataFrame[metric, layer, pos, value], DataFrame[layer, pos, rank, token_id, token, prob])."""
    metrics, tops = lens_metrics(trace, model_taps, keep_top=keep_top, progress=progress)
    ids, probs = tops["top_ids"], tops["top_probs"]
    n_layers, n_tokens, k = ids.shape
    grid = torch.stack(torch.meshgrid(torch.arange(n_layers), torch.arange(n_tokens),
                                      torch.arange(k), indexing="ij"), -1).reshape(-1, 3)
    top = pd.DataFrame({
        "layer": grid[:, 0].numpy(), "pos": grid[:, 1].numpy(), "rank": grid[:, 2].numpy() + 1,
        "token_id": ids.reshape(-1).numpy(), "prob": probs.reshape(-1).double().numpy(),
    })
    if tokenizer is not None:
        vocab = {int(i): token_label(tokenizer, int(i)) for i in pd.unique(top["token_id"])}
        top["token"] = top["token_id"].map(vocab)
    else:
        top["token"] = top["token_id"].astype(str)
    return layer_token_frame(metrics), top
