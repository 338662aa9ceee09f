"""The ``effdepth`` command line (also ``python -m effdepth``).

Commands: ``probe`` (run the probes on one text, cached), ``runs`` (list cached runs), ``export``
(parquet/CSV files of one run), ``cache`` (show / ``--reset`` the cache file) and ``install-default``
(install and convert the default embedded model; what ``make setup`` runs) and ``sweep`` (many
benchmark items, resumable, with aggregates).

User-facing errors (:class:`effdepth.errors.EffdepthError`) are printed as ``error: <message>`` on
stderr with exit code 2 and no traceback. Heavy modules (torch, transformers) are imported only by
the commands that need them, so ``--help``, ``runs`` and ``export`` start quickly.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import re
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from effdepth.contract import DEFAULT_PROBES, SKIP_VARIANTS, SPLIT_MAX
from effdepth.contract import PROBES as PROBE_CHOICES
from effdepth.errors import EffdepthError, PromptError

ED_PROBES = (("cosine", "cosine"), ("kl", "logit-lens KL"), ("overlap", "top-5 overlap"),
             ("skip", "layer skipping"))
LAYER_METRICS = ("cos_att", "cos_mlp", "cos_layer", "cos_mu", "rc_att", "rc_mlp", "rc_layer", "kl", "overlap",
                 "entropy", "rank", "skip_layer_effect", "skip_output")


# ----------------------------------------------------------------------------------------------
# Progress on stderr
# ----------------------------------------------------------------------------------------------


class TqdmProgress:
    """``progress(stage, frac)`` callback drawing one transient tqdm bar per stage on stderr.

    Stage names with a counter ("skip replay, layer 12/30") share one bar ("skip replay, layer"); a stage
    with a fraction gets a percentage bar, one without just its elapsed time. When a stage ends its
    bar is replaced by one line "stage: 1.23 s".
    """

    def __init__(self, enabled: bool = True, stream=None):
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.bar = None
        self.key: str | None = None
        self.started = 0.0

    def __call__(self, stage: str, frac: float | None = None) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        key = re.sub(r"\s*\d+/\d+\s*", " ", stage).strip()
        if key != self.key:
            self.close()
            self.key = key
            self.started = time.perf_counter()
            fmt = ("{desc}: {percentage:3.0f}%|{bar:30}| {elapsed}<{remaining}" if frac is not None
                   else "{desc}: {elapsed}")
            self.bar = tqdm(total=100 if frac is not None else None, desc=key, file=self.stream,
                            bar_format=fmt, leave=False, dynamic_ncols=True)
        if frac is not None and self.bar is not None:
            if self.bar.total is None:
                self.bar.total = 100
                self.bar.bar_format = "{desc}: {percentage:3.0f}%|{bar:30}| {elapsed}<{remaining}"
            self.bar.n = max(0, min(100, int(round(frac * 100))))
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            if self.key != "ready":
                print(f"{self.key}: {time.perf_counter() - self.started:.2f} s", file=self.stream, flush=True)
            self.bar = None
            self.key = None


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------


def _clean(value: Any) -> Any:
    """A JSON-safe Python value: numpy → Python, NaN/inf/NA → None."""
    if value is None:
        return None
    if hasattr(value, "item") and callable(value.item) and not isinstance(value, (str, bytes)):
        try:
            value = value.item()
        except (ValueError, TypeError):
            pass
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (bool, int, str)):
        return value
    try:
        import pandas as pd

        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return value


def _matrix(skip, variant: str) -> list[list[float | None]] | None:
    """The split = -1 matrix of one variant as L×L nested lists (rows skipped, cols affected)."""
    rows = skip[(skip["variant"] == variant) & (skip["split"] == SPLIT_MAX)]
    if not len(rows):
        return None
    grid = rows.pivot(index="skipped", columns="affected", values="value").sort_index().sort_index(axis=1)
    return [[_clean(v) for v in row] for row in grid.to_numpy()]


def _vector(output, variant: str) -> list[float | None] | None:
    rows = output[(output["variant"] == variant) & (output["split"] == SPLIT_MAX)].sort_values("skipped")
    return [_clean(v) for v in rows["value"]] if len(rows) else None


def noise_floor(result) -> dict[str, float | None]:
    """Max value over the ``noise_*`` variants in the skip matrix and in the output change."""
    out = {}
    for key, name in (("matrix", "skip"), ("output", "skip_output")):
        frame = result.tables[name]
        rows = frame[frame["variant"].astype(str).str.startswith("noise_")] if len(frame) else frame
        out[key] = _clean(float(rows["value"].max())) if len(rows) else None
    return out


def ed_rows(result) -> dict[str, dict[str, Any]]:
    """{probe: {ed, edr, rule, threshold, description, guarded: {ed, edr} | None}} from the ed table."""
    ed = result.tables["ed"]
    out: dict[str, dict[str, Any]] = {}
    for probe in dict.fromkeys(str(p) for p in ed["probe"]):
        rows = ed[ed["probe"] == probe]
        main = rows[rows["rule"] != "guarded"]
        guarded = rows[rows["rule"] == "guarded"]
        if not len(main):
            continue
        first = main.iloc[0]
        entry = {"ed": _clean(first["ed"]), "edr": _clean(first["edr"]), "rule": str(first["rule"]),
                 "threshold": _clean(first["threshold"]), "description": str(first["description"])}
        if entry["ed"] is not None:
            entry["ed"] = int(entry["ed"])
        if len(guarded):
            g = guarded.iloc[0]
            gd = _clean(g["ed"])
            entry["guarded"] = {"ed": None if gd is None else int(gd), "edr": _clean(g["edr"]),
                                "threshold": _clean(g["threshold"])}
        else:
            entry["guarded"] = None
        out[probe] = entry
    return out


def to_json(result, from_cache: bool) -> dict[str, Any]:  # noqa: C901 - one flat JSON document, one branch per optional table
    """The ``--json`` document of a run (only the parts of the probes that ran; null, never NaN)."""
    meta = result.meta
    tables = result.tables
    doc: dict[str, Any] = {
        "run_id": meta["run_id"],
        "from_cache": bool(from_cache),
        "model": {"name": meta.get("model_name"), "n_layers": meta.get("n_layers"),
                  "architecture": meta.get("architecture"), "dtype": meta.get("dtype"),
                  "fingerprint": meta.get("model_fingerprint"), "d_model": meta.get("d_model")},
        "prompt": {"text": meta.get("prompt_text"), "n_tokens": meta.get("n_tokens"),
                   "first_token_is_bos": meta.get("first_token_is_bos"),
                   "chat_template": meta.get("chat_template")},
        "tokens": [str(t) for t in tables["tokens"].sort_values("pos")["token"]],
        "probes": list(meta.get("probes") or []),
    }
    layer = tables["layer"]
    layers: dict[str, list] = {}
    present = list(dict.fromkeys(str(m) for m in layer["metric"])) if len(layer) else []
    for metric in list(LAYER_METRICS) + [m for m in present if m not in LAYER_METRICS]:
        if metric in present:
            rows = layer[layer["metric"] == metric].sort_values("layer")
            layers[metric] = [_clean(v) for v in rows["value"]]
    doc["layers"] = layers
    skip, output = tables["skip"], tables["skip_output"]
    if len(skip) or len(output):
        section: dict[str, Any] = {}
        for key, variant in (("future", "future"), ("current", "current"), ("local_future", "local_future"),
                             ("local_current", "local_current")):
            matrix = _matrix(skip, variant) if len(skip) else None
            if matrix is not None:
                section[key] = matrix
        for key, variant in (("output", "future"), ("current_output", "current")):
            vector = _vector(output, variant) if len(output) else None
            if vector is not None:
                section[key] = vector
        section["noise_floor"] = noise_floor(result)
        section["splits"] = [int(t) for t in meta.get("splits_used") or []]
        doc["skip"] = section
    erased = tables.get("erasure")
    if erased is not None and len(erased):
        grid = erased.pivot(index="depth", columns="pos", values="value").sort_index().sort_index(axis=1)
        doc["erasure"] = [[_clean(v) for v in row] for row in grid.to_numpy()]  # [L+1, T]
    attributions = tables.get("igrad")
    if attributions is not None and len(attributions):
        doc["igrad"] = {}
        for part, rows in attributions.groupby("part", sort=False):
            grid = rows.pivot(index="layer", columns="pos", values="value").sort_index().sort_index(axis=1)
            doc["igrad"][str(part)] = [[_clean(v) for v in row] for row in grid.to_numpy()]  # [L, T]
    doc["ed"] = ed_rows(result)
    doc["timings"] = {k: _clean(v) for k, v in (meta.get("timings") or {}).items()}
    doc["total_seconds"] = _clean(meta.get("total_seconds"))
    doc["created"] = meta.get("created")
    return doc


def _fmt_ed(ed: Any, edr: Any) -> str:
    if ed is None:
        return "no transition"
    return f"ED {int(ed):>3}  EDR {edr:.3f}"


def _fmt_seconds(value: float | None) -> str:
    return "?" if value is None else f"{value:.2f} s"


def summarize(result, from_cache: bool, load_seconds: float | None = None) -> str:
    """The short readable summary printed by ``effdepth probe``."""
    meta = result.meta
    lines = []
    lines.append(f"model     {meta.get('model_name')}  ({meta.get('architecture')}, L={meta.get('n_layers')}, "
                 f"d={meta.get('d_model')}, {meta.get('dtype')})")
    if meta.get("first_token_is_bos"):
        bos = f"first token is BOS {meta.get('bos_token')!r}"
    else:
        bos = "no BOS added"
    template = ", chat template" if meta.get("chat_template") else ""
    lines.append(f"tokens    {meta.get('n_tokens')} ({bos}{template})")
    lines.append(f"run id    {meta.get('run_id')}")
    eds = ed_rows(result)
    if eds:
        lines.append("")
        lines.append(f"{'effective depth':<18}{'P1 rule':<24}guarded rule")
        for probe, label in ED_PROBES:
            if probe not in eds:
                continue
            entry = eds[probe]
            if entry["guarded"] is not None:
                right = _fmt_ed(entry["guarded"]["ed"], entry["guarded"]["edr"])
                left = _fmt_ed(entry["ed"], entry["edr"])
            else:
                left = _fmt_ed(entry["ed"], entry["edr"])
                right = f"(effdepth's {entry['rule']} rule; no P1 rule exists)" if probe == "skip" else "-"
            lines.append(f"  {label:<16}{left:<24}{right}")
    if len(result.tables["skip"]) or len(result.tables["skip_output"]):
        floor = noise_floor(result)
        parts = [f"{k} {v:.1e}" for k, v in floor.items() if v is not None]
        splits = ", ".join(str(t) for t in meta.get("splits_used") or []) or "-"
        lines.append(f"  noise floor     {', '.join(parts) or '-'}  (split points {splits})")
    lines.append("")
    timings = meta.get("timings") or {}
    stages = ", ".join(f"{k} {_fmt_seconds(v)}" for k, v in timings.items())
    if from_cache:
        lines.append(f"timings   from cache (computed {meta.get('created')}: {stages}; "
                     f"total {_fmt_seconds(meta.get('total_seconds'))})")
    else:
        load = f"model load {_fmt_seconds(load_seconds)}, " if load_seconds is not None else ""
        lines.append(f"timings   {load}{stages} (probes total {_fmt_seconds(meta.get('total_seconds'))})")
    return "\n".join(lines)


def _item(args):
    """The benchmark item of ``--item DATASET:INDEX``, or None."""
    if not getattr(args, "item", None):
        return None
    from effdepth import datasets

    name, _, index = args.item.partition(":")
    if not index.strip().lstrip("-").isdigit():
        raise PromptError(f"--item takes DATASET:INDEX, e.g. gsm8k:0, not {args.item!r}.")
    return datasets.get_item(name.strip(), int(index))


def _answer(args, text: str) -> str | None:
    """The answer span for erasure / IG: --answer, else the item's gold answer, else the last word."""
    from effdepth import engine

    if not any(p in args.probes for p in engine.ANSWER_PROBES):
        return None
    if getattr(args, "answer", None):
        return args.answer
    item = _item(args)
    return item.answer if item is not None else engine.default_answer(text)


