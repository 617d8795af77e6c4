"""Answer extraction and scoring: the verifiable part of every reward.

The normalisation is the SQuAD/HotpotQA one (lower-case, drop punctuation and articles, squeeze
whitespace), so the exact match here is the EM that MemAgent, MEM1 and the paper report.
"""

from __future__ import annotations

import collections
import re
import string

_BOXED = "\\boxed{"
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def extract_boxed(text: str) -> str | None:
    """Content of the last balanced `\\boxed{...}`, or None when there is none.

    The last one counts because models often restate the question's format before answering;
    nested braces (`\\boxed{\\text{Paris}}`) are kept whole rather than cut at the first `}`.
    """
    start = text.rfind(_BOXED)
    while start != -1:
        depth, position = 1, start + len(_BOXED)
        while position < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[position], 0)
            position += 1
        if depth == 0:
            return text[start + len(_BOXED) : position - 1]
        start = text.rfind(_BOXED, 0, start)
    return None


def _as_list(answers: str | list[str]) -> list[str]:
    return [answers] if isinstance(answers, str) else answers


def normalize(text: str) -> str:
    text = text.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str | None, answers: str | list[str]) -> float:
    """1.0 when the normalised prediction equals one of the normalised answers."""
    if prediction is None:
        return 0.0
    return float(normalize(prediction) in {normalize(answer) for answer in _as_list(answers)})


def substring_match(prediction: str | None, answers: str | list[str]) -> float:
    """MemAgent's sub-EM (`sub_exact_match_score`, taskutils/memory_eval/utils): 1.0 when a normalised answer occurs
    inside the normalised prediction or the prediction inside the answer. Unlike MemAgent, a text that normalises to
    nothing matches nothing (there, an empty prediction is inside every answer)."""
    if prediction is None:
        return 0.0
    predicted = normalize(prediction)
    golds = [gold for gold in map(normalize, _as_list(answers)) if gold]
    return float(bool(predicted) and any(gold in predicted or predicted in gold for gold in golds))


# MemAgent's (and HotpotQA's) F1 rule: a yes/no/noanswer answer or prediction scores only by matching exactly.
_CLOSED_ANSWERS = frozenset({"yes", "no", "noanswer"})


def f1(prediction: str | None, answers: str | list[str]) -> float:
    """Best token-level F1 against any answer, with the yes/no/noanswer rule (HotpotQA's official F1, as MemAgent's
    `f1_score`)."""
    if prediction is None:
        return 0.0
    normalised = normalize(prediction)
    predicted = normalised.split()
    best = 0.0
    for answer in _as_list(answers):
        gold_text = normalize(answer)
        if (normalised in _CLOSED_ANSWERS or gold_text in _CLOSED_ANSWERS) and normalised != gold_text:
            continue
        gold = gold_text.split()
        common = sum((collections.Counter(predicted) & collections.Counter(gold)).values())
        if common:
            precision, recall = common / len(predicted), common / len(gold)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


SCORERS = {"em": exact_match, "sub_em": substring_match, "f1": f1}
