"""The house: every stage rule has a stage of its name, the Python side spells rule names in one place, a rule
hands its stage its named files, and no module of the package imports itself back through another."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from memtrain import rules, stages
from memtrain.errors import InputError
from memtrain.stages.job import Job, config_slice, files_json, settings_json

ROOT = Path(__file__).resolve().parent.parent
RULE_FILES = sorted((ROOT / "rules").glob("*.smk"))


def _rule_blocks() -> dict[str, str]:
    """Every `rule NAME:` block of rules/*.smk and the Snakefile, by name."""
    blocks = {}
    for path in [ROOT / "Snakefile", *RULE_FILES]:
        for name, body in re.findall(r"^rule (\w+):\n((?:(?:    .*)?\n)*)", path.read_text(), re.MULTILINE):
            blocks[name] = body
    return blocks


def test_every_stage_rule_runs_the_stage_of_its_own_name_and_every_stage_has_a_rule():
    blocks = _rule_blocks()
    commands = {name: re.search(r'shell:\s*\n\s*stage\("(\w+)"\)', body) for name, body in blocks.items()}
    stage_rules = {name for name, found in commands.items() if found}
    assert {name: found.group(1) for name, found in commands.items() if found} == {n: n for n in stage_rules}
    assert stage_rules == set(stages.STAGES)
    # target rules (all, data, memtrain, ...) only gather files: no shell, no stage
    assert all("shell:" not in blocks[name] for name in set(blocks) - stage_rules)


def test_the_rule_names_the_python_side_spells_are_exactly_the_stage_rules():
    spelled = {value for name, value in vars(rules).items() if name.isupper() and isinstance(value, str)}
    assert spelled == set(_rule_blocks()) & set(stages.STAGES) == set(stages.STAGES)


def _module_imports(path: Path, package_root: Path) -> set[str]:
    """Modules of the package a module imports, at module level or inside its functions: a lazy import only
    postpones a cycle to the first call."""
    tree = ast.parse(path.read_text())
    name = ".".join(path.relative_to(package_root.parent).with_suffix("").parts).removesuffix(".__init__")
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                base = ".".join(name.split(".")[: -node.level] + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return {m for m in found if m == "memtrain" or m.startswith("memtrain.")}


def import_graph(package_root: Path) -> dict[str, set[str]]:
    modules = {}
    for path in package_root.rglob("*.py"):
        name = ".".join(path.relative_to(package_root.parent).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path
    graph = {}
    for name, path in modules.items():
        imported = _module_imports(path, package_root)
        # `from memtrain.x import y` names a module only where y is one; importing a submodule runs its packages
        graph[name] = {m for m in imported if m in modules and m != name}
        graph[name] |= {p for m in graph[name] for p in _parents(m) if p in modules and p != name}
    return graph


def _parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import cycle (as a path back to its start) found by depth-first search."""
    found, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            # a package's __init__ importing its own submodules is how packages work, not a cycle
            if nxt.startswith(node + "."):
                continue
            if state.get(nxt) == "open":
                found.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_no_module_of_the_package_imports_itself_back():
    assert cycles(import_graph(ROOT / "memtrain")) == []


def test_the_cycle_finder_finds_a_cycle_it_is_shown(tmp_path):
    package = tmp_path / "memtrain"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("from memtrain.sub import b\n")
    (package / "sub" / "b.py").write_text("import memtrain.a\n")
    assert cycles(import_graph(package)) == [["memtrain.a", "memtrain.sub.b", "memtrain.a"]]


def test_a_config_slice_keeps_the_dotted_paths_of_the_config():
    config = {
        "rl": {"dtype": "float32", "device": "cpu"},
        "posttrain": {"memagent": {"steps": 3}, "mem1": {}},
        "seed": 7,
    }
    assert config_slice(config, "rl.dtype", "posttrain.memagent", "seed") == {
        "rl": {"dtype": "float32"},
        "posttrain": {"memagent": {"steps": 3}},
        "seed": 7,
    }


def test_a_job_round_trips_through_the_command_line_arguments_and_names_what_a_rule_lacks():
    settings = settings_json({"seed": 1}, {"mode": "memory"}, {"scatteritem": "2-of-4"}, "out", "exp")
    files = files_json({"passages": "p.parquet"}, {"entities": "e.parquet"})
    job = Job.from_json("ner", settings, files, threads=3)
    assert (job.input.passages, job.output.entities, job.params.mode, job.threads) == ("p.parquet", "e.parquet",
                                                                                      "memory", 3)  # fmt: skip
    assert (job.wildcards, job.results_dir, job.experiment, job.config) == ({"scatteritem": "2-of-4"}, "out", "exp",
                                                                            {"seed": 1})  # fmt: skip
    with pytest.raises(InputError, match=r"rule ner declares no output named 'rows' \(it declares: entities\)"):
        _ = job.output.rows
    with pytest.raises(InputError, match="--settings takes only .* unknown: \\['extra'\\]"):
        Job.from_json("ner", json.dumps({"config": {}, "extra": 1}), files)
    with pytest.raises(InputError, match="--files is not JSON"):
        Job.from_json("ner", settings, "{")


def test_a_scattered_stage_reads_its_shard_from_the_scatter_item():
    from memtrain.stages.data import scatter_item

    assert scatter_item(Job.create("ner", {}, wildcards={"scatteritem": "3-of-8"})) == (2, 8)