def _read_text(args) -> str:
    if args.text is not None:
        return args.text
    item = _item(args)
    if item is not None:
        return item.text
    if args.text_file == "-":
        data = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read()
        if isinstance(data, str):
            return data
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PromptError(f"The text on standard input is not UTF-8 ({exc.reason} at byte {exc.start}).") from exc
    path = Path(args.text_file).expanduser()
    if not path.is_file():
        raise PromptError(f"The text file {path} does not exist (or is not a file).")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise PromptError(f"The text file {path} is not UTF-8 text ({exc.reason} at byte {exc.start}).") from exc
    except OSError as exc:
        raise PromptError(f"The text file {path} cannot be read ({exc.strerror or exc}).") from exc


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 8,16, not {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("give at least one split point")
    return values


def _name_list(text: str) -> tuple[str, ...]:
    return tuple(part for part in text.replace(" ", "").split(",") if part)


def _store(args):
    from effdepth.store import Store

    return Store(args.cache)


# ----------------------------------------------------------------------------------------------
# Commands
# ----------------------------------------------------------------------------------------------


def cmd_probe(args) -> int:
    from effdepth import engine, models
    from effdepth.compute import Request, check, compute

    text = _read_text(args)
    if not text.strip():
        raise PromptError("The prompt is empty. Give some text with --text or a non-empty --text-file.")
    config = engine.ProbeConfig(probes=args.probes, splits=args.splits, seed=args.seed,
                                skip_variants=args.skip_variants, answer=_answer(args, text),
                                ig_steps=args.ig_steps, ig_parts=args.ig_parts)
    extra = None
    if getattr(args, "item", None):
        name, _, index = args.item.partition(":")
        extra = {"dataset": name.strip(), "item_index": int(index)}
    request = Request(text, args.dtype, args.chat_template, config, extra)
    check(request)  # before the model is even resolved
    spec = models.resolve_model(args.model)
    progress = TqdmProgress(enabled=not args.quiet)
    load_seconds: list[float] = []

    @contextmanager
    def load(notify):
        clock = time.perf_counter()
        try:
            loaded = models.load_model(spec, args.dtype, progress=notify, device_map=args.device_map)
            load_seconds.append(time.perf_counter() - clock)
            yield loaded
        finally:
            progress.close()

    store = None if args.no_cache else _store(args)
    result, from_cache = compute(store, request, load, fingerprint=spec.fingerprint, progress=progress)
    summary = summarize(result, from_cache, load_seconds[0] if load_seconds else None)
    if args.json == "-":
        print(summary, file=sys.stderr)
        print(json.dumps(to_json(result, from_cache), allow_nan=False, indent=1))
        return 0
    print(summary)
    if args.json:
        path = Path(args.json).expanduser()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(to_json(result, from_cache), allow_nan=False, indent=1) + "\n")
        except OSError as exc:
            raise EffdepthError(f"Cannot write the JSON file {path} ({exc.strerror or exc}).") from exc
        print(f"json      {path}")
    return 0


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


