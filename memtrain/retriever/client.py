"""Client side of the retrieval server: the wire format, an HTTP client, and a managed server process.

Standard library only, so an agent rollout can import it without torch or FAISS. The client also
talks to Search-R1's own server (whose documents carry only `id` and `contents`), and
`passages_to_string` renders hits exactly as Search-R1's and MEM1's `_passages2string` do, so the
agent reads the same observation text whichever server answered.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memtrain.processes import NotReady, running, wait_ready
from memtrain.retriever.protocol import check_host, format_contents, split_contents


@dataclass(frozen=True)
class Hit:
    id: str
    title: str
    text: str
    score: float


def passages_to_string(hits: Sequence[Hit]) -> str:
    """What the search agent reads inside <information>: one 'Doc i(Title: "t") text' line per hit.

    Byte-for-byte the format of `_passages2string` in Search-R1 (search_r1/llm_agent/generation.py)
    and MEM1 (Mem1/train/rollout/llm_agent/generation_think.py), quotes and missing space included.
    """
    lines = []
    for position, hit in enumerate(hits, start=1):
        title, _, text = format_contents(hit.title, hit.text).partition("\n")
        lines.append(f"Doc {position}(Title: {title}) {text}\n")
    return "".join(lines)


class RetrieverError(RuntimeError):
    """The server refused a request (status 4xx/5xx, with its reason) or could not be reached or started."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RetrieverClient:
    """Blocking JSON client of POST /retrieve and GET /health."""

    def __init__(self, url: str, timeout: float = 60.0) -> None:
        self.url, self.timeout = url.rstrip("/"), timeout

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    def _call(self, method: str, path: str, payload: Any = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode("utf-8")
        request = urllib.request.Request(
            f"{self.url}{path}", data=data, method=method, headers={"Content-Type": "application/json"} if data else {}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as error:
            raw = error.read()
            try:
                reason = json.loads(raw)["error"]
            except (ValueError, KeyError, TypeError):
                reason = raw.decode("utf-8", "replace")[:500] or error.reason
            raise RetrieverError(
                f"retrieval server {method} {path} answered {error.code}: {reason}", error.code
            ) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise RetrieverError(f"cannot reach the retrieval server at {self.url}: {reason}") from error
        try:
            return json.loads(body)
        except ValueError as error:
            raise RetrieverError(f"retrieval server {method} {path} sent a reply that is not JSON: {error}") from error

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/health")

    def search(self, queries: Sequence[str], top_k: int | None = None) -> list[list[Hit]]:
        """Hits per query, best first; top_k None leaves the server's default."""
        payload: dict[str, Any] = {"queries": list(queries), "return_scores": True}
        if top_k is not None:
            payload["topk"] = top_k
        reply = self._call("POST", "/retrieve", payload)
        try:
            return [[_hit(item) for item in hits] for hits in reply["result"]]
        except (KeyError, TypeError, ValueError) as error:
            raise RetrieverError(f"unexpected /retrieve reply from {self.url}: {error!r}") from error

    def observations(self, top_k: int) -> Callable[[Sequence[str]], list[str]]:
        """The search agent's search function over this server: per query, its top_k hits as the agent reads them."""
        return lambda queries: [passages_to_string(hits) for hits in self.search(list(queries), top_k)]


def _hit(item: dict[str, Any]) -> Hit:
    document = item.get("document", item)  # return_scores false gives bare documents
    if "title" in document and "text" in document:
        title, text = str(document["title"]), str(document["text"])
    else:
        title, text = split_contents(document["contents"])
    return Hit(id=str(document.get("id", "")), title=title, text=text, score=float(item.get("score", "nan")))


class ServedClient(RetrieverClient):
    """A client whose server process `serve` started; `process` is the server's Popen."""

    def __init__(self, url: str, timeout: float, process: subprocess.Popen, log_path: Path) -> None:
        super().__init__(url, timeout)
        self.process, self.log_path = process, log_path


@contextlib.contextmanager
def serve(
    corpus: str | os.PathLike,
    index: str | os.PathLike,
    encoder: str,
    *,
    query_prefix: str = "",
    top_k: int = 3,
    max_top_k: int = 50,
    device: str = "cpu",
    host: str = "127.0.0.1",
    allow_remote: bool = False,
    allow_downloads: bool = False,
    threads: int | None = None,
    nprobe: int | None = None,
    ef_search: int | None = None,
    timeout: float = 60.0,
    startup_timeout: float = 300.0,
    log_path: str | os.PathLike | None = None,
) -> Iterator[ServedClient]:
    """Run `python -m memtrain.retriever` as a child process for the duration of the block.

    Waits for its ready file and a passing /health, failing fast (with the server's log tail) if it
    dies first; the server is stopped afterwards however the block ends: SIGTERM, then SIGKILL.
    """
    check_host(host, allow_remote)  # refuse before paying for a process start
    workdir = Path(tempfile.mkdtemp(prefix="memtrain-retriever-"))
    ready = workdir / "url"
    log = Path(log_path) if log_path else workdir / "server.log"
    command = [
        sys.executable,
        "-m",
        "memtrain.retriever",
        "--corpus",
        str(corpus),
        "--index",
        str(index),
        "--encoder",
        encoder,
        "--query-prefix",
        query_prefix,
        "--device",
        device,
        "--top-k",
        str(top_k),
        "--max-top-k",
        str(max_top_k),
        "--host",
        host,
        "--port",
        "0",
        "--ready-file",
        str(ready),
    ]
    for flag, value in (("--threads", threads), ("--nprobe", nprobe), ("--ef-search", ef_search)):
        if value is not None:
            command += [flag, str(value)]
    command += ["--allow-remote"] * allow_remote + ["--allow-downloads"] * allow_downloads
    try:
        with running(command, log, grace=15.0) as process:
            url = wait_ready(
                lambda: _healthy_url(ready), process, "retrieval server", log, startup_timeout, RetrieverError, 0.1
            )
            yield ServedClient(url, timeout, process, log)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _healthy_url(ready: Path) -> str | None:
    """The address the server wrote to its ready file, once its /health passes (NotReady says how it failed)."""
    url = ready.read_text().strip() if ready.exists() else ""
    if not url:
        return None
    try:
        status = RetrieverClient(url, timeout=5.0).health().get("status")
    except RetrieverError as failure:
        raise NotReady(f"{url}/health: {failure}") from failure
    if status != "ok":
        raise NotReady(f"{url}/health answered status {status!r}")
    return url
