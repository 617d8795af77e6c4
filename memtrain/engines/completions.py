"""An engine that decodes on a server speaking the OpenAI completions API with token ids: vLLM, or ours.

One generate call is one POST /v1/completions with every prompt as a list of token ids (the API's
batched form, which vLLM schedules as one batch), `return_token_ids` for the generated ids and
`logprobs: 0` for the sampled tokens' log-probs. Standard library only.

The server owns the randomness: a call sends a `seed` drawn from the caller's generator, so that a
sampled evaluation is reproducible for a given server, but the tokens are not those the in-process
engine would draw. Log-probs are whatever the server reports (vLLM: of the raw model distribution
unless started with `--logprobs-mode processed_logprobs`), so this engine serves evaluation, not the
importance ratios of training.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

import torch

from memtrain.engines.base import Generation, Sampling, check_prompts
from memtrain.processes import NotReady, http_ready


class EngineError(RuntimeError):
    """The generation server could not be reached, refused a request, or answered something unusable."""


class CompletionsEngine:
    """The Engine protocol over POST {url}/v1/completions."""

    def __init__(
        self,
        url: str,
        model: str,
        generator: torch.Generator,
        timeout: float = 600.0,
        describe_failure: Callable[[], str] = lambda: "",
    ) -> None:
        self.url, self.model, self.generator, self.timeout = url.rstrip("/"), model, generator, timeout
        # What the owner of the server process knows when a request fails (its exit code, its log tail).
        self.describe_failure = describe_failure

    def generate(self, prompts: Sequence[Sequence[int]], sampling: Sampling) -> list[Generation]:
        check_prompts(prompts)
        if not prompts:
            return []
        seed = int(torch.randint(0, 2**31 - 1, (), generator=self.generator))
        body = {
            "model": self.model,
            "prompt": [list(map(int, prompt)) for prompt in prompts],
            "max_tokens": sampling.max_new_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "stop_token_ids": list(sampling.stop_token_ids),
            "seed": seed,
            "logprobs": 0,
            "return_token_ids": True,
            "skip_special_tokens": False,
            # Servers stop at the model's EOS by default; here only the caller's stop ids end a sequence.
            "ignore_eos": True,
        }
        choices = sorted(self._post("/v1/completions", body).get("choices") or [], key=lambda c: c.get("index", 0))
        if len(choices) != len(prompts):
            raise self._error(f"answered {len(choices)} choices for {len(prompts)} prompts")
        return [self._generation(choice, sampling) for choice in choices]

    def health(self) -> bool:
        """Whether the server's /health answers (processes.http_ready, the check its start-up waits on)."""
        try:
            return http_ready(f"{self.url}/health", 5.0)
        except NotReady:
            return False

    def _generation(self, choice: dict[str, Any], sampling: Sampling) -> Generation:
        tokens = choice.get("token_ids")
        logprobs = (choice.get("logprobs") or {}).get("token_logprobs")
        if not isinstance(tokens, list) or not isinstance(logprobs, list) or len(tokens) != len(logprobs):
            raise self._error(
                f"choice {choice.get('index')} lacks token_ids and matching logprobs.token_logprobs "
                f"(a server without return_token_ids support?)"
            )
        stopped = choice.get("finish_reason") == "stop"
        if stopped and (not tokens or tokens[-1] not in sampling.stop_token_ids):
            # The rollout code reads the stop token to know a turn ended; a server that strips it breaks that.
            raise self._error(
                f"choice {choice.get('index')} stopped ({choice.get('stop_reason')!r}) "
                f"without its stop token at the end of token_ids"
            )
        return Generation(
            token_ids=tuple(int(t) for t in tokens),
            logprobs=tuple(math.nan if p is None else float(p) for p in logprobs),
            stopped=stopped,
        )

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(
            f"{self.url}{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")[:2000]
            raise self._error(f"refused the request with status {error.code}: {detail}") from None
        except (urllib.error.URLError, OSError, json.JSONDecodeError) as error:
            # No retry: a server that stopped answering mid-evaluation has crashed or run out of memory,
            # and the stage must fail with the cause rather than wait.
            raise self._error(f"did not answer ({error})") from None

    def _error(self, message: str) -> EngineError:
        return EngineError(f"generation server {self.url} {message}{self.describe_failure()}")
