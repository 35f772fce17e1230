"""Fixtures for the model-correctness suite: shared SmolLM2 engines and reference models (built once per
session, they are the expensive part), greedy sampling parameters and real-text prompts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from neutrino.bench.workload import slice_prompts

# SmolLM2 engines size their KV cache explicitly (16-token blocks of ~0.7 MiB in float32), so that the
# default 2 GiB budget is not reserved several times over. 640 blocks hold 32 prompts of 300 tokens.
SMOLLM2_NUM_BLOCKS = 640

# Real-ish English prose with names, numbers and punctuation; prompts are token slices of it.
PASSAGE = """\
The old harbour of Valmere was built in 1847, when the town still lived from herring and salt. Its two
stone piers, each a little over three hundred metres long, were laid by hand from granite quarried in the
hills to the north, and the work took eleven summers. When the railway arrived in 1869 the harbour master,
a stubborn man called Edvard Lindqvist, refused to let the new line run along the quay; the station was
therefore placed half a mile inland, which is why visitors today still walk down Market Street to reach
the water. By 1900 the fishing fleet had grown to ninety-two boats, but a storm on the night of 14 October
1903 destroyed almost a third of them, and the town never fully recovered its old trade.

Modern Valmere depends on tourism, a small shipyard and a research station that studies the cold currents
of the northern sea. The station's scientists measure water temperature, salinity and oxygen every six
hours from a buoy anchored four kilometres offshore. Their records show that the average surface
temperature in August has risen by about 1.4 degrees Celsius since 1980. Plankton blooms now begin almost
two weeks earlier in spring, and the cod that once spawned in the bay have moved farther north. Local
fishermen say they noticed the change long before the scientists published their first paper.

To make the traditional Valmere fish soup, start by melting two tablespoons of butter in a heavy pot.
Add one chopped onion, two carrots and a stalk of celery, and cook them gently for ten minutes without
letting them brown. Pour in a litre of fish stock and bring it to a simmer, then add four diced potatoes
and a bay leaf. When the potatoes are soft, stir in 200 millilitres of cream and lower the heat. Cut 500
grams of white fish and 200 grams of salmon into large pieces and let them poach in the soup for five
minutes. Season with salt, white pepper and a handful of chopped dill, and serve with dark rye bread.

In the spring of 2019 the town council voted, by seven votes to four, to replace the wooden footbridge
over the Asker river with a steel one. The decision was controversial. Supporters argued that the old
bridge, repaired many times since the 1950s, was no longer safe for the school children who crossed it
every morning. Opponents pointed out that the new design would cost 3.2 million crowns, nearly twice the
original estimate, and that it would block the view of the waterfall from the church square. After a
petition signed by 1,250 residents, the council agreed to a compromise: a slimmer bridge with a glass
railing, finished in September 2021 at a final cost of 2.9 million crowns.

A short guide for new volunteers at the Valmere library: the doors open at nine on weekdays and at ten on
Saturdays. Returned books go on the grey trolley behind the front desk, never directly back on the shelves,
because each one must first be checked for damage and scanned. Children's books are sorted by the colour
of the sticker on the spine: green for picture books, yellow for early readers and blue for chapter books.
If a visitor asks for help with the computers, write their name on the list by the window; the digital
assistant, Mrs Halvorsen, works on Tuesdays and Thursdays from one until five in the afternoon.

The mathematics teacher at the upper school likes to begin each year with the same puzzle. A farmer has
seventeen sheep, and all but nine run away; how many are left? Most students answer eight, and only a few
notice that the answer is nine. She then asks them to add up the numbers from one to one hundred, and
tells the story of the young Gauss, who paired the first number with the last, the second with the one
before last, and found fifty pairs that each sum to one hundred and one, for a total of 5050.
"""


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_dir: Path):
    """SmolLM2's fast tokenizer from the converted directory."""
    from neutrino.weights import load_tokenizer

    return load_tokenizer(smollm2_dir)


