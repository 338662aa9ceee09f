"""The commands on one run or on the cache: ``probe``, ``runs``, ``export``, ``cache`` and
``install-default``.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any

from effdepth.cli.inputs import _answer, _read_text, _store
from effdepth.cli.progress import TqdmProgress
from effdepth.cli.report import print_with_json, ready_line, segment_lines, segment_table, summarize, to_json
from effdepth.errors import EffdepthError, PromptError


def cmd_probe(args) -> int:
    from effdepth import engine, models
    from effdepth.compute import Request, check, check_fits, compute

    text = _read_text(args)
    if not text.strip():
        raise PromptError("The prompt is empty. Give some text with --text or a non-empty --text-file.")
    config = engine.ProbeConfig(probes=args.probes, splits=args.splits, seed=args.seed,
                                skip_variants=args.skip_variants, answer=_answer(args, text),
                                ig_steps=args.ig_steps, ig_parts=args.ig_parts, positions=args.positions)
    extra = None
    if getattr(args, "item", None):
        name, _, index = args.item.partition(":")
        extra = {"dataset": name.strip(), "item_index": int(index)}
    request = Request(text, args.dtype, args.chat_template, config, extra)
    check(request)  # before the model is even resolved
    spec = models.resolve_model(args.model)
    if not args.generate:
        check_fits(request, spec)  # a range past the text, or a text past the context: before any load
    progress = TqdmProgress(enabled=not args.quiet)
    store = None if args.no_cache else _store(args)
    held = None
    if args.generate:  # the probes read what the model saw and wrote, as raw text
        held = _generated(args, spec, request, store, progress)
        request = _with_continuation(args, request, held[0])
        check(request)
    load_seconds: list[float] = []

    @contextmanager
    def load(notify):
        clock = time.perf_counter()
        try:
            if held is not None and held[1] is not None:
                yield held[1]  # the model that generated the continuation
                return
            loaded = models.load_model(spec, args.dtype, progress=notify, device_map=args.device_map)
            load_seconds.append(time.perf_counter() - clock)
            _say_estimate(args, progress, loaded, request)
            yield loaded
        finally:
            progress.close()

    def ready(run) -> None:  # each probe's line as soon as it is done (the summary follows at the end)
        if not args.quiet:
            progress.write(ready_line(run))

    result, from_cache = compute(store, request, load, fingerprint=spec.fingerprint, progress=progress,
                                 on_result=ready)
    return _report(args, result, from_cache, load_seconds[0] if load_seconds else None)


def _report(args, result, from_cache: bool, load_seconds: float | None) -> int:
    """Print the summary, and the JSON document where ``--json`` asks for it."""
    summary = summarize(result, from_cache, load_seconds)
    segments = segment_table(result, args.segments) if getattr(args, "segments", None) else None
    if segments is not None:
        summary += "\n" + "\n".join(segment_lines(segments))
    return print_with_json(args, summary, to_json(result, from_cache, segments))


#: beyond this many tokens, or with erasure / IG, the CLI says what the run will cost before it starts
ESTIMATE_FROM_TOKENS = 512


def _say_estimate(args, progress, loaded, request) -> None:
    """One line with the estimated time and peak memory of the run (effdepth.estimate), before it starts: for
    the slow probes, and for a text longer than ``ESTIMATE_FROM_TOKENS``."""
    from effdepth import engine, estimate, positions

    config = request.config
    slow = [p for p in config.probes if p in engine.ANSWER_PROBES]
    n_tokens = len(engine.tokenize(loaded, request.text, request.chat_template))
    if args.quiet or not (slow or n_tokens > ESTIMATE_FROM_TOKENS):
        return
    try:
        selected = positions.select(config.positions, n_tokens, 1)
    except Exception:  # noqa: BLE001 - an estimate never stops a run (the run says what is wrong)
        selected = range(n_tokens)
    windowed = len(selected) < n_tokens
    shape = estimate.Shape.of(loaded, n_tokens, measured=len(selected) if windowed else None,
                              first_measured=min(selected, default=0) if windowed else 0,
                              last_measured=max(selected, default=n_tokens - 1) if windowed else None)
    said = estimate.describe(shape, config.probes, config.ig_steps, dtype=loaded.dtype, memory=True)
    progress.write(f"estimate  {said}")


def _generated(args, spec, request, store, progress):
    """(Generation, the model that wrote it, or None when it came from the cache) for ``--generate``."""
    from effdepth import generation as generate
    from effdepth import models
    from effdepth.compute import continuation

    settings = generate.settings_for(args.generate, args.sample_seed, args.temperature, request.chat_template)
    writer: dict = {}

    @contextmanager
    def take(notify):
        writer["model"] = models.load_model(spec, args.dtype, progress=notify, device_map=args.device_map)
        try:
            yield writer["model"]
        finally:
            progress.close()

    return continuation(store, request, settings, take, spec.fingerprint, progress=progress), writer.get("model")


def _with_continuation(args, request, generation):
    """The request for the text + continuation (``compute.reading``)."""
    from effdepth.compute import reading

    return reading(request, generation, answer_given=args.answer is not None)


def _shorten(text: Any, width: int) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def cmd_runs(args) -> int:
    store = _store(args)
    frame = store.runs()
    if not len(frame):
        print(f"no cached runs in {store.path}")
        return 0
    header = (f"{'run id':<17} {'model':<20} {'tok':>5} {'probes':<20} {'EDR cos':>7} {'EDR kl':>7} "
              f"{'EDR ov':>7} {'EDR skip':>8}  {'created (UTC)':<19}  prompt")
    print(header)
    for row in frame.itertuples(index=False):
        summary = row.ed_summary or {}

        def edr(probe: str) -> str:
            value = (summary.get(probe) or {}).get("edr")
            return "-" if probe not in summary else ("none" if value is None else f"{value:.3f}")

        probes = ",".join(row.probes or [])
        created = str(row.created)[:19] if row.created is not None else ""
        print(f"{row.run_id:<17} {_shorten(row.model_name, 20):<20} {row.n_tokens!s:>5} "
              f"{_shorten(probes, 20):<20} {edr('cosine'):>7} {edr('kl'):>7} {edr('overlap'):>7} "
              f"{edr('skip'):>8}  {created:<19}  {_shorten(row.prompt_text, 40)}")
    print(f"{len(frame)} run(s) in {store.path}")
    return 0


def cmd_export(args) -> int:
    if not args.parquet and not args.csv:
        raise EffdepthError("Say where to export: --parquet DIR and/or --csv DIR.")
    store = _store(args)
    paths = []
    if args.parquet:
        paths += store.export_parquet(args.run_id, args.parquet)
    if args.csv:
        paths += store.export_csv(args.run_id, args.csv)
    for path in paths:
        print(path)
    return 0


def cmd_cache(args) -> int:
    from effdepth.store import Store

    store = Store(args.cache)
    if args.reset:
        moved = store.move_aside()
        if moved is None:
            print(f"no cache file at {store.path}; nothing to reset")
        else:
            print(f"moved {store.path} to {moved}; a new, empty cache is created on next use")
        return 0
    if not store.path.exists():
        print(f"cache file {store.path} (not created yet)")
        return 0
    if args.verify:
        return _verify_cache(store, quiet=args.quiet)
    size = store.path.stat().st_size
    print(f"cache file {store.path} ({size / 1e6:.1f} MB, {len(store)} run(s))")
    return 0


def _verify_cache(store, quiet: bool = False) -> int:
    """``cache --verify``: recompute the runs stored without checks, report each (effdepth.verify)."""
    from effdepth import verify

    store.check_writable()
    todo = verify.unverified_runs(store)
    print(f"{len(todo)} unverified run(s) in {store.path}")
    counts: dict[str, int] = {}
    progress = TqdmProgress(enabled=not quiet)
    try:
        for verdict in verify.verify(store, progress=progress):
            counts[verdict.status] = counts.get(verdict.status, 0) + 1
            progress.close()
            print(f"{verdict.run_id:<17} {_shorten(verdict.model_name, 20):<20} {verdict.status:<8} {verdict.detail}")
    finally:
        progress.close()
    print(", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "nothing to verify")
    return 0


def cmd_install_default(args) -> int:
    from effdepth import models

    name = models.DEFAULT_MODEL
    progress = TqdmProgress(enabled=not args.quiet)
    clock = time.perf_counter()
    try:
        gguf = models.ensure_embedded(name, progress=progress)
        copy_valid = getattr(models, "_copy_valid", None)
        if copy_valid is not None and copy_valid(name):
            progress.close()
            print(f"{name}: already installed ({gguf}; safetensors copy present) "
                  f"[{time.perf_counter() - clock:.1f} s]")
            return 0
        loaded = models.load_model(name, progress=progress)
    finally:
        progress.close()
    print(f"{name}: installed {gguf}; loaded from {loaded.loaded_from or 'disk'} "
          f"(L={loaded.n_layers}, d={loaded.d_model}) [{time.perf_counter() - clock:.1f} s]")
    return 0
