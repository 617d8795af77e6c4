"""The Table 3 case study: choosing the question, tracing the memory chunk by chunk, and its two renderings."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from memtrain.agent.chunks import chunk_document
from memtrain.agent.memory_agent import MemoryAgent
from memtrain.agent.prompts import load_templates
from memtrain.data.qa import LongContextItem, Paragraph
from memtrain.data.qa_builders import format_documents
from memtrain.engines import Generation
from memtrain.errors import InputError
from memtrain.report import case_study
from memtrain.settings import Agent, Budgets, section

# --- pick ---------------------------------------------------------------------------------------------------


def predictions(rows):
    return pd.DataFrame(rows, columns=["id", "num_docs", "em", "prediction"])


BASELINE = predictions(
    [
        ("q1", 100, 0.0, "Paris"),
        ("q2", 50, 0.0, "Rome"),
        ("q3", 50, 1.0, "Oslo"),
        ("q4", 50, 0.0, None),
        ("q5", 50, 0.0, "Bern"),
    ]
)
OURS = predictions(
    [
        ("q1", 100, 1.0, "London"),
        ("q2", 50, 0.0, "Milan"),
        ("q3", 50, 1.0, "Oslo"),
        ("q4", 50, 0.0, None),
        ("q5", 50, 1.0, "Berne"),
        ("q0", 50, 1.0, "Bern"),
    ]
)


def test_pick_prefers_ours_right_and_baseline_wrong_then_the_shortest_context():
    assert case_study.pick(BASELINE, OURS) == ("q5", 50)  # tier 1 at 50 docs beats tier 1 at 100 (q1)
    assert case_study.pick(BASELINE[BASELINE.id != "q5"], OURS) == ("q1", 100)  # tier 1 beats shorter tier 2
    again = predictions([("q1", 100, 1.0, "London"), ("q9", 100, 1.0, "x")])
    assert case_study.pick(predictions([("q9", 100, 0.0, "y"), ("q1", 100, 0.0, "y")]), again) == ("q1", 100)


def test_pick_falls_back_to_differing_predictions_then_to_any_common_question():
    no_wins = BASELINE[~BASELINE.id.isin(["q1", "q5"])]
    assert case_study.pick(no_wins, OURS) == ("q2", 50)  # predictions differ, both wrong
    same = no_wins[no_wins.id.isin(["q3", "q4"])]
    assert case_study.pick(same, OURS) == ("q3", 50)  # equal predictions; two missing ones count as equal
    assert case_study.pick(same[same.id == "q4"], OURS) == ("q4", 50)
    other_length = predictions([("q2", 100, 0.0, "Rome"), ("q2", 50, 0.0, "Milan")])
    assert case_study.pick(other_length, OURS) == ("q2", 50)  # only the same (id, num_docs) is a common question


def test_pick_errors_name_the_field():
    with pytest.raises(InputError, match="share no") as error:
        case_study.pick(predictions([("z", 50, 0.0, "a")]), OURS)
    assert error.value.field == "id"
    with pytest.raises(InputError, match="ours predictions lack a column") as error:
        case_study.pick(BASELINE, OURS.drop(columns="prediction"))
    assert error.value.field == "prediction"
    with pytest.raises(InputError, match="baseline predictions hold question q2 at 50 documents twice"):
        case_study.pick(pd.concat([BASELINE, BASELINE[BASELINE.id == "q2"]]), OURS)


# --- trace and renderings -----------------------------------------------------------------------------------

DOCUMENTS = [
    Paragraph(
        "Eiffel Tower",
        (
            "The Eiffel Tower is a lattice tower in Paris.",
            " It was designed by the company of Gustave Eiffel and completed in 1889 for the World's Fair.",
        ),
    ),
    Paragraph(
        "Big Ben",
        (
            "Big Ben is the nickname of the Great Bell of the clock at the north end of the",
            " Palace of Westminster in London, cast in 1858.",
        ),
    ),
    Paragraph(
        "Gustave Eiffel",
        (
            "Alexandre Gustave Eiffel was a French civil engineer born in Dijon in",
            " 1832, whose company built many bridges and towers in Europe.",
        ),
    ),
]
ITEM = LongContextItem(
    "hp-7",
    "Where was the designer of the Eiffel Tower born?",
    ("Dijon",),
    format_documents(DOCUMENTS),
    3,
    ("Eiffel Tower", "Gustave Eiffel"),
)


class ScriptedEngine:
    """The engine protocol with known replies: each memory names the document numbers its section showed
    (and holds a `|`, a newline and backticks to stress the layout); the answer is a fixed boxed city."""

    def __init__(self, tokenizer, answer: str) -> None:
        self.tokenizer, self.answer, self.calls = tokenizer, answer, []
        self.stop = tokenizer.convert_tokens_to_ids("<|im_end|>")

    def generate(self, prompts, sampling):
        self.calls.append(len(prompts))
        out = []
        for prompt in prompts:
            text = self.tokenizer.decode(prompt)
            reply = f"so \\boxed{{{self.answer}}}" if "Your answer" in text else memory_for(text)
            ids = self.tokenizer(reply, add_special_tokens=False)["input_ids"][: sampling.max_new_tokens - 1]
            out.append(Generation(tuple(ids) + (self.stop,), (0.0,) * (len(ids) + 1), True))
        return out


def memory_for(text: str) -> str:
    # Memories never contain "Document", so the headers found are the section's own.
    return "docs " + ",".join(re.findall(r"Document (\d+):", text)) + " | kept\n```x``` line two"


@pytest.fixture
def agent(tokenizer, test_config):
    budgets = Budgets(instruction=320, chunk=24, memory=64, response=64, max_chunks=2)
    return MemoryAgent(
        ScriptedEngine(tokenizer, "Dijon"),
        tokenizer,
        load_templates(section(Agent, test_config)),
        budgets,
        temperature=0.0,
    )


def test_trace_reads_every_chunk_and_keeps_each_memory_with_its_gold_evidence(agent, tokenizer):
    chunks = chunk_document(tokenizer, ITEM.context, 24)
    assert len(chunks) > agent.budgets.max_chunks  # the training cap must not apply here
    case = case_study.trace(agent, ITEM)
    assert agent.engine.calls == [1] * (len(chunks) + 1)  # one trajectory: every chunk, then the answer
    assert agent.budgets.max_chunks == 2  # the caller's agent is left capped
    assert [c.index for c in case.chunks] == list(range(len(chunks)))
    assert [c.memory for c in case.chunks] == [memory_for(chunk.text) for chunk in chunks]
    assert case.chunks[0].memory.startswith("docs 1 |")
    assert (case.reply, case.prediction, case.em) == ("so \\boxed{Dijon}", "Dijon", 1.0)

    # The real tokenizer cuts this context into 6 chunks, one boundary inside the title "Gust|ave Eiffel".
    assert len(chunks) == 6 and chunks[3].text.endswith("Document 3:\nGust")
    assert [c.gold_titles for c in case.chunks] == [
        ("Eiffel Tower",),
        ("Eiffel Tower",),
        (),
        ("Gustave Eiffel",),
        ("Gustave Eiffel",),
        ("Gustave Eiffel",),
    ]
    assert case.chunks[0].evidence == "Eiffel Tower\nThe Eiffel Tower is a lattice tower in Paris. It was designed by"
    assert case.chunks[1].evidence == "the company of Gustave Eiffel and completed in 1889 for the World's Fair."
    assert case.chunks[2].evidence == ""
    assert case.chunks[3].evidence == "Gust" and case.chunks[4].evidence == chunks[4].text.strip()
    assert "Dijon" in case.chunks[4].evidence

    short = case_study.trace(agent, ITEM, evidence_chars=20)
    assert short.chunks[0].evidence == "Eiffel Tower\nThe Eif…"  # 20 characters, then the ellipsis


def test_markdown_and_json_show_every_memory_side_by_side(agent, tokenizer):
    ours = case_study.trace(agent, ITEM)
    agent.engine = ScriptedEngine(tokenizer, "Paris")
    baseline = case_study.trace(agent, ITEM)
    assert (baseline.prediction, baseline.em) == ("Paris", 0.0)
    traces = {"MemAgent": baseline, "MemTrain+MemAgent": ours}

    text = case_study.to_markdown(ITEM, traces)
    assert ITEM.question in text and "`Dijon`" in text and "3 documents, read in" in text
    for chunk in ours.chunks:
        assert f"## Chunk {chunk.index + 1}\n" in text
        assert f"````text\n{chunk.memory}\n````" in text  # fenced past the memory's own backticks
    assert text.count("**MemAgent**, memory after chunk") == len(ours.chunks)
    assert "No gold document in this chunk." in text and "Gold documents: `Eiffel Tower`" in text
    assert "> Eiffel Tower\n> The Eiffel Tower" in text
    assert "**MemAgent**: prediction `Paris`, EM 0" in text
    assert "**MemTrain+MemAgent**: prediction `Dijon`, EM 1" in text

    record = case_study.to_json(ITEM, traces)
    assert json.loads(json.dumps(record)) == record
    assert record["answers"] == ["Dijon"] and record["num_docs"] == 3 and record["id"] == "hp-7"
    assert record["models"]["MemTrain+MemAgent"]["em"] == 1.0
    assert [c["memory"] for c in record["models"]["MemAgent"]["chunks"]] == [c.memory for c in baseline.chunks]
    assert record["models"]["MemAgent"]["chunks"][0]["gold_titles"] == ["Eiffel Tower"]

    with pytest.raises(InputError, match="other chunks") as error:
        case_study.to_markdown(
            ITEM, {"MemAgent": baseline, "other": case_study.CaseTrace(ours.chunks[1:], "", None, 0.0)}
        )
    assert error.value.field == "chunks"
    with pytest.raises(InputError, match="no model traces"):
        case_study.to_markdown(ITEM, {})
