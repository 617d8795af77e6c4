"""`python -m memtrain.retriever`: load corpus, index and encoder, bind, write the URL to --ready-file,
serve until SIGTERM or SIGINT, then exit 0 (2 on bad input such as a missing file or a non-loopback host)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from memtrain.errors import InputError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m memtrain.retriever", description=__doc__)
    parser.add_argument(
        "--corpus", required=True, help="parquet (or Arrow IPC) table: id, title, text; row i = FAISS id i"
    )
    parser.add_argument("--index", required=True, help="FAISS index file over the corpus passages")
    parser.add_argument("--encoder", required=True, help="sentence-transformers id, local path or pkg:<module>/<dir>")
    parser.add_argument("--query-prefix", default="", help="prepended to every query (e.g. 'query: ' for e5)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=64, help="encoder batch size")
    parser.add_argument("--top-k", type=int, default=3, help="passages per query when a request gives no topk")
    parser.add_argument("--max-top-k", type=int, default=50, help="largest topk a request may ask for")
    parser.add_argument("--max-body-bytes", type=int, default=4 << 20, help="largest request body accepted")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--ready-file", help="written atomically with the server URL once it accepts requests")
    parser.add_argument("--allow-remote", action="store_true", help="permit a non-loopback --host")
    parser.add_argument("--allow-downloads", action="store_true", help="let the encoder come from the hub")
    parser.add_argument("--threads", type=int, default=None, help="torch and FAISS CPU threads")
    parser.add_argument("--nprobe", type=int, default=64, help="IVF cells probed per query")
    parser.add_argument("--ef-search", type=int, default=128, help="HNSW search breadth")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        from memtrain.retriever import protocol, server

        protocol.check_host(args.host, args.allow_remote)  # before minutes of loading
        if args.threads:
            import faiss
            import torch

            torch.set_num_threads(args.threads)
            faiss.omp_set_num_threads(args.threads)
        retriever = server.open_retriever(
            args.corpus,
            args.index,
            args.encoder,
            query_prefix=args.query_prefix,
            device=args.device,
            allow_downloads=args.allow_downloads,
            nprobe=args.nprobe,
            ef_search=args.ef_search,
            batch_size=args.batch_size,
        )
        httpd = server.make_server(
            retriever,
            host=args.host,
            port=args.port,
            default_top_k=args.top_k,
            max_top_k=args.max_top_k,
            allow_remote=args.allow_remote,
            max_body_bytes=args.max_body_bytes,
        )
    except InputError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 2
    thread = threading.Thread(target=httpd.serve_forever, name="retriever-http", daemon=True)
    thread.start()
    ready = Path(args.ready_file) if args.ready_file else None
    try:
        if ready is not None:
            from memtrain.io import atomic_path

            with atomic_path(ready) as tmp:
                tmp.write_text(httpd.url + "\n")
        print(f"retrieval server on {httpd.url}: {retriever.size} passages", file=sys.stderr, flush=True)
        while not stop.wait(1.0):
            if not thread.is_alive():
                print("error: the HTTP loop stopped", file=sys.stderr, flush=True)
                return 1
        print("retrieval server stopping", file=sys.stderr, flush=True)
        return 0
    finally:
        httpd.shutdown()
        httpd.server_close()
        if ready is not None and ready.exists():
            os.unlink(ready)  # a URL on disk means a server is listening


if __name__ == "__main__":
    raise SystemExit(main())
