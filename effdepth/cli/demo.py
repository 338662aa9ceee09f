"""``effdepth demo``: precompute a talk set into the cache, so that demo mode on a laptop without a network
shows every page filled (issue 12 §4).

The set: every example prompt on each of the chosen models (Explore, Runs); the demo pair's GSM8K, AIME
2025 and hops sweeps (Difficulty, Compare's items mode); one linear map between the pair (Compare). Each
step is skipped when the cache holds it already, so the command resumes; ``--plan`` prints the steps and
their estimated time without running anything.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from effdepth import estimate
from effdepth.cli.inputs import _store
from effdepth.errors import EffdepthError, PromptError

#: the sweeps of the demo pair: (dataset, items)
DEMO_SWEEPS = (("gsm8k", 20), ("aime2025", 30), ("hops", 40))
DEMO_PROBES = ("cosine", "logit_lens", "skip")


@dataclass
class Step:
    """One piece of the talk set on one model (``model``; for the map, the source, with ``target``)."""

    kind: str  # "examples" | "sweep" | "linmap"
    model: str
    texts: list[str] = field(default_factory=list)
    dataset: str = ""
    n: int = 0
    target: str = ""
    seconds: float = 0.0  # estimated

    @property
    def label(self) -> str:
        if self.kind == "examples":
            return f"{len(self.texts)} example prompts on {self.model}"
        if self.kind == "sweep":
            return f"{self.dataset} sweep of {self.model} ({self.n} items)"
        return f"linear map {self.model} -> {self.target}"


def _shape_seconds(model: str, n_tokens: int, probes) -> float:
    from effdepth import app

    shape = app.model_shape(model)
    if shape is None:
        return 0.0
    sizes = estimate.Shape(shape[0], shape[1], shape[2], max(2, n_tokens))
    total = estimate.flops(sizes, "forward") + sum(estimate.flops(sizes, p) for p in probes)
    return estimate.seconds(total)


def _tokens(text: str) -> int:
    """A text's tokens from its characters (no tokenizer is loaded to plan)."""
    return int(len(text) / estimate.CHARS_PER_TOKEN)


def plan(models: list[str], sweep_n: int | None, pair: tuple[str, str]) -> list[Step]:
    """The talk set's steps in the order they run (each model's steps together: one load each)."""
    from effdepth import app, datasets

    steps: list[Step] = []
    for model in dict.fromkeys([*models, *pair]):
        if model in models:
            texts = list(app.EXAMPLES.values())
            seconds = sum(_shape_seconds(model, _tokens(t), DEMO_PROBES) for t in texts)
            steps.append(Step("examples", model, texts=texts, seconds=seconds))
        if model in pair:
            for dataset, n in DEMO_SWEEPS:
                n = min(n, sweep_n) if sweep_n else n
                items = datasets.items(dataset, n=n)
                seconds = sum(_shape_seconds(model, _tokens(it.text), DEMO_PROBES) for it in items)
                steps.append(Step("sweep", model, dataset=dataset, n=len(items), seconds=seconds))
        if model == pair[0]:  # the map reads the source, then the target: before the target's own steps
            steps.append(Step("linmap", pair[0], target=pair[1], seconds=_linmap_seconds(pair)))
    return steps


def _linmap_seconds(pair: tuple[str, str]) -> float:
    """Both forwards over the corpus plus the float64 normal equations (~half the float32 rate)."""
    from effdepth import app

    source, target = app.model_shape(pair[0]), app.model_shape(pair[1])
    if source is None or target is None:
        return 0.0
    from effdepth.datasets import corpus

    tokens, fit = corpus.estimated_tokens(), corpus.estimated_tokens(held_out=False)
    forward = sum(tokens * shape[0] * 2 * 12 * shape[1] ** 2 for shape in (source, target))
    normal = 2 * fit * (source[1] + 1) * (target[0] + 1) * target[1] * (source[0] + 1)
    return estimate.seconds(forward) + 2 * estimate.seconds(normal)


def cmd_demo(args) -> int:
    from effdepth import app

    models = [m.strip() for m in (args.models or "").split(",") if m.strip()] or _embedded()
    pair = tuple(m.strip() for m in args.pair.split(",")) if args.pair else tuple(app.DEMO_PAIR)
    if len(pair) != 2 or not all(pair):
        raise PromptError(f"--pair takes two models, shallow first: A,B (not {args.pair!r}).")
    specs = _check_names(models, pair, args.dtype)  # every name and the pair, before any plan or work
    steps = plan(models, args.sweep_n, pair)
    total = sum(s.seconds for s in steps)
    print(f"talk set: {len(steps)} steps, roughly {total / 60:.0f} min at {estimate.rate(args.dtype) / 1e9:.0f} "
          f"GFLOP/s ({args.dtype}, measured here; per-item overheads are left out; cached steps take no time)")
    for step in steps:
        print(f"  {step.label:<55} ~{step.seconds / 60:5.1f} min")
    peak = _peak_bytes(steps, specs, args.dtype)
    if peak is not None:
        print(f"peak memory ~{peak / 2**30:.1f} GB (one model in memory at a time; the largest step's load or fit)")
    if args.plan:
        return 0
    store = _store(args)
    store.check_writable()
    from tqdm.auto import tqdm

    clock = time.perf_counter()
    bar = tqdm(total=max(total, 1.0), unit="s", desc="talk set", disable=args.quiet,
               bar_format="{desc}: {percentage:3.0f}%|{bar:30}| {elapsed}<{remaining} {postfix}")
    loaded: dict = {}
    try:
        for step in steps:
            bar.set_postfix_str(step.label)
            _run_step(step, store, args.dtype, loaded)
            bar.update(step.seconds)
    finally:
        bar.close()
    print(f"talk set ready in {time.perf_counter() - clock:.0f} s; `make run` and switch demo mode on "
          "(or open any page with ?demo=1)")
    return 0


