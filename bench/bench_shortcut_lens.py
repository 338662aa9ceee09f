"""How far the lens-based EDR moves under the linear shortcut lens (issue 12 §1b; docs/SPEC.md §15.2).

For each model: one ``effdepth sweep`` over GSM8K items with the logit lens and the shortcut lens (its first
run fits the lens on the shipped text), then the EDR of the aggregate curve under either lens (P1's and
the guarded rules, with the bootstrap CIs), and the fit's held-out KL per layer (early third, middle third,
last layer). Results go to bench/results-shortcut-lens.jsonl and one sweep document per model.

    .venv/bin/python bench/bench_shortcut_lens.py --models smollm2-135m gemma3-270m --n 10
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
RULES = ("p1", "guarded")


def _sweep(model: str, dtype: str, n: int, out: Path) -> float:
    command = [sys.executable, "-m", "effdepth", "sweep", "--model", model, "--dtype", dtype, "--dataset", "gsm8k",
               "--n", str(n), "--probes", "logit_lens,shortcut_lens", "--n-boot", "500", "--json", str(out), "-q"]
    clock = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT.parent)
    return time.perf_counter() - clock


def _edrs(document: dict) -> dict[str, dict]:
    """{probe/rule: (edr, lo, hi)} of the one bin of a GSM8K sweep."""
    rows = document["bins"][0]["ed"]
    return {f"{r['probe']}/{r['rule']}": (r["edr"], r.get("edr_lo"), r.get("edr_hi")) for r in rows
            if r["probe"] in ("kl", "overlap", "shortcut_kl", "shortcut_overlap")}


def _held_out(model: str, dtype: str) -> dict | None:
    """The stored fit's held-out report of this model (the newest lens file of its weights and dtype)."""
    from safetensors.torch import safe_open

    from effdepth import models

    spec = models.resolve_model(model)
    paths = sorted((models.cache_dir() / "lenses").glob(f"{spec.fingerprint}-{dtype}-*.safetensors"),
                   key=lambda p: p.stat().st_mtime)
    if not paths:
        return None
    with safe_open(str(paths[-1]), framework="pt") as handle:
        return json.loads(handle.metadata()["meta"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b"])
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--n", type=int, default=10)
    args = parser.parse_args()
    for model in args.models:
        out = ROOT / f"shortcut-sweep-{model}.json"
        seconds = _sweep(model, args.dtype, args.n, out)
        edrs = _edrs(json.loads(out.read_text()))
        fit = _held_out(model, args.dtype) or {}
        kl = fit.get("held_out_kl") or {"logit": [], "shortcut": []}
        n_layers = len(kl["logit"])
        thirds = {"early": range(0, max(1, n_layers // 3)), "middle": range(n_layers // 3, 2 * n_layers // 3),
                  "last": range(n_layers - 1, n_layers)}
        report = {lens: {name: round(float(np.mean([kl[lens][l] for l in span])), 3) for name, span in thirds.items()}
                  for lens in ("logit", "shortcut")} if n_layers else {}
        row = {"model": model, "dtype": args.dtype, "n_items": args.n, "sweep_seconds": round(seconds, 1),
               "fit_seconds": fit.get("seconds"), "n_fit_tokens": fit.get("n_fit_tokens"),
               "n_held_tokens": fit.get("n_held_tokens"), "edr": edrs, "held_out_kl": report}
        print(json.dumps(row))
        with open(ROOT / "results-shortcut-lens.jsonl", "a") as handle:
            handle.write(json.dumps(row) + "\n")
        for rule in RULES:
            for probe in ("kl", "overlap"):
                plain, short = edrs.get(f"{probe}/{rule}"), edrs.get(f"shortcut_{probe}/{rule}")
                print(f"  {model:<20} {probe:<8} {rule:<8} logit lens EDR {plain}  shortcut lens EDR {short}")


if __name__ == "__main__":
    main()
