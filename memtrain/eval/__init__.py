"""Evaluation: long-context QA by length (Table 1) and multi-objective search QA (Table 2)."""
