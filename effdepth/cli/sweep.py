"""``effdepth sweep``: probe many benchmark items (resumable, shardable), then print the aggregates.
"""

from __future__ import annotations

import functools
import math
import sys
import time
from pathlib import Path

from effdepth.cli.inputs import _store
from effdepth.cli.report import pd_isna
from effdepth.errors import EffdepthError, PromptError


def _sweep_items(args):
    """(items to sweep, bad JSONL items skipped among them); --start / --n pick item numbers."""
    from effdepth import datasets

    if args.jsonl:
        loaded = datasets.load_jsonl(Path(args.jsonl).expanduser(), name=Path(args.jsonl).stem)
        stop = args.start + args.n if args.n else None

        def picked(index: int) -> bool:
            return index >= args.start and (stop is None or index < stop)

        return [it for it in loaded.items if picked(it.index)], [b for b in loaded.skipped if picked(b.index)]
    return datasets.items(args.dataset, n=args.n, start=args.start), []


def cmd_sweep(args) -> int:
    """Probe many benchmark items (resumable), then print the aggregate ED/EDR with bootstrap CIs.

    Unusable JSONL items and items whose probes raise an EffdepthError (e.g. too long for the context)
    are reported and skipped, and listed again at the end; other errors still stop the sweep. Items
    too short for the future-effect skip are named and left out of the depth score.
    """
    from effdepth import engine, sweeps

    items, bad = _sweep_items(args)
    rank, _ = sweeps.dist_env()
    if bad and rank == 0:
        print(f"{len(bad)} of {len(items) + len(bad)} items of {args.jsonl} cannot be probed:", file=sys.stderr)
        for b in bad:
            print(f"  {b}", file=sys.stderr)
    if not items:
        raise PromptError("No items selected: check --dataset/--jsonl, --start and --n."
                          + (f" {_skipped_summary(bad, [])}." if bad else ""))
    config = engine.ProbeConfig(probes=args.probes, splits=args.splits, seed=args.seed,
                                skip_variants=args.skip_variants, ig_steps=args.ig_steps,
                                ig_parts=args.ig_parts, positions=args.positions)  # each item: its own answer
    store = _store(args)
    items, load = _token_filter(args, items)
    stored_before = _stored(store, args.model, items, args.dtype, config)
    _say_peak(args, rank, len(items) - len(stored_before))  # work to do: its memory, before it starts
    clock = time.perf_counter()
    failed: list = []
    quiet = (lambda stage, frac=None: None) if args.quiet else None  # None: sweep's own tqdm bar
    ids = sweeps.sweep_distributed(args.model, items, store, config, args.dtype, progress=quiet, load=load,
                                   skip_errors=(EffdepthError,), failed=failed)
    if rank != 0:
        return 0
    summary = _skipped_summary(bad, failed)
    if not ids and failed:
        raise PromptError(f"No item could be probed. {summary}.")
    elapsed = time.perf_counter() - clock
    frames, counts = sweeps.collect(store, ids)
    computed = len([k for k in ids if k not in stored_before])
    rate = f", {elapsed / computed:.1f} s/item computed" if computed else ""
    print(f"{args.model}: {len(ids)} items of {args.jsonl or args.dataset} "
          f"[{computed} computed, {len(ids) - computed} from the cache; {elapsed:.1f} s this call{rate}]")
    _print_aggregates(frames, counts, args.n_boot)
    _print_item_eds(frames)
    _print_token_depth(store, ids)
    if ids and "skip" in config.probes:
        _print_depth_scores(store, ids, counts, config)
    segments = _print_segments(store, ids, args.segments, args.n_boot) if args.segments else None
    if args.json:
        document = sweeps.sweep_document(store, ids, n_boot=args.n_boot)
        if segments is not None:
            document["segment_size"] = int(args.segments)
            document["segments"] = [{k: (None if pd_isna(v) else v) for k, v in row.items()}
                                    for row in segments.to_dict("records")]
        _write_json(args.json, document)
    if summary:
        print(f"\n{summary}.")
    return 0


