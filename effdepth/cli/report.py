"""What ``effdepth probe`` prints: the one-screen summary and the JSON document of a run.
"""

from __future__ import annotations

import math
from typing import Any

from effdepth import checks, depth, positions
from effdepth.contract import reduced_rows

ED_PROBES = (("cosine", "cosine"), ("kl", "logit-lens KL"), ("overlap", "top-5 overlap"),
             ("shortcut_kl", "shortcut-lens KL"), ("shortcut_overlap", "shortcut overlap"), ("skip", "layer skipping"))


LAYER_METRICS = ("cos_att", "cos_mlp", "cos_layer", "cos_mu", "rc_att", "rc_mlp", "rc_layer", "kl", "overlap",
                 "entropy", "rank", "shortcut_kl", "shortcut_overlap", "shortcut_entropy", "shortcut_rank",
                 "skip_layer_effect", "skip_output")


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
    rows = reduced_rows(skip, variant)
    if not len(rows):
        return None
    grid = rows.pivot(index="skipped", columns="affected", values="value").sort_index().sort_index(axis=1)
    return [[_clean(v) for v in row] for row in grid.to_numpy()]


def _vector(output, variant: str) -> list[float | None] | None:
    rows = reduced_rows(output, variant).sort_values("skipped")
    return [_clean(v) for v in rows["value"]] if len(rows) else None


def noise_floor(result) -> dict[str, float | None]:
    """Max value over the ``noise_*`` variants in the skip matrix and in the output change."""
    return {key: _clean(checks.noise_floor(result.tables[name]))
            for key, name in (("matrix", "skip"), ("output", "skip_output"))}


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


def to_json(result, from_cache: bool,  # noqa: C901 - one flat JSON document, one branch per optional table
            segments=None) -> dict[str, Any]:
    """The ``--json`` document of a run (only the parts of the probes that ran; null, never NaN).

    ``segments``: (size, frame) of ``segment_table``: the ED of every segment of that many measured positions."""
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
    committed = depth.token_depth(tables["layer_token"], int(meta["n_layers"])) if meta.get("n_layers") else None
    if committed is not None and len(committed):  # per position; null where a windowed run did not measure
        by_pos = dict(zip(committed["pos"].astype(int), committed["value"].astype(int)))
        doc["token_depth"] = [by_pos.get(pos) for pos in range(int(meta["n_tokens"]))]
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
    if meta.get("measured"):
        doc["measured_positions"] = list(meta["measured"])
    if segments is not None:
        from effdepth import sweeps

        doc["segment_size"] = int(segments[0])
        doc["segments"] = sweeps.segments_json(segments[1])
    if meta.get("generation") is not None:  # generate, then probe: what the model wrote, and where it starts
        doc["generation"] = meta["generation"]
        doc["prompt_tokens"] = meta.get("prompt_tokens")
    doc["ed"] = ed_rows(result)
    trust = checks.trust(meta, tables.get("skip"))
    doc["trust"] = {"level": trust.level, "residual_closure": _clean(trust.closure), "lens_last": _clean(trust.lens),
                    "noise_floor": _clean(trust.noise), "problems": list(trust.problems)}
    doc["timings"] = {k: _clean(v) for k, v in (meta.get("timings") or {}).items()}
    doc["total_seconds"] = _clean(meta.get("total_seconds"))
    doc["created"] = meta.get("created")
    return doc


def segment_table(result, size: int):
    """(size, frame): every ED rule per segment of ``size`` measured positions of a run (``sweeps.segments``)."""
    from effdepth import sweeps

    return size, sweeps.segments(result.tables["layer_token"], size)


def segment_lines(segments) -> list[str]:
    """The summary's table of EDR per segment (P1's rules, with the bootstrap interval over positions)."""
    size, frame = segments
    if not len(frame):
        return []
    p1 = frame[frame["rule"] == "p1"]
    probes = [p for p, _ in ED_PROBES if p in set(p1["probe"])]
    lines = ["", f"EDR per segment of {size} positions (P1 rule, 95 % interval over the segment's positions)",
             f"  {'positions':<15}" + "".join(f"{dict(ED_PROBES)[p]:<24}" for p in probes)]
    for (start, stop), group in p1.groupby(["start", "stop"], sort=True):
        cells = []
        for probe in probes:
            row = group[group["probe"] == probe].iloc[0]
            cells.append("no transition" if pd_isna(row["ed"]) else
                         f"{row['edr']:.3f} [{row['edr_lo']:.2f}, {row['edr_hi']:.2f}]")
        lines.append(f"  {f'{start}–{stop - 1}':<15}" + "".join(f"{c:<24}" for c in cells))
    return lines


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
    if meta.get("measured"):
        spec = (meta.get("probe_config") or {}).get("positions", "all")
        lines.append(f"measured  {positions.describe(spec, meta['measured'], int(meta['n_tokens']))}")
    lines.append(f"run id    {meta.get('run_id')}")
    generation = meta.get("generation")
    if generation:
        how = "sampled, seed {}".format(generation["settings"].get("seed")) if generation["settings"].get("sample") \
            else "greedy"
        lines.append(f"continued {generation['n_new_tokens']} new tokens ({how}) from position "
                     f"{meta.get('prompt_tokens')}: {generation['text'][:60]!r}")
    trust = checks.trust(meta, result.tables.get("skip"))
    verdict = {"green": "pass", "amber": "OFF", "unverified": "unverified"}[trust.level]
    lines.append(f"checks    {verdict}: {trust.numbers() if trust.level != 'unverified' else trust.problems[0]}")
    lines += [f"          - {problem}" for problem in trust.problems if trust.level == "amber"]
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


def pd_isna(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or str(value) == "<NA>"


def ready_line(run) -> str:
    """One line for the probe a run in progress has just finished (``effdepth probe`` prints it at once)."""
    probe = (run.meta.get("probes") or ["?"])[-1]
    eds = ed_rows(run)
    shown = {"cosine": ("cosine",), "logit_lens": ("kl", "overlap"), "skip": ("skip",)}.get(probe, ())
    parts = [f"{name} {_fmt_ed(eds[name]['ed'], eds[name]['edr'])}" for name in shown if name in eds]
    seconds = (run.meta.get("timings") or {}).get(probe)
    took = f" [{_fmt_seconds(seconds)}]" if seconds is not None else ""
    return f"ready     {probe}{took}" + (f": {', '.join(parts)}" if parts else "")


def print_with_json(args, summary: str, document: dict) -> int:
    """Print ``summary``, and ``document`` as JSON where ``--json`` asks (``-``: on stdout, the summary then on
    stderr; a path: written there)."""
    import json
    import sys
    from pathlib import Path

    from effdepth.errors import EffdepthError

    text = json.dumps(document, allow_nan=False, indent=1)
    if args.json == "-":
        print(summary, file=sys.stderr)
        print(text)
        return 0
    print(summary)
    if args.json:
        path = Path(args.json).expanduser()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text + "\n")
        except OSError as exc:
            raise EffdepthError(f"Cannot write the JSON file {path} ({exc.strerror or exc}).") from exc
        print(f"json      {path}")
    return 0
