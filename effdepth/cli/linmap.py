"""``effdepth linmap``: the linear maps from a shallow model's residuals onto a deep one's (docs/SPEC.md §15.1),
fitted on the shipped corpus, cached in the store, printed as the best target depth per source depth.
"""

from __future__ import annotations

from effdepth.cli.inputs import _store
from effdepth.cli.progress import TqdmProgress
from effdepth.cli.report import print_with_json
from effdepth.errors import PromptError

#: a bound on the fit text one command takes (the shipped corpus has fewer tokens than this anyway)
MAX_FIT_TOKENS = 200_000


def cmd_linmap(args) -> int:
    from effdepth import linear, mapstore, models
    from effdepth.datasets import corpus
    from effdepth.ridge import DEFAULT_ALPHA

    if args.tokens is not None and not 16 <= args.tokens <= MAX_FIT_TOKENS:
        raise PromptError(f"--tokens must be between 16 and {MAX_FIT_TOKENS}, not {args.tokens}.")
    alpha = DEFAULT_ALPHA if args.alpha is None else float(args.alpha)
    if not 0 < alpha < 1e3:
        raise PromptError(f"--alpha must be a small positive number (default {DEFAULT_ALPHA:g}), not {args.alpha}.")
    source_spec, target_spec = models.resolve_model(args.source), models.resolve_model(args.target)
    source_dtype, target_dtype = args.source_dtype or args.dtype, args.target_dtype or args.dtype
    linear.check_pair(source_spec, target_spec, source_dtype, target_dtype)  # before any install or load
    store = None if args.no_cache else _store(args)
    map_id = linear.map_key(source_spec.fingerprint, target_spec.fingerprint, source_dtype, target_dtype,
                            corpus.corpus_id(), args.tokens, alpha)
    found = mapstore.get_map(store, map_id) if store is not None else None
    from_cache = found is not None
    if found is None:
        if store is not None:
            store.check_writable()  # before minutes of work
        progress = TqdmProgress(enabled=not args.quiet)
        peak = linear.peak_bytes(source_spec, target_spec, source_dtype, target_dtype,
                                 args.tokens or corpus.estimated_tokens())
        if peak is not None:  # before minutes of loading and fitting
            progress.write(f"estimate  peak memory ~{peak / 2**30:.1f} GB (loading the larger model; the residual "
                           "rows go to a temporary file, the fit holds one source depth's sums)")
        try:
            found = linear.linear_map(lambda: models.load_model(source_spec, source_dtype, progress=progress),
                                      lambda: models.load_model(target_spec, target_dtype, progress=progress),
                                      max_tokens=args.tokens, alpha=alpha, progress=progress)
        finally:
            progress.close()
        if store is not None:
            mapstore.put_map(store, found)
    return _report(args, found, from_cache)


def to_json(linear_map, from_cache: bool) -> dict:
    """The JSON document of one map: ``error`` as (L_A+1) × (L_B+1) lists, the token counts, the best j per s."""
    meta = {k: v for k, v in linear_map.meta.items() if not k.startswith("_")}
    return {**meta, "from_cache": from_cache, "error": linear_map.error.round(6).tolist(),
            "best_target": linear_map.best_target().tolist(), "diagonal": linear_map.diagonal().round(3).tolist()}


def summarize(linear_map) -> str:
    """One line per source depth: the best target depth against the relative-depth diagonal."""
    meta, error = linear_map.meta, linear_map.error
    best, diagonal = linear_map.best_target(), linear_map.diagonal()
    lines = [f"linear map  {meta['source_name']} ({meta['source_dtype']}, L={meta['source_layers']}) -> "
             f"{meta['target_name']} ({meta['target_dtype']}, L={meta['target_layers']})",
             f"text      {meta['corpus']}: {meta['n_fit_tokens']} fit tokens, {meta['n_held_tokens']} held-out "
             f"tokens; ridge alpha {meta['alpha']:g}; {meta.get('seconds', 0):.1f} s",
             "  s   best j   s·L_B/L_A   error(best)   error(diagonal)"]
    for s in range(error.shape[0]):
        on_diagonal = int(round(diagonal[s]))
        lines.append(f"{s:>3}   {best[s]:>6}   {diagonal[s]:>9.1f}   {error[s, best[s]]:>11.3f}   "
                     f"{error[s, on_diagonal]:>15.3f}")
    n_b = error.shape[1] - 1
    off = abs(best[1:] - diagonal[1:]).mean() if len(best) > 1 else 0.0
    lines.append(f"mean |best j − diagonal| over s ≥ 1: {off:.2f} layers ({off / max(n_b, 1):.1%} of L_B)")
    return "\n".join(lines)


def _report(args, linear_map, from_cache: bool) -> int:
    return print_with_json(args, summarize(linear_map), to_json(linear_map, from_cache))


def add_parser(sub, cache_opt) -> None:
    """The ``linmap`` subcommand."""
    linmap = sub.add_parser(
        "linmap", parents=[cache_opt], help="fit linear maps from a shallow model's residuals to a deep one's",
        description="For every source depth s, fit a ridge map from h^A_s to every target residual h^B_j on the "
                    "shipped corpus's fit part and print the held-out relative error (P2 §10). Both models need "
                    "the same tokenizer. Cached in the store.")
    linmap.add_argument("--source", required=True, help="the shallow model (embedded name, directory, ...)")
    linmap.add_argument("--target", required=True, help="the deep model (same tokenizer)")
    linmap.add_argument("--tokens", type=int, default=None,
                        help="fit on at most N tokens of the corpus's fit part (default: all of it)")
    linmap.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                        help="dtype of both models (default float32)")
    linmap.add_argument("--source-dtype", choices=("float32", "bfloat16"), default=None)
    linmap.add_argument("--target-dtype", choices=("float32", "bfloat16"), default=None)
    linmap.add_argument("--alpha", type=float, default=None, help="ridge penalty per feature variance (1e-3)")
    linmap.add_argument("--json", metavar="OUT", help="also write the map as JSON to OUT ('-': stdout)")
    linmap.add_argument("--no-cache", action="store_true", help="neither read nor write the store")
    linmap.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    linmap.set_defaults(func=cmd_linmap)