def _write_json(target: str, document: dict) -> None:
    import json

    text = json.dumps(document, indent=2, allow_nan=False)
    if target == "-":
        print(text)
    else:
        Path(target).write_text(text + "\n")


def _stored(store, model: str, items, dtype: str, config) -> set[str]:
    """The run ids of the items already in the store (their time is not the sweep's per-item rate)."""
    from effdepth import models, sweeps

    keys = sweeps.item_keys(models.resolve_model(model).fingerprint, items, dtype, config)
    return {k for k in keys if store.has(k)}


def _skipped_summary(bad, failed) -> str | None:
    """One line naming the unusable JSONL items and the items whose probes failed (None: none)."""
    parts = [f"line {b.line}: {b.reason}" for b in bad]
    parts += [f"{item.dataset}[{item.index}]: {str(err).rstrip('.')}" for item, err in failed]
    if not parts:
        return None
    return f"{len(parts)} item{'' if len(parts) == 1 else 's'} skipped: " + "; ".join(parts)


def _say_peak(args, rank: int, n_todo: int) -> None:
    """The estimated peak memory of the sweep (stderr, rank 0, when an item is to be computed): loading
    the model, which the items then share."""
    from effdepth import models
    from effdepth.models.memory import estimate_memory_bytes

    if rank != 0 or n_todo <= 0:
        return
    try:
        peak = estimate_memory_bytes(models.resolve_model(args.model), args.dtype)
    except Exception:  # noqa: BLE001 - an estimate never stops a sweep (the sweep says what is wrong)
        return
    print(f"estimate  peak memory ~{peak / 2**30:.1f} GB (loading {args.model} in {args.dtype}; one item at a "
          "time on it)", file=sys.stderr)


def _token_filter(args, items):
    """(items, model loader for the sweep): the <= 400-token filter (docs/SPEC.md §2, AIME by default)
    needs the model's tokenizer, and the model loaded for it is reused by the sweep."""
    from effdepth import datasets, models

    load = functools.partial(models.load_model, device_map=args.device_map) if args.device_map else None
    if not (args.max_tokens if args.max_tokens is not None else datasets.token_limit(args.dataset or "")):
        return items, load  # no filter asked for: a resumed sweep loads nothing (items past the context fail)
    loaded = models.load_model(args.model, args.dtype, device_map=args.device_map)
    items, dropped, limit = datasets.sweep_filter(items, loaded.tokenizer, args.dataset, args.max_tokens,
                                                  loaded.max_context)
    print(f"token filter ≤ {limit}: kept {len(items)}, dropped {dropped}", file=sys.stderr)
    return items, (lambda *_a, **_k: loaded)


def _print_aggregates(frames, counts, n_boot: int) -> None:
    """ED / EDR of the aggregate curves, token-weighted (P1) and per-prompt (P2), with bootstrap CIs."""
    from effdepth import sweeps

    for how, label in (("token", "token-weighted (P1)"), ("prompt", "per-prompt mean (P2)")):
        if not frames:
            break
        ci = sweeps.bootstrap_ci(frames, counts, how=how, n_boot=n_boot)
        if not len(ci.ed):  # e.g. a skip-only sweep: no per-layer curves to aggregate
            continue
        print(f"\nED / EDR of the aggregate curve, {label}, 95% bootstrap CI over items:")
        for r in ci.ed.itertuples():
            if pd_isna(r.ed):
                print(f"  {r.probe:8s} {r.rule:8s} no transition")
            else:
                print(f"  {r.probe:8s} {r.rule:8s} ED {int(r.ed):3d}  EDR {r.edr:.2f} "
                      f"[{r.edr_lo:.2f}, {r.edr_hi:.2f}]  (no transition in {r.frac_none:.0%})")


