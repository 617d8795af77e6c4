"""config/README.md against the schema: every documented key exists, with the schema's default and description.

The README's key tables (header `| key | default | description |`) are parsed as GitHub renders them: cells split
on unescaped `|`, the key a code span holding the dotted path (`<name>` for a key under additionalProperties),
the default a code span holding JSON (or `—` where the schema has none). A description must equal the schema's,
whitespace, code-span backticks and HTML entities aside, or start with it; where the schema has none, any text.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "config" / "README.md"
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
HEADER = ["key", "default", "description"]
NO_DEFAULT = "—"

# The keys a user changes most; the README must keep documenting them.
# fmt: off
REQUIRED = [
    "results_dir", "seed", "allow_downloads", "backbones", "tracking.experiment",
    "data.source.kind", "data.documents.num_train", "data.documents.num_passages", "data.documents.num_related",
    "data.documents.min_tokens", "data.documents.max_tokens",
    "agent.budgets.instruction", "agent.budgets.chunk", "agent.budgets.memory", "agent.budgets.response",
    "agent.budgets.max_chunks",
    "rl.device", "rl.dtype", "rl.engine_linear",
    "memtrain.steps", "memtrain.variants", "memtrain.backbones",
    "posttrain.seeds", "posttrain.inits", "posttrain.memagent.steps", "posttrain.mem1.steps",
    "eval.engine", "eval.batch_size",
    "trainer.backend", "trainer.prune_checkpoints",
]
# fmt: on


def split_row(line: str) -> list[str]:
    """Cells of a Markdown table row: split on `|` not escaped by a backslash, then `\\|` read as `|`."""
    inner = line.strip()
    inner = inner.removeprefix("|")
    inner = inner[:-1] if inner.endswith("|") and not inner.endswith("\\|") else inner
    return [cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", inner)]


def key_rows(text: str) -> list[tuple[int, list[str]]]:
    """(line number, cells) of every body row of the tables headed `| key | default | description |`."""
    rows, in_table = [], False
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.lstrip().startswith("|"):
            in_table = False
            continue
        cells = split_row(line)
        if [cell.lower() for cell in cells] == HEADER:
            in_table = True
        elif in_table and not all(re.fullmatch(r":?-+:?", cell) for cell in cells):
            rows.append((number, cells))
    return rows


def schema_node(schema: dict[str, Any], key: str) -> dict[str, Any] | None:
    """The schema of a dotted key, walking `properties` (`<name>`: `additionalProperties`); None if there is none."""
    node = schema
    for part in key.split("."):
        if re.fullmatch(r"<\w+>", part):
            node = node.get("additionalProperties")
        else:
            node = node.get("properties", {}).get(part)
        if not isinstance(node, dict):
            return None
    return node


def normalised(text: str) -> str:
    """Text as read: HTML entities decoded, code-span backticks dropped, whitespace collapsed."""
    return " ".join(html.unescape(text).replace("`", "").split())


def tagged(value: Any) -> Any:
    """`value` with booleans told apart from numbers (in Python, True == 1), for comparing parsed JSON."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, dict):
        return {key: tagged(item) for key, item in value.items()}
    if isinstance(value, list):
        return [tagged(item) for item in value]
    return value


def code_span(cell: str) -> str | None:
    match = re.fullmatch(r"`([^`]+)`", cell)
    return match.group(1) if match else None


def problems(text: str, schema: dict[str, Any]) -> list[str]:
    """Every disagreement between the README `text` and the schema, each naming its key (or its line)."""
    found, seen = [], set()
    rows = key_rows(text)
    if not rows:
        return ["no table with the header | key | default | description | found"]
    for number, cells in rows:
        if len(cells) != 3:
            found.append(f"line {number}: {len(cells)} cells instead of 3: {cells}")
            continue
        key_cell, default_cell, description_cell = cells
        key = code_span(key_cell)
        if key is None:
            found.append(f"line {number}: the key cell {key_cell!r} is not one code span")
            continue
        if key in seen:
            found.append(f"{key}: documented twice (line {number})")
        seen.add(key)
        node = schema_node(schema, key)
        if node is None:
            found.append(f"{key}: not in {SCHEMA.name} (line {number})")
            continue
        if default_cell == NO_DEFAULT:
            if "default" in node:
                found.append(f"{key}: documented without a default, the schema's is {json.dumps(node['default'])}")
        else:
            documented = code_span(default_cell)
            try:
                value = json.loads(documented) if documented is not None else None
            except json.JSONDecodeError as error:
                found.append(f"{key}: the default {default_cell} is not JSON ({error})")
                continue
            if documented is None:
                found.append(f"{key}: the default cell {default_cell!r} is neither a code span nor {NO_DEFAULT}")
            elif "default" not in node:
                found.append(f"{key}: documented default {documented}, the schema has none")
            elif tagged(value) != tagged(node["default"]):
                found.append(f"{key}: documented default {documented}, the schema's is {json.dumps(node['default'])}")
        description, expected = normalised(description_cell), normalised(node.get("description") or "")
        if not description:
            found.append(f"{key}: no description")
        elif not description.startswith(expected):
            found.append(f"{key}: the description does not start with the schema's: {expected!r}")
    return found


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return yaml.safe_load(SCHEMA.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def readme() -> str:
    return README.read_text(encoding="utf-8")


def test_every_documented_key_is_in_the_schema_with_its_default_and_description(readme, schema):
    found = problems(readme, schema)
    assert not found, "config/README.md disagrees with the schema:\n" + "\n".join(found)


def test_the_keys_users_change_most_are_documented(readme):
    documented = {code_span(cells[0]) for _, cells in key_rows(readme)}
    missing = [key for key in REQUIRED if key not in documented]
    assert not missing, f"config/README.md no longer documents {missing}"


@pytest.mark.parametrize(
    ("old", "new", "named"),
    [
        ("| `memtrain.steps` |", "| `memtrain.stepz` |", "memtrain.stepz: not in"),  # a misspelt key
        ("| `backbones.<name>.gguf` |", "| `backbones.<name>.ggml` |", "backbones.<name>.ggml: not in"),
        ("| `eval.batch_size` | `32` |", "| `eval.batch_size` | `64` |", "eval.batch_size: documented default 64"),
        ("| `allow_downloads` | `false` |", "| `allow_downloads` | `0` |", "allow_downloads: documented default 0"),
        ('| `rl.device` | `"auto"` | Where', '| `rl.device` | `"auto"` | Whither', "rl.device: the description"),
    ],
)
def test_a_wrong_row_fails_naming_its_key(readme, schema, tmp_path, old, new, named):
    assert readme.count(old) == 1, f"the fixture row {old!r} is no longer in config/README.md"
    copy = tmp_path / "README.md"
    copy.write_text(readme.replace(old, new), encoding="utf-8")
    found = problems(copy.read_text(encoding="utf-8"), schema)
    assert any(problem.startswith(named) for problem in found), found


def test_a_key_under_a_schema_key_that_has_no_properties_is_not_found(schema):
    assert schema_node(schema, "memtrain.steps.max") is None
    assert schema_node(schema, "backbones.<name>.path") is not None
    assert schema_node(schema, "backbones.smollm2-135m") is None  # a backbone's name is not a schema key