def _check_names(names: list[str], pair: tuple[str, str], dtype: str) -> dict:
    """Every model resolves and the pair can be mapped (PromptError / ModelNotFoundError), before any work;
    the resolved specs by name."""
    from effdepth import linear
    from effdepth import models as registry

    specs = {name: registry.resolve_model(name) for name in dict.fromkeys([*names, *pair])}
    linear.check_pair(specs[pair[0]], specs[pair[1]], dtype, dtype)
    return specs


def _peak_bytes(steps: list[Step], specs: dict, dtype: str) -> int | None:
    """The estimated peak of the largest step: a model's load (``models.memory``) or the map's fit."""
    from effdepth import linear
    from effdepth.datasets import corpus
    from effdepth.models.memory import estimate_memory_bytes

    peaks = []
    for step in steps:
        spec = specs[step.model]
        if step.kind == "linmap":
            peaks.append(linear.peak_bytes(spec, specs[step.target], dtype, dtype,
                                           corpus.estimated_tokens()))
        else:
            peaks.append(estimate_memory_bytes(spec, dtype))
    return max((p for p in peaks if p is not None), default=None)


def _embedded() -> list[str]:
    from effdepth.models import EMBEDDED

    return list(EMBEDDED)


def _model(name: str, dtype: str, loaded: dict):
    """The loaded model of ``name``, loading it (and dropping any other) when it is not the held one."""
    from effdepth import models

    if name not in loaded:
        loaded.clear()  # one model in memory at a time
        loaded[name] = models.load_model(name, dtype)
    return loaded[name]


def _run_step(step: Step, store, dtype: str, loaded: dict) -> None:
    from contextlib import nullcontext

    from effdepth import app, datasets, engine, linear, mapstore, models, sweeps
    from effdepth.compute import Request, compute
    from effdepth.datasets import corpus
    from effdepth.ridge import DEFAULT_ALPHA

    if step.kind == "examples":
        config = app.config_for()
        fingerprint = models.resolve_model(step.model).fingerprint
        for text in step.texts:
            compute(store, Request(text, dtype, False, config),
                    lambda notify: nullcontext(_model(step.model, dtype, loaded)), fingerprint=fingerprint)
    elif step.kind == "sweep":
        items = datasets.items(step.dataset, n=step.n)
        model = _model(step.model, dtype, loaded)
        items, _, _ = datasets.sweep_filter(items, model.tokenizer, step.dataset, context=model.max_context)
        sweeps.sweep(step.model, items, store, engine.ProbeConfig(probes=DEMO_PROBES), dtype,
                     progress=lambda *a: None, load=lambda *a, **k: _model(step.model, dtype, loaded),
                     skip_errors=(EffdepthError,))
    else:
        source, target = models.resolve_model(step.model), models.resolve_model(step.target)
        key = linear.map_key(source.fingerprint, target.fingerprint, dtype, dtype, corpus.corpus_id(), None,
                             DEFAULT_ALPHA)
        if mapstore.get_map(store, key) is None:
            loaded.clear()  # the map holds one model at a time and none while it fits: keep no other reference
            mapstore.put_map(store, linear.linear_map(lambda: models.load_model(step.model, dtype),
                                                      lambda: models.load_model(step.target, dtype)))


def add_parser(sub, cache_opt) -> None:
    """The ``demo`` subcommand."""
    demo = sub.add_parser("demo", parents=[cache_opt], help="precompute a talk set for demo mode",
                          description=__doc__.split("\n\n")[0].replace("\n", " "))
    demo.add_argument("--models", default=None,
                      help="comma-separated models for the example prompts (default: every embedded model)")
    demo.add_argument("--sweep-n", type=int, default=None,
                      help="at most this many items per sweep of the demo pair (default 20 / 30 / 40)")
    demo.add_argument("--pair", default=None, help="the demo pair, shallow first (default: the app's, "
                                                    "qwen2.5-coder-0.5b,qwen2.5-coder-1.5b)")
    demo.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    demo.add_argument("--plan", action="store_true", help="print the steps and their estimate, run nothing")
    demo.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(func=_checked)


def _checked(args) -> int:
    if args.sweep_n is not None and not 1 <= args.sweep_n <= 200:
        raise PromptError(f"--sweep-n must be between 1 and 200, not {args.sweep_n}.")
    return cmd_demo(args)
