"""The dense-retrieval HTTP server that the MEM1 search agent queries.

Wire-compatible with Search-R1's `search_r1/search/retrieval_server.py` (which MEM1 launches unchanged
from `Mem1/train/retrieval_launch.sh`), so either server can stand behind either client:

    POST /retrieve  {"queries": [str, ...], "topk": int?, "return_scores": bool?}
        -> {"result": [[{"document": {"id", "title", "text", "contents"}, "score": float}, ...], ...]}
           (with return_scores false, each inner list holds the bare documents, as in Search-R1)
    GET  /health    -> {"status": "ok", "passages": N}

`contents` is the wiki-18 `"Title"\\ntext` string that Search-R1 and MEM1 agents parse. Bad requests get
a 4xx with {"error": reason}; only a failure of the server itself gives a 500.

The corpus is a parquet table (row i is FAISS id i) read with pyarrow and sliced with `take`, so no
Python list of 21M passages is ever built; an Arrow IPC file (.arrow/.feather) is memory-mapped
without a copy. One lock serialises the encoder and FAISS calls; the HTTP threads only parse and format.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
import traceback
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa

from memtrain.errors import InputError
from memtrain.retriever.protocol import check_host, format_contents, split_contents

DEFAULT_MAX_BODY_BYTES = 4 << 20
ID_COLUMNS = ("id", "passage_id")  # the wiki-18 / Search-R1 name first, then memtrain's passages table
IPC_SUFFIXES = (".arrow", ".feather", ".ipc")


# --------------------------------------------------------------------------- loading


def load_corpus(path: str | os.PathLike) -> pa.Table:
    """The passages as an Arrow table, row i being FAISS id i: columns (id, title, text) or (id, contents).

    Accepts `id` or `passage_id` for the id, and either `title` + `text` or a wiki-18 `contents` column.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("corpus file does not exist", file=path)
    try:
        if path.suffix in IPC_SUFFIXES:
            table = pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all()
        else:
            import pyarrow.parquet as pq

            names = pq.read_schema(path).names
            wanted = [name for name in (*ID_COLUMNS, "title", "text", "contents") if name in names]
            table = pq.read_table(path, columns=wanted, memory_map=True)
    except (pa.ArrowException, OSError) as error:
        raise InputError(f"cannot read the corpus table: {error}", file=path) from error
    names = table.column_names
    id_column = next((name for name in ID_COLUMNS if name in names), None)
    if id_column is None:
        raise InputError(
            f"no id column (expected one of {', '.join(ID_COLUMNS)}; found {names})", file=path, field="id"
        )
    if "title" in names and "text" in names:
        text_columns = ["title", "text"]
    elif "contents" in names:
        text_columns = ["contents"]  # split into title and text per hit, never for the whole corpus
    else:
        raise InputError(f"needs columns title and text (or contents); found {names}", file=path, field="text")
    for name in text_columns:
        kind = table.schema.field(name).type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            raise InputError(f"column has type {kind}, expected string", file=path, field=name)
    return table.select([id_column, *text_columns]).rename_columns(["id", *text_columns])


class Retriever:
    """Encoder + FAISS index + corpus behind one lock: queries in, ranked passages out."""

    def __init__(self, corpus: pa.Table, index, encoder, *, query_prefix: str = "", batch_size: int = 64) -> None:
        self.corpus, self.index, self.encoder = corpus, index, encoder
        self.query_prefix, self.batch_size = query_prefix, batch_size
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        return self.corpus.num_rows

    def search(self, queries: Sequence[str], top_k: int) -> list[list[tuple[dict[str, Any], float]]]:
        """For each query, up to top_k (document, score) pairs, best first."""
        from memtrain.data import retrieval

        with self._lock:
            vectors = retrieval.embed(self.encoder, list(queries), self.query_prefix, self.batch_size)
            scores, ids = retrieval.search(self.index, vectors, top_k)
        found = ids >= 0  # -1 marks a slot the index could not fill
        rows = self.corpus.take(pa.array(ids[found], pa.int64())).to_pylist()
        results, cursor = [], 0
        for query_scores, query_found in zip(scores, found):
            hits = []
            for score in query_scores[query_found]:
                row = rows[cursor]
                cursor += 1
                if "contents" in row:
                    title, text = split_contents(row["contents"] or "")
                else:
                    title, text = row["title"] or "", row["text"] or ""
                document = {"id": row["id"], "title": title, "text": text, "contents": format_contents(title, text)}
                hits.append((document, float(score)))
            results.append(hits)
        return results


