"""The names of the Snakemake rules that run a stage: the one place the Python side spells them.

The stage registry (memtrain.stages), the report's provenance and curves (which find a rule's MLflow runs by the
`memtrain.rule` tag) and the planner's per-rule work all key on these; tests/test_house.py checks that they are
exactly the stage rules of the Snakefile, so renaming a rule fails a test instead of silently emptying a report.
"""

from __future__ import annotations

# rules/data.smk
WIKI_DOWNLOAD = "wiki_download"
PASSAGES = "passages"
NER = "ner"
EMBED = "embed"
INDEX = "index"
TOKENIZER = "tokenizer"
ASSEMBLE = "assemble"
DATASET_CARD = "dataset_card"
# rules/memtrain.smk
PREPARE_MODEL = "prepare_model"
MEMTRAIN_TRAIN = "memtrain_train"
# rules/downstream.smk
OFFLINE_QA = "offline_qa"
QA_LONG_CONTEXT = "qa_long_context"
QA_SEARCH = "qa_search"
SEARCH_CORPUS = "search_corpus"
SEARCH_INDEX = "search_index"
POSTTRAIN_TRAIN = "posttrain_train"
EVAL_LONG_CONTEXT = "eval_long_context"
EVAL_SEARCH_QA = "eval_search_qa"
# rules/ablations.smk
POSTTRAIN_CONTINUE = "posttrain_continue"
EVAL_SCALING = "eval_scaling"
# rules/report.smk
CASE_STUDY = "case_study"
FIGURES = "figures"
REPORT = "report"
