"""Science for issue 18 §6: effective depth along the embedded instruct models' own long chains of thought.

For each model, 5 GSM8K questions are put through the model's chat template with a request for a long,
detailed solution, and the model writes greedily (``effdepth.generate``, the path of ``probe --generate``;
the continuation is cached beside the result cache). The probes (contributions and cosines, the logit lens)
then read prompt + continuation at every position, and ``sweeps.segments`` gives the ED of every rule per
segment of 256 positions, from the question to the end. The question / continuation boundary is the
continuation's first token. Writes one JSON row per (model, item, segment) and prints a table per model.

A model that stops (EOS) before ``--min-tokens`` is asked again with EOS suppressed until then (``--force``),
and the row says so.

    .venv/bin/python bench/trace_science.py --models smollm2-135m:float32 qwen2.5-coder-0.5b:bfloat16 \\
        qwen2.5-coder-1.5b:bfloat16 --items 5
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
ASK = ("Solve this problem. Think step by step, at length: restate what is given, reason through every "
       "step in full sentences, check each calculation twice, and only then give the final answer.\n\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["smollm2-135m:float32"])
    parser.add_argument("--items", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=2048)
    parser.add_argument("--min-tokens", type=int, default=1500)
    parser.add_argument("--segment", type=int, default=256)
    parser.add_argument("--out", default=str(ROOT / "results-trace-science.jsonl"))
    args = parser.parse_args()

    from effdepth import datasets, engine, models, sweeps
    from effdepth import generation as generate
    from effdepth.store import Store

    store = Store(None)
    for spec in args.models:
        name, dtype = spec.split(":")
        loaded = models.load_model(name, dtype)
        print(f"\n## {name} ({dtype})\n")
        print("| item | new tokens | T | " + " | ".join(f"seg {k}" for k in range(9)) + " |")
        for item in datasets.items("gsm8k", n=args.items):
            question = ASK + item.meta["question"]
            settings = generate.settings_for(args.new_tokens, chat_template=True)
            key = generate.cache_key(loaded.spec.fingerprint, loaded.dtype, question, settings)
            directory = generate.directory_for(store)
            clock = time.perf_counter()
            written = generate.cached_or_written(directory, key, lambda: generate.continue_text(
                loaded, question, settings))
            forced = False
            if written.n_new_tokens < args.min_tokens:  # stopped early: EOS held back until --min-tokens
                forced = True
                forced_settings = {**settings, "min_new_tokens": args.min_tokens}
                key = generate.cache_key(loaded.spec.fingerprint, loaded.dtype, question, forced_settings)
                written = generate.cached_or_written(directory, key, lambda: generate.continue_text(
                    loaded, question, forced_settings))
            gen_s = time.perf_counter() - clock
            config = engine.ProbeConfig(probes=("cosine", "logit_lens"))
            run, _ = store.get_or_compute(
                engine.run_key(loaded.spec.fingerprint, written.full_text, loaded.dtype, config, False),
                lambda: engine.run_probes(loaded, written.full_text, config, extra_meta=written.run_meta()))
            frame = sweeps.segments(run.tables["layer_token"], args.segment)
            p1 = frame[frame["rule"] == "p1"]
            cells = []
            for (start, stop), group in p1.groupby(["start", "stop"], sort=True):
                edr = {r.probe: (None if r.ed is None or str(r.ed) == "<NA>" else round(float(r.edr), 3))
                       for r in group.itertuples()}
                row = {"model": name, "dtype": dtype, "item": item.index, "new_tokens": written.n_new_tokens,
                       "forced": forced, "T": run.meta["n_tokens"], "prompt_tokens": written.prompt_tokens,
                       "start": int(start), "stop": int(stop), "edr": edr,
                       "edr_ci": {r.probe: [round(float(r.edr_lo), 3), round(float(r.edr_hi), 3)]
                                  for r in group.itertuples() if r.edr_lo == r.edr_lo},
                       "generate_s": round(gen_s, 1), "run_id": run.run_id, "date": time.strftime("%Y-%m-%d")}
                with open(args.out, "a") as out:
                    out.write(json.dumps(row) + "\n")
                cells.append("/".join("–" if edr.get(p) is None else f"{edr[p]:.2f}" for p in ("cosine", "kl")))
            print(f"| {item.index} | {written.n_new_tokens}{' (forced)' if forced else ''} | {run.meta['n_tokens']} | "
                  + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
