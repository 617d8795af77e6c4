"""Long-context HotpotQA by length (paper section 4.2, Table 1).

Trained memory models read the context chunk by chunk with the same agent as in training (no chunk
cap here: 896k tokens is 175 chunks of 5k). Base models read the whole context in one prompt, as the
paper's base rows do; a context longer than their window is cut in the middle, keeping its start
and end, since the gold paragraphs can sit anywhere.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from memtrain.agent.answers import exact_match, extract_boxed, f1, substring_match
from memtrain.agent.chat import decode_reply, encode_user
from memtrain.agent.chunks import chunk_document
from memtrain.agent.memory_agent import MemoryAgent
from memtrain.agent.prompts import Templates
from memtrain.engines import Engine, Sampling

METRICS = ("em", "sub_em", "f1", "reply_sub_em")
_CUT = "\n...\n"


def scores(prediction: str | None, answers: Sequence[str]) -> dict[str, float]:
    answers = list(answers)
    return {
        "em": exact_match(prediction, answers),
        "sub_em": substring_match(prediction, answers),
        "f1": f1(prediction, answers),
    }


def _row(item, reply: str, **extra: Any) -> dict[str, Any]:
    """Scores of the boxed answer (the paper's), plus `reply_sub_em`: whether a gold answer occurs anywhere in
    the reply. The latter is a diagnostic for small models that answer right but ignore the box format."""
    prediction = extract_boxed(reply)
    return {
        "id": item.id,
        "num_docs": item.num_docs,
        "question": item.question,
        "answers": list(item.answers),
        "prediction": prediction,
        "reply": reply,
        **scores(prediction, item.answers),
        "reply_sub_em": substring_match(reply, list(item.answers)),
        **extra,
    }


def _batches(items: Sequence, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


def uncapped(agent: MemoryAgent) -> MemoryAgent:
    """The same agent (engine, templates, budgets, sampling) without the chunk cap: training stops at max_chunks,
    evaluation must read the whole context however long it is."""
    return MemoryAgent(
        agent.engine,
        agent.tokenizer,
        agent.templates,
        dataclasses.replace(agent.budgets, max_chunks=np.iinfo(np.int64).max),
        agent.sampling.temperature,
        agent.sampling.top_p,
    )


def with_memory(agent: MemoryAgent, items: Sequence, batch_size: int) -> list[dict[str, Any]]:
    """The chunked memory pipeline: every chunk of the context, however many, then the answer from memory."""
    reader = uncapped(agent)
    rows = []
    for batch in _batches(items, batch_size):
        chunk_lists = [chunk_document(reader.tokenizer, item.context, reader.budgets.chunk) for item in batch]
        trajectories = reader.read([item.question for item in batch], chunk_lists, group_size=1)
        for item, chunks, (trajectory,) in zip(batch, chunk_lists, trajectories, strict=True):
            rows.append(
                _row(
                    item,
                    trajectory.final_reply,
                    chunks=len(chunks),
                    memory=trajectory.memories[-1] if trajectory.memories else "",
                )
            )
    return rows


def fit_document(
    tokenizer, templates: Templates, question: str, document: str, window: int, response_tokens: int
) -> tuple[list[int], bool]:
    """The whole-document prompt and whether its document had to be cut (in the middle) to fit `window`."""
    prompt = encode_user(tokenizer, templates.whole_document(question, document))
    if len(prompt) + response_tokens <= window:
        return prompt, False
    ids = tokenizer(document, add_special_tokens=False)["input_ids"]
    keep = window - response_tokens - len(encode_user(tokenizer, templates.whole_document(question, _CUT)))
    while keep >= 2:
        head, tail = ids[: keep // 2], ids[len(ids) - (keep - keep // 2) :]
        prompt = encode_user(
            tokenizer,
            templates.whole_document(question, decode_reply(tokenizer, head) + _CUT + decode_reply(tokenizer, tail)),
        )
        over = len(prompt) + response_tokens - window
        if over <= 0:
            return prompt, True
        keep -= over  # decoding and re-encoding around the cut can merge or split a few tokens
    raise ValueError(
        f"a context window of {window} tokens leaves no room for a document after the prompt and "
        f"the {response_tokens}-token reply"
    )


def full_context(
    engine: Engine, tokenizer, templates: Templates, items: Sequence, window: int, sampling: Sampling, batch_size: int
) -> list[dict[str, Any]]:
    """Base models: the whole context in one prompt (cut in the middle beyond the window), one reply."""
    rows = []
    for batch in _batches(items, batch_size):
        prompts = [
            fit_document(tokenizer, templates, item.question, item.context, window, sampling.max_new_tokens)
            for item in batch
        ]
        generations = engine.generate([prompt for prompt, _ in prompts], sampling)
        for item, (prompt, cut), generation in zip(batch, prompts, generations, strict=True):
            rows.append(
                _row(item, decode_reply(tokenizer, generation.token_ids), prompt_tokens=len(prompt), truncated=cut)
            )
    return rows


def summary(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Each metric per length (`em/50docs`, ...) and averaged over lengths (`em/avg`), as Table 1 reports them."""
    lengths = sorted({row["num_docs"] for row in rows})
    result = {}
    for metric in METRICS:
        per_length = [float(np.mean([r[metric] for r in rows if r["num_docs"] == n])) for n in lengths]
        result.update({f"{metric}/{n}docs": value for n, value in zip(lengths, per_length, strict=True)})
        result[f"{metric}/avg"] = float(np.mean(per_length)) if per_length else float("nan")
    return result
