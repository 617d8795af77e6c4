"""Memory-agent rollouts (MemAgent's reading loop, paper section 3.1), engine-agnostic and lockstep.

A trajectory reads chunks c_1..c_n one per turn, each turn rewriting its memory from (problem,
previous memory, chunk); turn n+1 answers from the last memory alone. All trajectories of all
documents advance together, so each turn is one batched `Engine.generate` call. Every turn is kept
as its own training sample (prompt ids, response ids), as the paper optimises each interaction
step as an independent conversation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from memtrain.agent.chat import decode_reply, encode_user, stop_token_ids
from memtrain.agent.chunks import Chunk, chunk_document
from memtrain.agent.prompts import Templates
from memtrain.engines import Engine, Generation, Sampling
from memtrain.settings import Budgets


@dataclass(frozen=True)
class Turn:
    prompt_ids: tuple[int, ...]
    response_ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    reply: str  # decoded response, special tokens dropped


@dataclass
class Trajectory:
    turns: list[Turn] = field(default_factory=list)
    memories: list[str] = field(default_factory=list)  # m_1..m_n, each cut to the memory budget

    @property
    def final_reply(self) -> str:
        return self.turns[-1].reply


class MemoryAgent:
    """Reads documents and answers recall questions through any `Engine`."""

    def __init__(
        self,
        engine: Engine,
        tokenizer,
        templates: Templates,
        budgets: Budgets,
        temperature: float = 1.0,
        top_p: float = 1.0,
    ) -> None:
        self.engine, self.tokenizer, self.templates, self.budgets = engine, tokenizer, templates, budgets
        self.stops = stop_token_ids(tokenizer)
        self.sampling = Sampling(
            max_new_tokens=budgets.response, temperature=temperature, top_p=top_p, stop_token_ids=self.stops
        )

    def check_problem(self, problem: str) -> None:
        """Fail early when the instruction alone (template plus problem) overruns its budget."""
        used = len(encode_user(self.tokenizer, self.templates.update(problem, " ", " ")))
        if used > self.budgets.instruction:
            raise ValueError(
                f"the memory-update prompt takes {used} tokens before any memory or section, over the "
                f"instruction budget of {self.budgets.instruction}: shorten the problem or the template"
            )

    def fit_chunks(self, text: str, entities: Sequence[tuple[str, int, int]] = ()) -> tuple[list[Chunk], bool]:
        """The text cut into chunk-budget sections, at most max_chunks of them, and whether its tail was dropped."""
        chunks = chunk_document(self.tokenizer, text, self.budgets.chunk, entities)
        return chunks[: self.budgets.max_chunks], len(chunks) > self.budgets.max_chunks

    def _memory(self, generation: Generation) -> str:
        """The reply as the next turn's memory: without the stop token, cut to the memory budget.

        Decoded text does not always re-encode to the same tokens (a cut inside a multi-byte
        character, odd merges), so the cut is repeated on the re-encoded text until it fits.
        """
        ids = list(generation.token_ids)
        if generation.stopped:
            ids = ids[:-1]
        memory = decode_reply(self.tokenizer, ids[: self.budgets.memory])
        while len(ids := self.tokenizer(memory, add_special_tokens=False)["input_ids"]) > self.budgets.memory:
            shorter = decode_reply(self.tokenizer, ids[: self.budgets.memory])
            memory = shorter if len(shorter) < len(memory) else memory[:-1]  # strictly shorter: terminates
        return memory

    def _turns(self, prompts: list[list[int]]) -> list[tuple[Turn, Generation]]:
        generations = self.engine.generate(prompts, self.sampling)
        return [
            (Turn(tuple(prompt), g.token_ids, g.logprobs, decode_reply(self.tokenizer, g.token_ids)), g)
            for prompt, g in zip(prompts, generations, strict=True)
        ]

    def read(
        self, problems: Sequence[str], documents: Sequence[Sequence[Chunk]], group_size: int
    ) -> list[list[Trajectory]]:
        """`group_size` trajectories per document, advanced in lockstep until each has answered."""
        for problem in set(problems):
            self.check_problem(problem)
        for chunks in documents:
            if len(chunks) > self.budgets.max_chunks or any(c.num_tokens > self.budgets.chunk for c in chunks):
                raise ValueError("a document exceeds the chunk budget: cut it with chunk_document and max_chunks first")
        trajectories = [[Trajectory() for _ in range(group_size)] for _ in documents]
        active = [(d, g) for d in range(len(documents)) for g in range(group_size)]
        while active:
            prompts = []
            for d, g in active:
                trajectory, chunks = trajectories[d][g], documents[d]
                memory = trajectory.memories[-1] if trajectory.memories else None
                step = len(trajectory.turns)
                text = (
                    self.templates.update(problems[d], memory, chunks[step].text)
                    if step < len(chunks)
                    else self.templates.answer(problems[d], memory)
                )
                prompts.append(encode_user(self.tokenizer, text))
            still_reading = []
            for (d, g), (turn, generation) in zip(active, self._turns(prompts), strict=True):
                trajectory = trajectories[d][g]
                trajectory.turns.append(turn)
                if len(trajectory.turns) <= len(documents[d]):
                    trajectory.memories.append(self._memory(generation))
                    still_reading.append((d, g))
            active = still_reading
        return trajectories

    def recall(self, questions: Sequence[tuple[str, str]], group_size: int) -> list[list[Turn]]:
        """`group_size` answers to each (memory, masked section) recall question, in one batched call."""
        prompts = [
            encode_user(self.tokenizer, self.templates.recall_prompt(memory, section))
            for memory, section in questions
            for _ in range(group_size)
        ]
        turns = [turn for turn, _ in self._turns(prompts)] if prompts else []
        return [turns[i * group_size : (i + 1) * group_size] for i in range(len(questions))]