@pytest.fixture(scope="session")
def smollm2_llm(smollm2_dir: Path):
    """The shared float32 SmolLM2 engine with prefix caching off: the no-cache reference engine of the
    suite (logits, generation parity, per-request references, one-batch runs)."""
    from neutrino import LLM

    return LLM(
        model=str(smollm2_dir),
        dtype="float32",
        enable_prefix_caching=False,
        num_blocks=SMOLLM2_NUM_BLOCKS,
        max_num_seqs=64,
        max_num_batched_tokens=4096,
    )


@pytest.fixture(scope="session")
def smollm2_hf(smollm2_dir: Path):
    """transformers' float32 SmolLM2 (the reference implementation) loaded from the same directory."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="session")
def passage_ids(smollm2_tokenizer) -> list[int]:
    """Token ids of PASSAGE (no special tokens)."""
    return list(smollm2_tokenizer(PASSAGE, add_special_tokens=False)["input_ids"])


@pytest.fixture(scope="session")
def text_prompts(passage_ids: list[int]) -> Callable[..., list[list[int]]]:
    """Factory `text_prompts(num, min_len, max_len, seed=0)`: token slices of PASSAGE with lengths
    uniform in [min_len, max_len], from seeded random offsets."""

    def make(num: int, min_len: int, max_len: int, seed: int = 0) -> list[list[int]]:
        return slice_prompts(passage_ids, num, min_len, max_len, seed)

    return make


# A greedy divergence counts as a near-tie (tolerated, but reported as a warning) only when, at the first
# differing position, the two candidate tokens' float32 logits are closer than this: 10x the largest
# Neutrino-vs-transformers fp32 logits difference measured on SmolLM2 (~1e-4 at |logits| ~40).
NEAR_TIE = 1e-3

GreedyLogits = Callable[[int, list[int]], torch.Tensor]


def check_greedy_equal(
    label: str,
    refs: list[list[int]],
    outs: list[list[int]],
    next_logits: GreedyLogits,
    max_near_ties: int = 1,
) -> None:
    """Assert every `outs[i] == refs[i]`. At a divergence, `next_logits(i, ref_prefix)` (float32 [vocab]
    logits of the reference model after prompt i + ref_prefix) decides: a gap under NEAR_TIE between the
    two chosen tokens is a near-tie (warned about, at most `max_near_ties`), anything else fails."""
    import warnings

    near_ties, failures = [], []
    for i, (ref, out) in enumerate(zip(refs, outs, strict=True)):
        if ref == out:
            continue
        k = next(
            (j for j, (a, b) in enumerate(zip(ref, out, strict=False)) if a != b), min(len(ref), len(out))
        )
        if k == min(len(ref), len(out)):
            failures.append(
                f"{label} prompt {i}: lengths differ ({len(ref)} vs {len(out)} tokens): {ref} vs {out}"
            )
            continue
        logits = next_logits(i, ref[:k]).float()
        gap = float(logits[ref[k]] - logits[out[k]])
        top2 = logits.topk(2).values
        msg = (
            f"{label} prompt {i}: first divergence at generated token {k}: reference {ref[k]} vs {out[k]}, "
            f"reference logit gap {gap:.3e} (top-2 gap {float(top2[0] - top2[1]):.3e}); ref={ref} out={out}"
        )
        (near_ties if abs(gap) < NEAR_TIE else failures).append(msg)
    for msg in near_ties:
        warnings.warn(f"near-tie greedy divergence: {msg}", stacklevel=2)
    assert not failures, "\n".join(failures)
    assert len(near_ties) <= max_near_ties, "too many near-tie divergences:\n" + "\n".join(near_ties)


@pytest.fixture(scope="session")
def greedy_equal() -> Callable[..., None]:
    """`check_greedy_equal` as a fixture (test modules do not import conftest)."""
    return check_greedy_equal