def open_retriever(
    corpus: str | os.PathLike,
    index: str | os.PathLike,
    encoder: str,
    *,
    query_prefix: str = "",
    device: str = "cpu",
    allow_downloads: bool = False,
    nprobe: int = 64,
    ef_search: int = 128,
    batch_size: int = 64,
) -> Retriever:
    """Load and cross-check corpus, index and encoder; the cheap checks run before the encoder loads."""
    from memtrain.data import retrieval

    table = load_corpus(corpus)
    if not Path(index).is_file():
        raise InputError("FAISS index file does not exist", file=index)
    faiss_index = retrieval.load_index(index, {"nprobe": nprobe, "ef_search": ef_search})
    if faiss_index.ntotal != table.num_rows:
        raise InputError(
            f"the index holds {faiss_index.ntotal} vectors but the corpus {corpus} has "
            f"{table.num_rows} passages; row i of the corpus must be vector i of the index",
            file=index,
        )
    model = retrieval.load_encoder(encoder, allow_downloads=allow_downloads, device=device)
    dim = model.get_sentence_embedding_dimension()
    if dim is not None and dim != faiss_index.d:
        raise InputError(
            f"the index has dimension {faiss_index.d} but encoder {encoder!r} embeds in {dim}; "
            "was the index built with another model?",
            file=index,
        )
    return Retriever(table, faiss_index, model, query_prefix=query_prefix, batch_size=batch_size)


# --------------------------------------------------------------------------- HTTP


