"""The MEM1 search agent: one internal state, rewritten every turn, and a context pruned to the latest turn.

Each turn the agent sees the questions, its latest reply (internal state plus the action it took)
and the passages that action retrieved, nothing older, then writes a new `<state>` and either
`<search>query</search>` or `<answer>a1; a2</answer>`. Every turn is a separate training sample
whose prompt holds the retrieved text and whose response holds only what the policy wrote, so
retrieved tokens never enter the loss. All episodes advance in lockstep: one `Engine.generate`
call and one batched search per turn.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from memtrain.agent.chat import decode_reply, encode_user, stop_token_ids
from memtrain.agent.memory_agent import Turn
from memtrain.agent.prompts import Templates
from memtrain.engines import Engine, Sampling

Search = Callable[[Sequence[str]], list[str]]  # queries -> the text of each query's results, as the agent reads it

_TAGS = {name: re.compile(rf"<{name}>(.*?)</{name}>", re.DOTALL) for name in ("state", "search", "answer")}


@dataclass(frozen=True)
class SearchBudgets:
    """MEM1's limits: tokens per reply, tokens of retrieved text shown, turns per episode (paper: 1k, 1k, 6)."""

    response: int
    information: int
    max_turns: int


@dataclass(frozen=True)
class Action:
    kind: str  # "search", "answer" or "invalid" (no well-formed action: the episode ends unanswered)
    content: str
    state: str


def parse_reply(reply: str) -> Action:
    """The state and the first action of a reply; an answer wins over a search only when it comes first."""
    state = _TAGS["state"].search(reply)
    found = [(m.start(), kind, m.group(1).strip()) for kind in ("search", "answer") if (m := _TAGS[kind].search(reply))]
    if not found:
        return Action("invalid", "", state.group(1).strip() if state else "")
    _, kind, content = min(found)
    return Action(kind if content else "invalid", content, state.group(1).strip() if state else "")


def split_answers(answer: str | None, count: int) -> list[str | None]:
    """The `;`-separated answers of a multi-objective reply, one per objective (None where missing)."""
    parts = [part.strip() for part in answer.split(";")] if answer is not None else []
    return [parts[i] if i < len(parts) and parts[i] else None for i in range(count)]


@dataclass
class Episode:
    turns: list[Turn] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    information: list[str] = field(default_factory=list)  # retrieved text after each search

    @property
    def answer(self) -> str | None:
        last = self.actions[-1] if self.actions else None
        return last.content if last is not None and last.kind == "answer" else None


class SearchAgent:
    def __init__(
        self,
        engine: Engine,
        tokenizer,
        templates: Templates,
        budgets: SearchBudgets,
        search: Search,
        temperature: float = 1.0,
        top_p: float = 1.0,
    ) -> None:
        self.engine, self.tokenizer, self.templates, self.budgets = engine, tokenizer, templates, budgets
        self.search = search
        self.sampling = Sampling(
            max_new_tokens=budgets.response,
            temperature=temperature,
            top_p=top_p,
            stop_token_ids=stop_token_ids(tokenizer),
        )

    def _truncate(self, text: str) -> str:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return (
            text
            if len(ids) <= self.budgets.information
            else decode_reply(self.tokenizer, ids[: self.budgets.information])
        )

    def history(self, episode: Episode) -> str:
        """What the next turn sees of the past: the latest reply and the results of its search, if any."""
        if not episode.turns:
            return ""
        last = episode.turns[-1].reply
        information = f"\n<information>\n{episode.information[-1]}\n</information>\n" if episode.information else ""
        return f"Your latest turn:\n{last}\n{information}"

    def run(self, questions: Sequence[str], group_size: int) -> list[list[Episode]]:
        """`group_size` episodes per (multi-objective) question, until each answers, fails to act or runs out of turns."""
        episodes = [[Episode() for _ in range(group_size)] for _ in questions]
        active = [(q, g) for q in range(len(questions)) for g in range(group_size)]
        for turn in range(self.budgets.max_turns):
            if not active:
                break
            turns_left = self.budgets.max_turns - turn
            prompts = [
                encode_user(
                    self.tokenizer, self.templates.search_turn(questions[q], self.history(episodes[q][g]), turns_left)
                )
                for q, g in active
            ]
            generations = self.engine.generate(prompts, self.sampling)
            searching = []
            for (q, g), prompt, generation in zip(active, prompts, generations, strict=True):
                reply = decode_reply(self.tokenizer, generation.token_ids)
                episode = episodes[q][g]
                episode.turns.append(Turn(tuple(prompt), generation.token_ids, generation.logprobs, reply))
                action = parse_reply(reply)
                episode.actions.append(action)
                if action.kind == "search" and turns_left > 1:
                    searching.append((q, g))
            results = self.search([episodes[q][g].actions[-1].content for q, g in searching]) if searching else []
            for (q, g), text in zip(searching, results, strict=True):
                episodes[q][g].information.append(self._truncate(text))
            active = searching
        return episodes
