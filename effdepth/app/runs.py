"""The Runs page's table: one row per stored run, with its EDRs and what it holds."""

from __future__ import annotations

import math
from collections.abc import Mapping

import pandas as pd

from effdepth.app.summary import ed_value, short_model_name
from effdepth.app.text import _one_line

PROBE_SHORT = {"cosine": "cos", "logit_lens": "lens", "shortcut_lens": "shortcut", "skip": "skip"}


RUNS_COLUMNS = ["model", "item", "prompt", "tokens", "dtype", "probes", "EDR cosine", "EDR KL", "EDR overlap",
                "EDR skip", "when", "run_id"]


def runs_table(runs: pd.DataFrame, ed_tables: Mapping[str, pd.DataFrame] | None = None,
               text_filter: str = "") -> pd.DataFrame:
    """The store's runs as a display table (EDR per probe by the P1 / proposed rule), filtered."""
    if runs is None or not len(runs):
        return pd.DataFrame(columns=RUNS_COLUMNS)
    ed_tables = ed_tables or {}
    rows = []
    for _, run in runs.iterrows():
        run_id = str(run.get("run_id"))
        ed = ed_tables.get(run_id)
        row = {
            "model": short_model_name(run.get("model_name")),
            "item": item_label(run.get("dataset"), run.get("item_index")),
            "prompt": _one_line(run.get("prompt_text"), 60),
            "tokens": run.get("n_tokens"),
            "dtype": run.get("dtype"),
            "probes": ", ".join(PROBE_SHORT.get(p, p) for p in _as_list(run.get("probes"))),
        }
        summary = run.get("ed_summary") if isinstance(run.get("ed_summary"), Mapping) else {}
        for probe, col in (("cosine", "EDR cosine"), ("kl", "EDR KL"), ("overlap", "EDR overlap"),
                           ("skip", "EDR skip")):
            edr = None
            if ed is not None and len(ed):
                _, edr = ed_value(ed, probe, "proposed" if probe == "skip" else "p1")
            elif probe in summary:
                edr = (summary.get(probe) or {}).get("edr")
            row[col] = None if edr is None or pd.isna(edr) else round(float(edr), 3)
        row["when"] = _when(run.get("created"))
        row["run_id"] = run_id
        rows.append(row)
    table = pd.DataFrame(rows, columns=RUNS_COLUMNS)
    needle = (text_filter or "").strip().lower()
    if needle:
        hay = (runs["model_name"].astype(str).reset_index(drop=True) + " "
               + table["item"].astype(str) + " "
               + runs["prompt_text"].astype(str).reset_index(drop=True) + " "
               + table["run_id"].astype(str) + " " + table["dtype"].astype(str)).str.lower()
        table = table[hay.str.contains(needle, regex=False)]
    return table.reset_index(drop=True)


def item_label(dataset, index) -> str:
    """"gsm8k #3" for a benchmark item's run ("" for a text of one's own): sweep rows share their
    instruction, so the prompt column alone does not tell them apart."""
    if dataset is None or (isinstance(dataset, float) and math.isnan(dataset)) or not str(dataset):
        return ""
    return f"{dataset} #{int(index)}" if index is not None and not pd.isna(index) else str(dataset)


def _as_list(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        import json

        try:
            parsed = json.loads(value)
            return [str(v) for v in parsed] if isinstance(parsed, list) else [value]
        except ValueError:
            return [value]
    try:
        return [str(v) for v in value]
    except TypeError:
        return [str(value)]


def _when(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    try:
        stamp = pd.Timestamp(value)
        if stamp.tzinfo is not None:
            stamp = stamp.tz_convert("UTC").tz_localize(None)
        return stamp.strftime("%Y-%m-%d %H:%M")
    except (ValueError, TypeError):
        return str(value)
