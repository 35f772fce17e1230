"""Zero-shot sentiment accuracy on gensim's `pang_lee_polarity.cor` by comparing label log-likelihoods.

Each sentence is put into `POLARITY_TEMPLATE`; the model's log-likelihood of each label continuation
(`LABEL_CONTINUATIONS`, summed over its tokens) is computed, and the label with the higher one is the
prediction (ties go to the first label, "negative"). No example is shown to the model (zero-shot).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from neutrino.compression.evaluate.datasets import LabelledSentence
from neutrino.compression.evaluate.perplexity import Scorer, as_scorer
from neutrino.compression.evaluate.protocol import LABEL_CONTINUATIONS, POLARITY_TEMPLATE
from neutrino.errors import InvalidParameterError


@dataclass(frozen=True)
class AccuracyResult:
    """Zero-shot classification accuracy and how the predictions split over the labels."""

    accuracy: float
    num_examples: int
    num_correct: int
    predicted: dict[str, int]  # label -> number of examples predicted as it
    num_ties: int  # examples whose label log-likelihoods were exactly equal (first label predicted)
    template: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def zero_shot_accuracy(
    model: Any,
    tokenizer: Any,
    examples: Sequence[LabelledSentence],
    template: str = POLARITY_TEMPLATE,
    labels: dict[str, str] | None = None,
    progress: bool = False,
) -> AccuracyResult:
    """Accuracy of `model` (an LLM, LLMEngine or ModelRunner) on `examples` by label log-likelihood."""
    labels = labels or LABEL_CONTINUATIONS
    if "{text}" not in template:
        raise InvalidParameterError("template", f"must contain '{{text}}', got {template!r}")
    if not examples:
        raise InvalidParameterError("examples", "expected at least one labelled example")
    unknown = {e.label for e in examples} - set(labels)
    if unknown:
        raise InvalidParameterError("examples", f"labels {sorted(unknown)} have no continuation in {labels}")
    scorer = as_scorer(model)
    label_ids = {name: _encode(tokenizer, cont) for name, cont in labels.items()}
    predicted = dict.fromkeys(labels, 0)
    correct = ties = 0
    for ex in _progress(examples, progress):
        prompt = _encode(tokenizer, template.format(text=ex.text))
        scores = label_logprobs(scorer, prompt, label_ids)
        guess = max(scores, key=lambda name: scores[name])  # first label wins a tie
        ties += len(set(scores.values())) < len(scores)
        predicted[guess] += 1
        correct += guess == ex.label
    return AccuracyResult(correct / len(examples), len(examples), correct, predicted, ties, template)


def label_logprobs(scorer: Scorer, prompt: list[int], label_ids: dict[str, list[int]]) -> dict[str, float]:
    """Sum of log p(label tokens | prompt) per label; single-token labels share one forward pass."""
    scores: dict[str, float] = {}
    last_row: torch.Tensor | None = None
    for name, ids in label_ids.items():
        if len(ids) == 1:
            if last_row is None:
                last_row = torch.log_softmax(scorer.score(prompt)[-1].float(), dim=-1)
            scores[name] = float(last_row[ids[0]])
            continue
        logits = scorer.score(prompt + ids)[len(prompt) - 1 : -1].float()  # [len(ids), vocab]
        targets = torch.tensor(ids, device=logits.device)
        logprobs = torch.log_softmax(logits, dim=-1).gather(1, targets[:, None])
        scores[name] = float(logprobs.double().sum())
    return scores


def _encode(tokenizer: Any, text: str) -> list[int]:
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if not ids:
        raise InvalidParameterError("template", f"{text!r} encodes to no tokens")
    return ids


def _progress(items: Sequence[LabelledSentence], enabled: bool):
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc="polarity", unit="ex")
