"""Install-time guards: every requirement comes from a public package index, and pip's failures read as causes.

The lock once pinned a wheel under /tmp that existed only on the machine that wrote it, and every CI run
passed because CI ran on that machine. `sources` finds such pins (local paths, `file:` URLs, direct URLs,
VCS links, private indexes) in every file that installs something; `make setup` runs `check` before pip and
`pip` around it. Runs before the project's dependencies exist, so it uses the standard library only
(PyYAML, for environment.yml, is imported only where that file is read).

    python -m memtrain.install check [FILE ...]     # exit 1, naming file and line, on a non-index source
    python -m memtrain.install pip --log LOG -- ARGS  # pip ARGS; on failure one clear message instead of pip's
    python -m memtrain.install compile               # byte-compile site-packages on every core (after --no-compile)
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The files that install something: pip's (make setup, make setup-gpu, make lock), conda's, and the project's.
INSTALL_FILES = (
    "requirements/lock.txt",
    "requirements/constraints.txt",
    "requirements/assets.in",
    "requirements/assets.txt",
    "requirements/gpu.in",
    "requirements/gpu.txt",
    "requirements/cuda-only.txt",
    "environment.yml",
    "pyproject.toml",
)
PUBLIC_INDEXES = ("https://pypi.org/simple", "https://pypi.org/simple/", "https://pypi.python.org/simple")
# The project itself (environment.yml's `-e .`) is the one local path an install may name.
PROJECT_ITSELF = (".", "./")
_INDEX_OPTIONS = ("-i", "--index-url", "--extra-index-url", "-f", "--find-links")
_NESTED_OPTIONS = ("-r", "--requirement", "-c", "--constraint")
_DIRECT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[^\]]*\])?\s*@\s*(\S+)")
_URL = re.compile(r"^(file|https?|ftp|git\+\w+|hg\+\w+|svn\+\w+|bzr\+\w+)://|^(git|hg|svn|bzr)\+", re.IGNORECASE)
_ARCHIVE = re.compile(r"\.(whl|tar\.gz|tgz|zip|tar\.bz2)(#.*)?$", re.IGNORECASE)


@dataclass(frozen=True)
class Finding:
    """One requirement that does not come from a public package index."""

    file: Path
    line: int
    text: str
    why: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.why}: {self.text}"


def requirement_problem(text: str) -> str | None:
    """Why one requirement line (pip's syntax) is not a package from a public index, or None when it is."""
    text = text.split(" #", 1)[0].strip()
    text = re.sub(r"\s*\\$", "", text)
    if not text or text.startswith(("#", "--hash")):
        return None
    option, _, value = text.partition(" ") if text.startswith("-") else ("", "", text)
    if "=" in option:
        option, value = option.split("=", 1)
    value = value.strip()
    if option in _INDEX_OPTIONS:
        return None if value in PUBLIC_INDEXES else f"{option} names a package source that is not a public index"
    if option in ("-e", "--editable"):
        return None if value in PROJECT_ITSELF else "an editable install of something other than this project"
    if option in _NESTED_OPTIONS or option.startswith("--"):
        return None
    if direct := _DIRECT.match(value):
        return f"a direct reference ({direct.group(2).split(':', 1)[0]}) instead of a package by name and version"
    if _URL.match(value):
        return "a URL instead of a package by name and version"
    if value.startswith(("/", "./", "../", "~")) or _ARCHIVE.search(value) or value in PROJECT_ITSELF:
        return "a local path instead of a package by name and version"
    return None


def _pip_file_lines(path: Path) -> Iterator[tuple[int, str, Path | None]]:
    """(line number, requirement text, nested file it includes) of a pip requirements file."""
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        stripped = line.strip()
        nested = re.match(r"^(-r|--requirement|-c|--constraint)[ =]\s*(\S+)", stripped)
        yield number, stripped, (path.parent / nested.group(2)) if nested else None


def _line_of(text: str, needle: str) -> int:
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return number
    return 0


def _environment_requirements(path: Path) -> Iterator[tuple[int, str, Path | None]]:
    """pip entries of a conda environment file (conda's own packages come from its channels)."""
    import yaml

    text = path.read_text()
    for entry in (yaml.safe_load(text) or {}).get("dependencies", []):
        if isinstance(entry, dict):
            for requirement in entry.get("pip", []):
                nested = re.match(r"^(-r|-c)\s+(\S+)", requirement)
                # pip resolves an environment file's nested files against the folder conda runs in: the file's own
                yield _line_of(text, requirement), requirement, (path.parent / nested.group(2)) if nested else None


def _pyproject_requirements(path: Path) -> Iterator[tuple[int, str, Path | None]]:
    text = path.read_text()
    project = tomllib.loads(text)
    listed = [*project.get("build-system", {}).get("requires", []), *project.get("project", {}).get("dependencies", [])]
    for extra in project.get("project", {}).get("optional-dependencies", {}).values():
        listed.extend(extra)
    for requirement in listed:
        yield _line_of(text, f'"{requirement}"'), requirement, None


def _entries(path: Path) -> Iterator[tuple[int, str, Path | None]]:
    if path.name == "pyproject.toml":
        return _pyproject_requirements(path)
    if path.suffix in (".yml", ".yaml"):
        return _environment_requirements(path)
    return _pip_file_lines(path)


def sources(paths: Iterable[str | Path], root: Path = ROOT) -> list[Finding]:
    """Every non-index requirement in `paths` and the files they include (-r, -c), each file read once."""
    findings: list[Finding] = []
    pending, seen = [root / p for p in paths], set()
    while pending:
        path = pending.pop(0)
        if path.resolve() in seen:
            continue
        seen.add(path.resolve())
        shown = path.relative_to(root) if path.is_relative_to(root) else path
        if not path.is_file():
            findings.append(Finding(shown, 0, str(path), "a requirements file that does not exist"))
            continue
        for number, text, nested in _entries(path):
            if nested is not None:
                pending.append(nested)
            elif why := requirement_problem(text):
                findings.append(Finding(shown, number, text, why))
    return findings


# pip's ways of saying that a pinned package cannot be had, each with the requirement it names.
_NOT_FOUND = (
    re.compile(r"No matching distribution found for (\S+)"),
    re.compile(r"Could not find a version that satisfies the requirement (\S+)"),
    re.compile(r"No such file or directory: '([^']+)'"),
    re.compile(r"THESE PACKAGES DO NOT MATCH THE HASHES.*?\n\s+(\S+)", re.DOTALL),
)


def _name(requirement: str) -> str:
    """The normalised project name a requirement line starts with."""
    return re.split(r"[<>=!~;\[ @]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def pinned_at(requirement: str, files: Iterable[Path]) -> str:
    """'file:line' of the pin of `requirement` in the given requirement files, or '' when none pins it."""
    name = _name(requirement)
    for path in files:
        if not path.is_file():
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if _name(line) == name:
                return f"{path}:{number}"
    return ""


def explain_pip_failure(output: str, files: Iterable[Path]) -> str:
    """One sentence on why pip failed, naming the requirement and where it is pinned; '' when unrecognised."""
    for pattern in _NOT_FOUND:
        if found := pattern.search(output):
            requirement = found.group(1)
            where = pinned_at(requirement, files)
            return (
                f"{requirement} cannot be installed: no configured package index offers it "
                f"(pinned at {where or 'a dependency, not in the named files'}). Check that PyPI is "
                f"reachable (or PIP_INDEX_URL), or regenerate the pins with `make lock`."
            )
    return ""


def run_pip(python: str, args: list[str], log: Path) -> int:
    """pip with its full output in `log`; on failure print why (or the output's tail), and pip's exit code."""
    log.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [python, "-m", "pip", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False
    )
    log.write_text(done.stdout)
    if done.returncode == 0:
        return 0
    files = [Path(args[i + 1]) for i, a in enumerate(args[:-1]) if a in ("-r", "-c", "--requirement", "--constraint")]
    reason = explain_pip_failure(done.stdout, files)
    tail = "" if reason else "\n".join(done.stdout.strip().splitlines()[-15:])
    print(
        f"install failed: {reason or 'pip said:'}\n{tail}".rstrip() + f"\n(pip's full output: {log})", file=sys.stderr
    )
    return done.returncode


def compile_packages(folders: Iterable[str | Path], workers: int = 0) -> None:
    """Byte-compile `folders` on `workers` processes (0: every core), skipping files this Python cannot compile.

    pip compiles each wheel's modules one file at a time, half of `make setup`'s time on this 2-core machine;
    `make setup` installs with --no-compile and then compiles everything here (torch and the locked stack: 81 s ->
    67 s, measured). Like pip it ignores files that do not compile (torch ships one in Python 3.12 syntax).
    """
    import compileall

    for folder in dict.fromkeys(map(str, folders)):
        compileall.compile_dir(folder, quiet=2, workers=workers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m memtrain.install", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="fail on any requirement that is not a package of a public index")
    check.add_argument("files", nargs="*", default=list(INSTALL_FILES))
    pip = commands.add_parser("pip", help="run pip; on failure say which pinned package could not be had")
    pip.add_argument("--python", default=sys.executable)
    pip.add_argument("--log", type=Path, required=True)
    pip.add_argument("pip_args", nargs=argparse.REMAINDER)
    commands.add_parser("compile", help="byte-compile this interpreter's site-packages on every core")
    args = parser.parse_args(argv)
    if args.command == "compile":
        import sysconfig

        compile_packages(sysconfig.get_path(name) for name in ("purelib", "platlib"))
        return 0
    if args.command == "check":
        findings = sources(args.files, root=Path.cwd())
        for finding in findings:
            print(finding, file=sys.stderr)
        return 1 if findings else 0
    return run_pip(args.python, [a for a in args.pip_args if a != "--"], args.log)


if __name__ == "__main__":
    sys.exit(main())
