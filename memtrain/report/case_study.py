"""The case study of paper section 5.3 (Table 3): one long-context question, the memory after each chunk.

The paper shows a HotpotQA question on which MemTrain+MemAgent keeps the key entity in memory
while MemAgent loses it. `pick` chooses such a question from the two models' evaluation files,
`trace` re-runs one model on it keeping every intermediate memory (the evaluation files keep only
the last), and `to_markdown` / `to_json` lay the memories side by side, chunk by chunk, next to
the gold documents each chunk holds, so a reader sees where the key fact enters and leaves memory.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from memtrain.agent.answers import extract_boxed
from memtrain.agent.chunks import chunk_document
from memtrain.agent.memory_agent import MemoryAgent
from memtrain.data.qa import LongContextItem
from memtrain.errors import InputError
from memtrain.eval import long_context

KEY = ["id", "num_docs"]
PICK_COLUMNS = [*KEY, "em", "prediction"]
# A document header of format_documents: at the start of the context or after the blank line between documents.
_HEADER = re.compile(r"(?:\A|(?<=\n\n))Document \d+:\n([^\n]*)")
_ELLIPSIS = "…"


@dataclass(frozen=True)
class ChunkTrace:
    """One chunk as the agent read it: the gold documents it holds (part of), their text, the memory after."""

    index: int
    gold_titles: tuple[str, ...]
    evidence: str  # the gold documents' text within this chunk, each cut to evidence_chars; "" without one
    memory: str


@dataclass(frozen=True)
class CaseTrace:
    chunks: list[ChunkTrace]
    reply: str
    prediction: str | None
    em: float


def pick(baseline: pd.DataFrame, ours: pd.DataFrame) -> tuple[str, int]:
    """The (id, num_docs) of the question to show, from two long-context prediction files.

    Best is the paper's kind of example, ours right and the baseline wrong; failing that, any
    question the two answer differently; failing that, any question both answered. Within a tier
    the shortest context wins (the table must stay readable), then the smallest id (determinism).
    """
    frames = {"baseline": baseline, "ours": ours}
    for name, frame in frames.items():
        for column in PICK_COLUMNS:
            if column not in frame.columns:
                raise InputError(f"the {name} predictions lack a column", field=column)
        duplicated = frame.duplicated(KEY)
        if duplicated.any():
            first = frame[duplicated].iloc[0]
            raise InputError(
                f"the {name} predictions hold question {first['id']} at {first['num_docs']} documents twice",
                record=str(first["id"]),
                field="id",
            )
    both = baseline[PICK_COLUMNS].merge(ours[PICK_COLUMNS], on=KEY, suffixes=("_baseline", "_ours"))
    if both.empty:
        raise InputError("the baseline and our predictions share no (id, num_docs) question", field="id")
    # None and NaN both mean "no boxed answer"; pandas' != would call two of them different.
    predictions = [[None if pd.isna(p) else p for p in both[f"prediction_{side}"]] for side in ("baseline", "ours")]
    differ = [a != b for a, b in zip(*predictions, strict=True)]
    ours_only = (both["em_ours"] == 1) & (both["em_baseline"] == 0)
    both = both.assign(
        tier=[0 if o else 1 if d else 2 for o, d in zip(ours_only, differ, strict=True)], id=both["id"].astype(str)
    )
    best = both.sort_values(["tier", "num_docs", "id"]).iloc[0]
    return best["id"], int(best["num_docs"])


def trace(agent: MemoryAgent, item: LongContextItem, evidence_chars: int = 600) -> CaseTrace:
    """`agent` on one item exactly as the long-context evaluation runs it (every chunk, one trajectory),
    keeping the memory after each chunk and the gold evidence each chunk showed."""
    reader = long_context.uncapped(agent)
    chunks = chunk_document(reader.tokenizer, item.context, reader.budgets.chunk)
    ((trajectory,),) = reader.read([item.question], [chunks], group_size=1)
    gold = _gold_spans(item)
    traced, start = [], 0
    for index, (chunk, memory) in enumerate(zip(chunks, trajectory.memories, strict=True)):
        end = start + len(chunk.text)  # chunks are consecutive spans of the context, so offsets add up
        # Stripped, so a chunk holding only the blank line after a gold document does not count as holding it.
        inside = [
            (title, text)
            for first, last, title in gold
            if (text := item.context[max(first, start) : min(last, end)].strip())
        ]
        evidence = "\n\n".join(_cut(text, evidence_chars) for _, text in inside)
        traced.append(ChunkTrace(index, tuple(title for title, _ in inside), evidence, memory))
        start = end
    prediction = extract_boxed(trajectory.final_reply)
    return CaseTrace(traced, trajectory.final_reply, prediction, long_context.scores(prediction, item.answers)["em"])


def _gold_spans(item: LongContextItem) -> list[tuple[int, int, str]]:
    """(start, end, title) of each gold document in the context, from its title line to the next header.

    Documents are found by their title line; their span, not the title alone, is then matched to the
    chunks, since a chunk boundary can fall inside a title or a document and the fact may sit in either part.
    """
    titles = set(item.gold_titles)
    headers = list(_HEADER.finditer(item.context))
    spans = []
    for n, header in enumerate(headers):
        if header[1] in titles:
            spans.append(
                (header.start(1), headers[n + 1].start() if n + 1 < len(headers) else len(item.context), header[1])
            )
    return spans


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit].rstrip() + _ELLIPSIS


def _layout(traces: Mapping[str, CaseTrace]) -> list[ChunkTrace]:
    """The chunks shared by all traces; traces of one item read with different chunkings cannot go side by side."""
    if not traces:
        raise InputError("no model traces to show", field="traces")
    (first_label, first), *others = traces.items()
    layout = [dataclasses.replace(chunk, memory="") for chunk in first.chunks]
    for label, other in others:
        if [dataclasses.replace(chunk, memory="") for chunk in other.chunks] != layout:
            raise InputError(
                f"the trace of {label} was read in other chunks than that of {first_label} "
                "(a different tokenizer or chunk budget)",
                record=label,
                field="chunks",
            )
    return layout


def _fenced(text: str) -> str:
    """A code block that no backtick run inside `text` can close early."""
    fence = "`" * max(3, max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    return f"{fence}text\n{text}\n{fence}"


def _quoted(text: str) -> str:
    return "\n".join(f"> {line}".rstrip() for line in text.split("\n"))


def _inline(text: str) -> str:
    """One line of inline code, whatever backticks or newlines `text` holds."""
    text = " ".join(text.split())
    ticks = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    return f"{ticks} {text} {ticks}" if "`" in text else f"{ticks}{text}{ticks}"


def to_markdown(item: LongContextItem, traces: Mapping[str, CaseTrace]) -> str:
    """Table 3 as Markdown: per chunk its gold evidence, then each model's memory after it; then the answers.

    Free text (question, evidence, memories, replies) sits in blockquotes and code fences rather than
    table cells, so a `|` or a newline in a model's memory cannot break the layout.
    """
    layout = _layout(traces)
    lines = [
        f"# Case study: question {item.id}",
        "",
        "**Question**",
        "",
        _quoted(item.question),
        "",
        "**Gold answers:** " + "; ".join(_inline(answer) for answer in item.answers),
        "",
        f"**Context:** {item.num_docs} documents, read in {len(layout)} chunks",
        "",
    ]
    for chunk in layout:
        lines += [f"## Chunk {chunk.index + 1}", ""]
        if chunk.gold_titles:
            lines += [
                "Gold documents: " + ", ".join(_inline(title) for title in chunk.gold_titles),
                "",
                _quoted(chunk.evidence),
                "",
            ]
        else:
            lines += ["No gold document in this chunk.", ""]
        for label, case in traces.items():
            lines += [
                f"**{label}**, memory after chunk {chunk.index + 1}:",
                "",
                _fenced(case.chunks[chunk.index].memory),
                "",
            ]
    lines += ["## Final answer", ""]
    for label, case in traces.items():
        prediction = _inline(case.prediction) if case.prediction is not None else "none (no \\boxed{} answer)"
        lines += [f"**{label}**: prediction {prediction}, EM {case.em:g}", "", "Reply:", "", _fenced(case.reply), ""]
    return "\n".join(lines)


def to_json(item: LongContextItem, traces: Mapping[str, CaseTrace]) -> dict[str, Any]:
    """The same content as `to_markdown`, as plain JSON types (lists, not tuples, so it round-trips unchanged)."""
    return {
        "id": item.id,
        "num_docs": item.num_docs,
        "question": item.question,
        "answers": list(item.answers),
        "models": {
            label: {
                "chunks": [
                    {**dataclasses.asdict(chunk), "gold_titles": list(chunk.gold_titles)} for chunk in case.chunks
                ],
                "reply": case.reply,
                "prediction": case.prediction,
                "em": case.em,
            }
            for label, case in traces.items()
        },
    }
