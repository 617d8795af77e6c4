"""The in-process Hugging Face engine behind the slice of vLLM's OpenAI API that CompletionsEngine uses.

It makes `eval.engine: server` work where vLLM cannot (CPU, a GPU without vLLM), and it is what the
suite tests the server path against: batched token-id prompts in, `token_ids`, `logprobs.token_logprobs`
and `finish_reason` out, GET /health, GET /v1/models. One generate call runs at a time (the engine is
not re-entrant); a request's `seed` seeds that call's generator, as vLLM's per-request seed does.

    python -m memtrain.engines.http_server --model FOLDER --port N [--device cpu] [--dtype float32]
"""

from __future__ import annotations

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import torch

from memtrain.engines.base import Sampling
from memtrain.engines.hf import HFEngine

LOOPBACK = "127.0.0.1"


class CompletionsServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], engine: HFEngine, model_name: str) -> None:
        super().__init__(address, CompletionsHandler)
        self.engine, self.model_name, self.lock = engine, model_name, threading.Lock()

    def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        prompts = body.get("prompt")
        if isinstance(prompts, list) and prompts and all(isinstance(t, int) for t in prompts):
            prompts = [prompts]
        if not (
            isinstance(prompts, list)
            and prompts
            and all(isinstance(p, list) and p and all(isinstance(t, int) for t in p) for p in prompts)
        ):
            raise ValueError("prompt must be a non-empty list of token ids, or a list of such lists")
        sampling = Sampling(
            max_new_tokens=body.get("max_tokens", 16),
            temperature=body.get("temperature", 1.0),
            top_p=body.get("top_p", 1.0),
            stop_token_ids=tuple(body.get("stop_token_ids") or ()),
        )
        with self.lock:
            if body.get("seed") is not None:
                self.engine.generator.manual_seed(int(body["seed"]))
            generations = self.engine.generate(prompts, sampling)
        return {
            "object": "text_completion",
            "model": self.model_name,
            "choices": [
                {
                    "index": index,
                    "text": "",
                    "token_ids": list(g.token_ids),
                    "logprobs": {"token_logprobs": list(g.logprobs)},
                    "finish_reason": "stop" if g.stopped else "length",
                    "stop_reason": g.token_ids[-1] if g.stopped else None,
                }
                for index, g in enumerate(generations)
            ],
        }


class CompletionsHandler(BaseHTTPRequestHandler):
    server: CompletionsServer

    def do_GET(self) -> None:
        if self.path == "/health":
            self._send(200, {"status": "ok"})
        elif self.path == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": self.server.model_name, "object": "model"}]})
        else:
            self._send(404, {"error": f"no route {self.path}"})

    def do_POST(self) -> None:
        if self.path != "/v1/completions":
            self._send(404, {"error": f"no route {self.path}"})
            return
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            if not isinstance(body, dict):
                raise TypeError("the request body must be a JSON object")
            self._send(200, self.server.complete(body))
        except (ValueError, TypeError) as error:
            self._send(400, {"error": str(error)})

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request would drown the job's log


def main(argv: list[str] | None = None) -> int:
    from memtrain.models import load_policy, load_saved_tokenizer, resolve_device

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="folder of a saved Hugging Face causal LM")
    parser.add_argument("--served-model-name", default=None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--linear", default="auto", help="kernel of the linear layers (rl.engine_linear)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    model = load_policy(args.model, device=device, dtype=args.dtype)
    tokenizer = load_saved_tokenizer(args.model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    engine = HFEngine(
        model,
        pad_token_id=pad,
        generator=torch.Generator(device=device),
        max_batch_size=args.max_batch_size,
        linear=args.linear,
    )
    # Loopback only: the server has no authentication, and the stage that starts it is its only client.
    server = CompletionsServer((LOOPBACK, args.port), engine, args.served_model_name or args.model)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