class BadRequest(Exception):
    def __init__(self, status: HTTPStatus, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


def parse_request(body: bytes, default_top_k: int, max_top_k: int) -> tuple[list[str], int, bool]:
    """Validate a /retrieve body; every way it can be wrong is a BadRequest (400) with the reason."""

    def bad(reason: str) -> BadRequest:
        return BadRequest(HTTPStatus.BAD_REQUEST, reason)

    try:
        payload = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise bad(f"request body is not UTF-8: {error}") from error
    except json.JSONDecodeError as error:
        raise bad(f"request body is not valid JSON: {error}") from error
    if not isinstance(payload, dict):
        raise bad(f"request body must be a JSON object, got {type(payload).__name__}")
    if "queries" not in payload:
        raise bad("missing field 'queries' (a list of strings)")
    queries = payload["queries"]
    if not isinstance(queries, list):
        raise bad(f"field 'queries' must be a list of strings, got {type(queries).__name__}")
    if not queries:
        raise bad("field 'queries' is an empty list")
    for position, query in enumerate(queries):
        if not isinstance(query, str):
            raise bad(f"queries[{position}] must be a string, got {type(query).__name__}")
    top_k = payload.get("topk")
    if top_k is None:
        top_k = default_top_k
    elif isinstance(top_k, bool) or not isinstance(top_k, int):
        raise bad(f"field 'topk' must be a positive integer, got {json.dumps(top_k)}")
    elif not 1 <= top_k <= max_top_k:
        raise bad(f"field 'topk' must be between 1 and {max_top_k}, got {top_k}")
    return_scores = payload.get("return_scores", False)
    if return_scores is None:
        return_scores = False
    if not isinstance(return_scores, bool):
        raise bad(f"field 'return_scores' must be true or false, got {json.dumps(return_scores)}")
    return queries, top_k, return_scores


class RetrievalServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], retriever: Retriever, *, default_top_k: int, max_top_k: int, max_body_bytes: int
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, RetrievalHandler)
        self.retriever, self.default_top_k = retriever, default_top_k
        self.max_top_k, self.max_body_bytes = max_top_k, max_body_bytes

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class RetrievalHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "memtrain-retriever/1"
    default_request_version = "HTTP/1.0"  # so even a garbled request line gets a status line back
    timeout = 120  # a stalled client cannot pin a thread forever
    server: RetrievalServer
    ROUTES: ClassVar[dict[str, str]] = {"/retrieve": "POST", "/health": "GET"}

    def _send(self, status: HTTPStatus, payload: Mapping[str, Any], headers: Mapping[str, str] = {}) -> None:
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: HTTPStatus, reason: str, headers: Mapping[str, str] = {}) -> None:
        self._send(status, {"error": reason}, headers)
        if self.close_connection:
            self._drain_and_close()

    def _route(self, method: str) -> bool:
        path = self.path.split("?", 1)[0]
        allowed = self.ROUTES.get(path)
        if allowed is None:
            self._discard_body()
            self._error(HTTPStatus.NOT_FOUND, f"unknown path {path!r}; use POST /retrieve or GET /health")
            return False
        if allowed != method:
            self._discard_body()
            self._error(HTTPStatus.METHOD_NOT_ALLOWED, f"{path} accepts {allowed}, not {method}", {"Allow": allowed})
            return False
        return True

    def _discard_body(self) -> None:
        """Keep the connection usable after refusing a request that came with a (small) body."""
        length = self.headers.get("Content-Length")
        if length and length.isdigit() and int(length) <= self.server.max_body_bytes:
            self.rfile.read(int(length))
        elif length or self.headers.get("Transfer-Encoding"):
            self.close_connection = True

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise BadRequest(
                HTTPStatus.LENGTH_REQUIRED, "chunked request bodies are not supported; send Content-Length"
            )
        length = self.headers.get("Content-Length")
        if length is None:
            self.close_connection = True
            raise BadRequest(HTTPStatus.LENGTH_REQUIRED, "missing Content-Length header")
        if not length.strip().isdigit():
            self.close_connection = True
            raise BadRequest(HTTPStatus.BAD_REQUEST, f"invalid Content-Length {length!r}")
        if int(length) > self.server.max_body_bytes:
            self.close_connection = True
            raise BadRequest(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"request body of {int(length)} bytes exceeds the limit of {self.server.max_body_bytes}",
            )
        body = self.rfile.read(int(length))
        if len(body) < int(length):
            self.close_connection = True
            raise BadRequest(HTTPStatus.BAD_REQUEST, "request body is shorter than its Content-Length")
        return body

    def _drain_and_close(self) -> None:
        """After refusing an unread body, let the client read the reply before the socket closes.

        Closing a socket with unread input makes the kernel send RST, which can destroy the reply in
        flight; so half-close, then swallow what the client is still sending (briefly, bounded).
        """
        deadline = time.monotonic() + 2.0
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            while (left := deadline - time.monotonic()) > 0:
                self.connection.settimeout(left)
                if not self.connection.recv(65536):
                    break
        except OSError:
            pass

    def do_GET(self) -> None:
        if self._route("GET"):
            self._send(HTTPStatus.OK, {"status": "ok", "passages": self.server.retriever.size})

    def do_POST(self) -> None:
        if not self._route("POST"):
            return
        try:
            body = self._read_body()
            queries, top_k, return_scores = parse_request(body, self.server.default_top_k, self.server.max_top_k)
        except BadRequest as error:
            self._error(error.status, error.reason)
            return
        try:
            results = self.server.retriever.search(queries, top_k)
        except Exception as error:  # noqa: BLE001 - the server's own failure: report it, keep serving
            traceback.print_exc(file=sys.stderr)
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"retrieval failed: {type(error).__name__}: {error}")
            return
        if return_scores:
            result = [[{"document": document, "score": score} for document, score in hits] for hits in results]
        else:
            result = [[document for document, _ in hits] for hits in results]
        self._send(HTTPStatus.OK, {"result": result})

    def _unsupported(self) -> None:
        if self.command == "HEAD":
            self.close_connection = True  # a HEAD reply has no body to frame, so end the connection
        path = self.path.split("?", 1)[0]
        if path not in self.ROUTES:
            self._route(self.command)
        else:
            self._discard_body()
            allowed = self.ROUTES[path]
            self._error(
                HTTPStatus.METHOD_NOT_ALLOWED, f"{path} accepts {allowed}, not {self.command}", {"Allow": allowed}
            )

    do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _unsupported

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Protocol-level errors from http.server (malformed request line, bad headers) as JSON too."""
        self.close_connection = True
        try:
            self._error(HTTPStatus(code), message or HTTPStatus(code).phrase)
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"{self.address_string()} - {format % args}\n")


def make_server(
    retriever: Retriever,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    default_top_k: int = 3,
    max_top_k: int = 50,
    allow_remote: bool = False,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> RetrievalServer:
    """Bind (port 0 picks a free port) without serving yet; call serve_forever() on the result."""
    check_host(host, allow_remote)
    if not 1 <= default_top_k <= max_top_k:
        raise InputError(f"default top_k {default_top_k} must be between 1 and max_top_k {max_top_k}", field="top_k")
    try:
        return RetrievalServer(
            (host, port), retriever, default_top_k=default_top_k, max_top_k=max_top_k, max_body_bytes=max_body_bytes
        )
    except OSError as error:
        raise InputError(f"cannot listen on {host}:{port}: {error}", field="port") from error
