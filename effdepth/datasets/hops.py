"""``hops``: a hop-count difficulty axis built offline (issue 12 §2; P2 asked it of MQuAKE's 2/3/4 hops).

An item binds letters in a chain, ``A = 7``, ``K = A``, ``Q = K`` …, next to a distractor chain of the
same length ending in another digit, the statements of both shuffled; the question asks for the last
letter of the target chain. Answering takes k composition steps for a chain of k bindings, so the bin
is the hop count k = 1 … 4. The gold answer (one digit) is teacher-forced after the question, and the
split is at the answer's start (P2's depth-score rule for MQuAKE). Letters, digits and orders come from
``random.Random(HOPS_SEED)``, so item i is the same everywhere.

Example (2 hops): ``Facts: R = 5. W = 2. M = R. H = W. Question: what is M? Answer:`` → `` 5``.
"""

from __future__ import annotations

import random

from effdepth.datasets.formats import Item

HOPS_SEED = 7
MAX_HOPS = 4
PER_BIN = 25  # items per hop count: 100 in all
LETTERS = tuple("ABCDEFGHJKLMNPQRSTUVWXYZ")  # no I or O (they read as digits)


def hop_records(per_bin: int = PER_BIN, max_hops: int = MAX_HOPS, seed: int = HOPS_SEED) -> tuple[tuple, ...]:
    """(hops, statements, target letter, answer digit) for every item, hop counts interleaved 1, 2, … so
    that the first n items cover every bin."""
    rng = random.Random(seed)
    records = []
    for _ in range(per_bin):
        for hops in range(1, max_hops + 1):
            letters = rng.sample(LETTERS, 2 * hops)
            target, distractor = letters[:hops], letters[hops:]
            value, other = rng.sample(range(1, 10), 2)
            statements = _chain(target, value) + _chain(distractor, other)
            order = _shuffled_keeping_chains(statements, hops, rng)
            records.append((hops, tuple(order), target[-1], value))
    return tuple(records)


def _chain(letters: list[str], value: int) -> list[str]:
    """``A = 7``, then each next letter bound to the one before."""
    return [f"{letters[0]} = {value}"] + [f"{b} = {a}" for a, b in zip(letters, letters[1:])]


def _shuffled_keeping_chains(statements: list[str], hops: int, rng: random.Random) -> list[str]:
    """Interleave the two chains at random, each chain's statements staying in their order (a binding is
    stated before it is used, so every item is answerable left to right)."""
    first, second = list(statements[:hops]), list(statements[hops:])
    out = []
    while first or second:
        source = first if second == [] or (first and rng.random() < 0.5) else second
        out.append(source.pop(0))
    return out


def hops_item(index: int, record: tuple) -> Item:
    hops, statements, target, value = record
    prompt = f"Facts: {'. '.join(statements)}. Question: what is {target}? Answer:"
    return Item(dataset="hops", index=index, prompt=prompt, answer=f" {value}",
                bin=f"{hops} hop" + ("s" if hops > 1 else ""),
                meta={"hops": hops, "target": target, "seed": HOPS_SEED})
