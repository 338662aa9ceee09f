"""The parser and the entry point: user-facing errors print as ``error: <message>`` with exit code 2.
"""

from __future__ import annotations

import argparse
import sys

from effdepth.cli.commands import cmd_cache, cmd_export, cmd_install_default, cmd_probe, cmd_runs
from effdepth.cli.demo import add_parser as add_demo_parser
from effdepth.cli.inputs import _int_list, _name_list, _segment_size
from effdepth.cli.linmap import add_parser as add_linmap_parser
from effdepth.cli.sweep import cmd_sweep
from effdepth.contract import DEFAULT_IG_STEPS, DEFAULT_PROBES, DEFAULT_SEED, DEFAULT_SWEEP_N, DTYPES, SKIP_VARIANTS
from effdepth.contract import PROBES as PROBE_CHOICES
from effdepth.errors import EffdepthError


def _dtype(text: str) -> str:
    from effdepth.contract import dtype_name

    try:
        return dtype_name(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


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
    probe_opts.add_argument("--dtype", type=_dtype, default=DTYPES[0],
                            help="float32 or bfloat16 (also fp32, bf16; default float32)")
    probe_opts.add_argument("--splits", type=_int_list, default=None,
                            help="split points t for the future-effect skip, e.g. 8,16 (default: drawn as in P2)")
    probe_opts.add_argument("--seed", type=int, default=DEFAULT_SEED,
                            help=f"seed for drawing split points (default {DEFAULT_SEED}, P2's)")
    probe_opts.add_argument("--skip-variants", type=_name_list, default=SKIP_VARIANTS,
                            help="comma-separated subset of " + ",".join(SKIP_VARIANTS)
                                 + " (default: all; each adds its noise floor)")
    probe_opts.add_argument("--ig-steps", type=int, default=DEFAULT_IG_STEPS,
                            help="integrated-gradient steps (P2: 256; fewer is faster and less exact)")
    probe_opts.add_argument("--device-map", choices=("auto", "cpu"), default=None,
                            help="auto: spread a big model over the GPUs and RAM with accelerate "
                                 "(default: one device)")
    probe_opts.add_argument("--positions", default="all",
                            help="the positions every probe reads: all, last:N, A:B (positions A … B-1), from:A, "
                                 "stride:K or answer (the forward pass always covers the whole text; default all)")
    probe_opts.add_argument("--segments", type=_segment_size, default=None, metavar="N",
                            help="also the ED of every rule on each segment of N consecutive measured positions, "
                                 "with a bootstrap interval over its positions (effective depth along a trace)")
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
    probe.add_argument("--generate", type=int, metavar="N", default=None,
                       help="let the model continue the text by N tokens first (greedy), then probe text + "
                            "continuation (cached: the same text and settings do not generate again)")
    probe.add_argument("--sample-seed", type=int, default=None,
                       help="with --generate: sample the continuation with this seed instead of greedy")
    probe.add_argument("--temperature", type=float, default=1.0, help="with --sample-seed: the temperature")
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
    sweep_p.add_argument("--n", type=int, default=DEFAULT_SWEEP_N, help=f"number of items (default {DEFAULT_SWEEP_N})")
    sweep_p.add_argument("--start", type=int, default=0, help="index of the first item")
    sweep_p.add_argument("--max-tokens", type=int, default=None,
                         help="drop items longer than this (default: 400 for AIME as in P1, else none)")
    sweep_p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (default 1000)")
    sweep_p.add_argument("--json", metavar="OUT", help="also write the aggregate per bin as JSON to OUT ('-': stdout)")
    sweep_p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sweep_p.set_defaults(func=cmd_sweep)
    add_linmap_parser(sub, cache_opt)
    add_demo_parser(sub, cache_opt)
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