def cmd_sweep(args) -> int:  # noqa: C901 - to split into run / aggregate / report (the house issue)
    """Probe many benchmark items (resumable), then print the aggregate ED/EDR with bootstrap CIs.

    Unusable JSONL items and items whose probes raise an EffdepthError (e.g. too long for the context)
    are reported and skipped, and listed again at the end; other errors still stop the sweep. Items
    too short for the future-effect skip are named and left out of the depth score.
    """
    from effdepth import datasets, engine, models, sweeps

    def skipped_summary(failed) -> str | None:
        parts = [f"line {b.line}: {b.reason}" for b in bad]
        parts += [f"{item.dataset}[{item.index}]: {str(err).rstrip('.')}" for item, err in failed]
        if not parts:
            return None
        return f"{len(parts)} item{'' if len(parts) == 1 else 's'} skipped: " + "; ".join(parts)

    items, bad = _sweep_items(args)
    rank, _ = sweeps.dist_env()
    if bad and rank == 0:
        print(f"{len(bad)} of {len(items) + len(bad)} items of {args.jsonl} cannot be probed:", file=sys.stderr)
        for b in bad:
            print(f"  {b}", file=sys.stderr)
    if not items:
        raise PromptError("No items selected: check --dataset/--jsonl, --start and --n."
                          + (f" {skipped_summary([])}." if bad else ""))
    config = engine.ProbeConfig(probes=args.probes, splits=args.splits, seed=args.seed,
                                skip_variants=args.skip_variants, ig_steps=args.ig_steps,
                                ig_parts=args.ig_parts)  # sweep gives each item its own answer
    store = _store(args)
    max_tokens = args.max_tokens if args.max_tokens is not None else (
        400 if (args.dataset or "").startswith("aime") else None)
    load = functools.partial(models.load_model, device_map=args.device_map) if args.device_map else None
    if max_tokens:  # the ≤ 400-token filter (docs/SPEC.md §2) needs the model's tokenizer
        loaded = models.load_model(args.model, args.dtype, device_map=args.device_map)
        items, dropped = datasets.filter_by_tokens(items, loaded.tokenizer, max_tokens)
        print(f"token filter ≤ {max_tokens}: kept {len(items)}, dropped {dropped}", file=sys.stderr)
        load = lambda *_a, **_k: loaded  # noqa: E731 - reuse the model loaded for the filter
    clock = time.perf_counter()
    failed: list = []
    quiet = (lambda stage, frac=None: None) if args.quiet else None  # None: sweep's own tqdm bar
    ids = sweeps.sweep_distributed(args.model, items, store, config, args.dtype, progress=quiet, load=load,
                                  skip_errors=(EffdepthError,), failed=failed)
    if rank != 0:
        return 0
    summary = skipped_summary(failed)
    if not ids and failed:
        raise PromptError(f"No item could be probed. {summary}.")
    elapsed = time.perf_counter() - clock
    frames, counts = sweeps.collect(store, ids)
    print(f"{args.model}: {len(ids)} items of {args.jsonl or args.dataset} "
          f"[{elapsed:.1f} s this call, {elapsed / max(len(ids), 1):.1f} s/item]")
    for how, label in (("token", "token-weighted (P1)"), ("prompt", "per-prompt mean (P2)")):
        if not frames:
            break
        ci = sweeps.bootstrap_ci(frames, counts, how=how, n_boot=args.n_boot)
        if not len(ci.ed):  # e.g. a skip-only sweep: no per-layer curves to aggregate
            continue
        print(f"\nED / EDR of the aggregate curve, {label}, 95% bootstrap CI over items:")
        for r in ci.ed.itertuples():
            if pd_isna(r.ed):
                print(f"  {r.probe:8s} {r.rule:8s} no transition")
            else:
                print(f"  {r.probe:8s} {r.rule:8s} ED {int(r.ed):3d}  EDR {r.edr:.2f} "
                      f"[{r.edr_lo:.2f}, {r.edr_hi:.2f}]  (no transition in {r.frac_none:.0%})")
    dist = sweeps.ed_distribution(sweeps.per_item_ed(frames)) if frames else None
    if dist is not None and len(dist):
        print("\nper-item ED (each item on its own): median [min, max], mean EDR, items with no transition")
        for r in dist.itertuples():
            if r.n_none == r.n:
                print(f"  {r.probe:8s} {r.rule:8s} no transition in any of {r.n} items")
            else:
                print(f"  {r.probe:8s} {r.rule:8s} ED {r.ed_median:5.1f} [{r.ed_min:.0f}, {r.ed_max:.0f}]  "
                      f"EDR {r.edr_mean:.2f}  none {r.n_none}/{r.n}")
    if ids and "skip" in config.probes and "future" not in config.skip_variants:
        print("\nno depth score: it needs the future-effect skip (add --skip-variants future).")
    elif ids and "skip" in config.probes:
        metas = {rid: store.meta(rid) or {} for rid in ids}
        matrices = {rid: store.table(rid, "skip") for rid in ids}
        outputs = {rid: store.table(rid, "skip_output") for rid in ids}
        bins = {rid: (metas[rid].get("bin") or metas[rid].get("dataset") or "all") for rid in ids}
        result = sweeps.depth_score_by_bin(matrices, outputs, bins, n_tokens=counts)
        names = {rid: f"{metas[rid].get('dataset')}[{metas[rid].get('item_index')}]" for rid in ids}
        print("\ndepth score (centre of mass of the skip effect over the skipped layer):")
        for line in sweeps.left_out_messages(result.left_out, len(ids), names):
            print(f"  {line}")
        left = result.left_out
        for r in result.scores.itertuples():
            if r.n_items == 0:  # every item of the bin was left out
                reasons = set(left.loc[left["bin"] == r.bin, "reason"])
                why = sweeps.LEFT_OUT_REASONS[reasons.pop()] if len(reasons) == 1 else "left out"
                who = "its only item is" if r.n_left_out == 1 else f"all {r.n_left_out} items are"
                value = f"n/a ({who} {why})"
            elif r.depth_score is None or pd_isna(r.depth_score):
                value = "n/a"
            else:
                value = f"{r.depth_score:.2f}"
            print(f"  {r.bin:12s} {r.effect:5s} effect, {r.reduce:4s} over {r.n_items} items: {value}")
    if summary:
        print(f"\n{summary}.")
    return 0


