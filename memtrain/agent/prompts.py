"""Prompt templates in the MemAgent structure (problem, previous memory, section -> updated memory).

The wording is ours; the structure follows MemAgent so that MemTrain, MemAgent post-training and
evaluation all read documents the same way. Any template can be replaced by a text file named in
the config (`agent.prompts.<name>`); a replacement must keep the same placeholders.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from memtrain.errors import InputError
from memtrain.settings import Agent

MEMORY_UPDATE = """You are given a problem, your memory of the document read so far, and the next section of the document. The section may help to solve the problem. Rewrite the memory so that it keeps every useful detail of the previous memory and adds the new information from the section that could help to solve the problem. Reply with the updated memory only.

<problem>
{problem}
</problem>

<memory>
{memory}
</memory>

<section>
{section}
</section>

Updated memory:
"""

FINAL_ANSWER = """You are given a problem and your memory of a document you have read. Solve the problem using the memory alone, then give the final answer inside \\boxed{{}}.

<problem>
{problem}
</problem>

<memory>
{memory}
</memory>

Your answer:
"""

RECALL = """You are given your memory of a document you have read and one section of that document in which one entity has been replaced by [TARGET] everywhere. Use the memory and the section to recover the entity hidden behind [TARGET], then give it inside \\boxed{{}}.

<memory>
{memory}
</memory>

<section>
{section}
</section>

Your answer:
"""

FULL_CONTEXT = """You are given a problem and a document. Solve the problem using the document, then give the final answer inside \\boxed{{}}.

<problem>
{problem}
</problem>

<document>
{document}
</document>

Your answer:
"""

SEARCH = """Answer the questions below by searching an encyclopedia. You have {turns_left} turn(s) left, this one included. At every turn, first rewrite your internal state inside <state> </state>: everything you have learned so far that is needed to answer, since only this state and the latest search results are kept. Then either search with <search> query </search>, or, once you know every answer, give them in order separated by ";" inside <answer> </answer>. On your last turn you must answer.

Questions: {problem}

{history}"""

PLACEHOLDERS = {
    "memory_update": ("problem", "memory", "section"),
    "final_answer": ("problem", "memory"),
    "recall": ("memory", "section"),
    "full_context": ("problem", "document"),
    "search": ("problem", "history", "turns_left"),
}
DEFAULTS = {
    "memory_update": MEMORY_UPDATE,
    "final_answer": FINAL_ANSWER,
    "recall": RECALL,
    "full_context": FULL_CONTEXT,
    "search": SEARCH,
}


@dataclass(frozen=True)
class Templates:
    """The three prompts of the memory agent, placeholders written `{name}`, literal braces `{{ }}`."""

    memory_update: str
    final_answer: str
    recall: str
    full_context: str  # the base model reading a whole document in one prompt (evaluation only)
    search: str  # the MEM1 search agent's turn: its latest state, query and results, nothing older
    no_memory: str

    def update(self, problem: str, memory: str | None, section: str) -> str:
        return self.memory_update.format(problem=problem, memory=memory or self.no_memory, section=section)

    def answer(self, problem: str, memory: str | None) -> str:
        return self.final_answer.format(problem=problem, memory=memory or self.no_memory)

    def recall_prompt(self, memory: str | None, section: str) -> str:
        return self.recall.format(memory=memory or self.no_memory, section=section)

    def whole_document(self, problem: str, document: str) -> str:
        return self.full_context.format(problem=problem, document=document)

    def search_turn(self, problem: str, history: str, turns_left: int) -> str:
        return self.search.format(problem=problem, history=history, turns_left=turns_left)


def _check(name: str, template: str, source: str | os.PathLike) -> str:
    """Fail on a template that would render wrongly: a missing or unknown placeholder, a stray brace."""
    probe = {key: f"<{key}>" for key in PLACEHOLDERS[name]}
    try:
        rendered = template.format(**probe)
    except (KeyError, IndexError, ValueError) as error:
        raise InputError(
            f"template does not format with placeholders {sorted(probe)} "
            f"(write literal braces as '{{{{' and '}}}}'): {error!r}",
            file=source,
            field=f"agent.prompts.{name}",
        ) from error
    missing = [key for key, value in probe.items() if value not in rendered]
    if missing:
        raise InputError(
            f"template lacks the placeholder(s) {', '.join('{' + m + '}' for m in missing)}",
            file=source,
            field=f"agent.prompts.{name}",
        )
    return template


def load_templates(agent: Agent) -> Templates:
    """The templates named by `agent.prompts` (a file path per template, or null for our default)."""
    chosen = {}
    for name, default in DEFAULTS.items():
        path = getattr(agent.prompts, name)
        if path is None:
            chosen[name] = default
            continue
        try:
            text = Path(path).read_text()
        except OSError as error:
            raise InputError(
                f"cannot read prompt template: {error}", file=path, field=f"agent.prompts.{name}"
            ) from error
        chosen[name] = _check(name, text, path)
    return Templates(**chosen, no_memory=agent.no_memory)