def _print_segments(store, ids, size: int, n_boot: int):
    """The EDR per segment of ``size`` measured positions along the items (segment k: each item's k-th), the
    mean over the items that reach it with a bootstrap CI over them (P1's rules); returns the table."""
    from effdepth import sweeps

    table = sweeps.segments_over_items({rid: store.table(rid, "layer_token") for rid in ids}, size, n_boot)
    rows = table[table["rule"] == "p1"]
    if not len(rows):
        return table
    print(f"\nEDR per segment of {size} measured positions along the items (P1 rule): mean [95% CI over items]")
    for segment, group in rows.groupby("segment", sort=True):
        cells = []
        for r in group.itertuples():
            value = "no transition" if pd_isna(r.edr_mean) else f"{r.edr_mean:.2f} [{r.edr_lo:.2f}, {r.edr_hi:.2f}]"
            cells.append(f"{r.probe} {value}")
        count = int(group["n_items"].max())
        print(f"  positions {segment * size:>6}–{(segment + 1) * size - 1:<6} ({count} items)  " + "; ".join(cells))
    return table


def _print_item_eds(frames) -> None:
    """The distribution of the per-item EDs (each item on its own)."""
    from effdepth import sweeps

    dist = sweeps.ed_distribution(sweeps.per_item_ed(frames)) if frames else None
    if dist is None or not len(dist):
        return
    print("\nper-item ED (each item on its own): median [min, max], mean EDR, items with no transition")
    for r in dist.itertuples():
        if r.n_none == r.n:
            print(f"  {r.probe:8s} {r.rule:8s} no transition in any of {r.n} items")
        else:
            print(f"  {r.probe:8s} {r.rule:8s} ED {r.ed_median:5.1f} [{r.ed_min:.0f}, {r.ed_max:.0f}]  "
                  f"EDR {r.edr_mean:.2f}  none {r.n_none}/{r.n}")


def _print_token_depth(store, ids) -> None:
    """The mean commitment depth per token class and bin (answer / question; digits / words / other)."""
    from effdepth import sweeps

    table = sweeps.token_depth_by_class(sweeps.token_depth_rows(store, ids))
    if not len(table):
        return
    print("\ncommitment depth per token (first layer from which the lens's top-1 is the output's): mean [95% CI "
          "over items]")
    for r in table.to_dict("records"):
        interval = "[one item]" if math.isnan(r["lo"]) else f"[{r['lo']:.1f}, {r['hi']:.1f}]"
        print(f"  {r['bin']:12s} {r['class']:9s} {r['mean']:5.1f} {interval:14s} {r['n_tokens']} tokens, "
              f"{r['n_items']} items")


def _print_depth_scores(store, ids, counts, config) -> None:
    """P2's depth score per bin, with the items it had to leave out."""
    from effdepth import sweeps

    if "future" not in config.skip_variants:
        print("\nno depth score: it needs the future-effect skip (add --skip-variants future).")
        return
    metas = {rid: store.meta(rid) or {} for rid in ids}
    matrices = {rid: store.table(rid, "skip") for rid in ids}
    outputs = {rid: store.table(rid, "skip_output") for rid in ids}
    bins = {rid: (metas[rid].get("bin") or metas[rid].get("dataset") or "all") for rid in ids}
    result = sweeps.depth_score_by_bin(matrices, outputs, bins, n_tokens=counts)
    names = {rid: f"{metas[rid].get('dataset')}[{metas[rid].get('item_index')}]" for rid in ids}
    print("\ndepth score (centre of mass of the skip effect over the skipped layer):")
    for line in sweeps.left_out_messages(result.left_out, len(ids), names):
        print(f"  {line}")
    for r in result.scores.itertuples():
        print(f"  {r.bin:12s} {r.effect:5s} effect, {r.reduce:4s} over {r.n_items} items: "
              f"{_score_text(r, result.left_out)}")


def _score_text(row, left_out) -> str:
    if row.n_items == 0:  # every item of the bin was left out
        from effdepth import sweeps

        reasons = set(left_out.loc[left_out["bin"] == row.bin, "reason"])
        why = sweeps.LEFT_OUT_REASONS[reasons.pop()] if len(reasons) == 1 else "left out"
        who = "its only item is" if row.n_left_out == 1 else f"all {row.n_left_out} items are"
        return f"n/a ({who} {why})"
    if row.depth_score is None or pd_isna(row.depth_score):
        return "n/a"
    return f"{row.depth_score:.2f}"