def pd_isna(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or str(value) == "<NA>"


# ----------------------------------------------------------------------------------------------
# Parser and entry point
# ----------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="effdepth", description="Measure the effective depth of a language model on a text.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    cache_opt = argparse.ArgumentParser(add_help=False)
    cache_opt.add_argument("--cache", metavar="PATH", default=None,
                           help="result cache file (default: $EFFDEPTH_CACHE or cache/effdepth.duckdb)")

    # What is probed and how: shared by `probe` and `sweep` (all of it is part of the cache key).
    probe_opts = argparse.ArgumentParser(add_help=False)
    probe_opts.add_argument("--probes", type=_name_list, default=DEFAULT_PROBES,
                            help="comma-separated subset of " + ",".join(PROBE_CHOICES)
                                 + " (default: " + ",".join(DEFAULT_PROBES) + "; erasure and igrad are slow)")
    probe_opts.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    probe_opts.add_argument("--splits", type=_int_list, default=None,
                            help="split points t for the future-effect skip, e.g. 8,16 (default: drawn as in P2)")
    probe_opts.add_argument("--seed", type=int, default=123, help="seed for drawing split points (default 123)")
    probe_opts.add_argument("--skip-variants", type=_name_list, default=SKIP_VARIANTS,
                            help="comma-separated subset of " + ",".join(SKIP_VARIANTS)
                                 + " (default: all; each adds its noise floor)")
    probe_opts.add_argument("--ig-steps", type=int, default=256,
                            help="integrated-gradient steps (P2: 256; fewer is faster and less exact)")
    probe_opts.add_argument("--device-map", choices=("auto", "cpu"), default=None,
                            help="auto: spread a big model over the GPUs and RAM with accelerate "
                                 "(default: one device)")
    probe_opts.add_argument("--ig-parts", type=_name_list, default=("layer",),
                            help="comma-separated subset of layer,attn,mlp (P1: layer; P2: all three)")

    probe = sub.add_parser("probe", parents=[cache_opt, probe_opts], help="run the probes on one text",
                           description="Run the probes on one text and print ED / EDR per probe.")
    probe.add_argument("--model", required=True,
                       help="embedded model name, model directory, hub id in the HF cache, or .gguf file")
    source = probe.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", help="the prompt")
    source.add_argument("--text-file", metavar="FILE", help="read the prompt from FILE ('-': stdin)")
    source.add_argument("--item", metavar="DATASET:INDEX",
                        help="a benchmark item, teacher-forced as in docs/SPEC.md §2, e.g. gsm8k:0 or aime2025:3")
    probe.add_argument("--answer", metavar="TEXT",
                       help="erasure / IG: the answer that ends the text (default: the item's gold answer, "
                            "else the last word)")
    probe.add_argument("--chat-template", action="store_true", help="wrap the text in the model's chat template")
    probe.add_argument("--json", metavar="OUT", help="also write the results as JSON to OUT ('-': stdout)")
    probe.add_argument("--no-cache", action="store_true", help="neither read nor write the result cache")
    probe.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    probe.set_defaults(func=cmd_probe)

    runs = sub.add_parser("runs", parents=[cache_opt], help="list the cached runs")
    runs.set_defaults(func=cmd_runs)

    export = sub.add_parser("export", parents=[cache_opt], help="write one cached run as parquet or CSV files")
    export.add_argument("run_id", metavar="RUN_ID", help="a run id from `effdepth runs`")
    export.add_argument("--parquet", metavar="DIR", help="write meta.parquet and one parquet file per table")
    export.add_argument("--csv", metavar="DIR", help="write meta.csv and one CSV file per table")
    export.set_defaults(func=cmd_export)

    cache = sub.add_parser("cache", parents=[cache_opt], help="show the cache file, or --reset it",
                           description="Without options: show the cache file. --reset moves it aside to "
                                       "<name>.corrupt-<timestamp> (nothing is deleted) so a new one starts.")
    cache.add_argument("--reset", action="store_true", help="move the cache file aside and start a new one")
    cache.add_argument("--verify", action="store_true",
                       help="recompute the runs stored without their own checks (older caches) and replace them")
    cache.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    cache.set_defaults(func=cmd_cache)

    sweep_p = sub.add_parser("sweep", parents=[cache_opt, probe_opts], help="probe many benchmark items (resumable)",
                             description="Run the probes on benchmark items; items already cached are "
                                         "skipped. Under `accelerate launch -m effdepth sweep ...` the items "
                                         "are sharded across processes and merged into the cache at the end.")
    sweep_p.add_argument("--model", required=True)
    items_src = sweep_p.add_mutually_exclusive_group(required=True)
    items_src.add_argument("--dataset", help="gsm8k, aime2025, manual, addition or multiplication")
    items_src.add_argument("--jsonl", metavar="FILE",
                           help='your own items: one {"prompt"|"question": ..., "answer": ..., "bin"?: ...} per line')
    sweep_p.add_argument("--n", type=int, default=20, help="number of items (default 20)")
    sweep_p.add_argument("--start", type=int, default=0, help="index of the first item")
    sweep_p.add_argument("--max-tokens", type=int, default=None,
                         help="drop items longer than this (default: 400 for AIME as in P1, else none)")
    sweep_p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (default 1000)")
    sweep_p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sweep_p.set_defaults(func=cmd_sweep)
    install = sub.add_parser("install-default", help="install and convert the default embedded model")
    install.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    install.set_defaults(func=cmd_install_default)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except EffdepthError as err:
        message = str(err).encode("utf-8", "backslashreplace").decode("utf-8")  # never fail on a quoted input
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
