"""The server path of the evaluations: CompletionsEngine against our HTTP server, the managed server process,
and an evaluation stage that gives the same rows through the server as in process. vLLM itself never runs here."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

import psutil
import pyarrow.parquet as pq
import pytest
import torch
from tiny_llama import tiny_llama

from memtrain import stages
from memtrain.data import qa
from memtrain.data.qa import LongContextItem
from memtrain.engines import Sampling
from memtrain.engines.completions import CompletionsEngine, EngineError
from memtrain.engines.hf import HFEngine
from memtrain.engines.http_server import LOOPBACK, CompletionsServer
from memtrain.engines.serve import serve
from memtrain.stages.job import files_json, settings_json

SETTINGS = {
    "max_batch_size": 4,
    "tensor_parallel_size": 1,
    "vllm_args": [],
    "startup_timeout": 120,
    "request_timeout": 120,
}


@pytest.fixture(scope="module")
def model():
    return tiny_llama(120)


@pytest.fixture
def http_server(model):
    """Our completions server on a loopback port, in a thread of the test process."""
    server = CompletionsServer((LOOPBACK, 0), HFEngine(model, 0, torch.Generator(), max_batch_size=2), "tiny")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://{LOOPBACK}:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def prompts(lengths, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(1, 120, (length,), generator=generator).tolist() for length in lengths]


def test_the_server_decodes_what_the_engine_decodes_in_process(model, http_server):
    batch = prompts([5, 11, 3])
    greedy = Sampling(max_new_tokens=8, temperature=0.0, stop_token_ids=(7, 9))
    local = HFEngine(model, 0, torch.Generator()).generate(batch, greedy)
    remote = CompletionsEngine(http_server, "tiny", torch.Generator()).generate(batch, greedy)
    assert [(g.token_ids, g.stopped) for g in remote] == [(g.token_ids, g.stopped) for g in local]
    torch.testing.assert_close(
        torch.tensor([p for g in remote for p in g.logprobs]), torch.tensor([p for g in local for p in g.logprobs])
    )


def test_sampled_calls_replay_from_the_callers_generator(http_server):
    sampling = Sampling(max_new_tokens=8, temperature=1.0)
    first = CompletionsEngine(http_server, "tiny", torch.Generator().manual_seed(4)).generate(prompts([6, 2]), sampling)
    again = CompletionsEngine(http_server, "tiny", torch.Generator().manual_seed(4)).generate(prompts([6, 2]), sampling)
    other = CompletionsEngine(http_server, "tiny", torch.Generator().manual_seed(5)).generate(prompts([6, 2]), sampling)
    assert first == again and first != other


def test_a_refused_request_names_the_server_and_its_reason(http_server):
    request = urllib.request.Request(
        f"{http_server}/v1/completions", data=json.dumps({"prompt": []}).encode(), method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request)
    assert refused.value.code == 400 and b"prompt must be" in refused.value.read()
    engine = CompletionsEngine(http_server, "tiny", torch.Generator())
    with pytest.raises(EngineError, match=r"status 400: .*top_p"):
        engine._post("/v1/completions", {"prompt": [[1, 2]], "top_p": 0})


def test_a_server_that_strips_the_stop_token_is_refused(http_server):
    engine = CompletionsEngine(http_server, "tiny", torch.Generator())
    choice = {
        "index": 0,
        "token_ids": [4, 5],
        "logprobs": {"token_logprobs": [-1.0, -2.0]},
        "finish_reason": "stop",
        "stop_reason": 9,
    }
    with pytest.raises(EngineError, match="without its stop token"):
        engine._generation(choice, Sampling(max_new_tokens=4, stop_token_ids=(9,)))
    with pytest.raises(EngineError, match="return_token_ids"):
        engine._generation({"index": 0, "text": "x", "finish_reason": "length"}, Sampling(max_new_tokens=4))


def children() -> list[psutil.Process]:
    """Generation servers this test process started (the suite's session fixtures start other children)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "memtrain.engines.http_server" in child.cmdline():
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


@pytest.mark.slow
def test_a_managed_server_serves_then_dies_loudly_and_never_outlives_its_block(tiny_policy):
    with serve("server", tiny_policy, SETTINGS, device="cpu", dtype="float32", seed=0, threads=1) as engine:
        (generation,) = engine.generate([[1, 2, 3]], Sampling(max_new_tokens=3, temperature=0.0))
        assert len(generation.token_ids) == 3
        (server,) = children()
        server.kill()  # not psutil's wait(): that would reap it and hide its exit code from the stage
        while engine.health():
            pass
        with pytest.raises(EngineError, match=r"did not answer .*exited with code -9; its log"):
            engine.generate([[1, 2, 3]], Sampling(max_new_tokens=3))
    assert children() == []


def test_a_server_that_cannot_start_fails_with_its_log(tmp_path):
    with (
        pytest.raises(EngineError, match=r"exited with code \d+ before it was ready.*log"),
        serve("server", tmp_path / "no-such-model", SETTINGS, device="cpu", dtype="float32", seed=0),
    ):
        pass
    assert children() == []


def test_vllm_without_vllm_installed_says_so(tiny_policy, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with (
        pytest.raises(EngineError, match="needs the `vllm` command"),
        serve("vllm", tiny_policy, SETTINGS, device="cuda", dtype="bfloat16", seed=0),
    ):
        pass


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["memory", "full"])
def test_an_evaluation_through_the_server_gives_the_in_process_rows(tmp_path, cfg, tiny_policy, mode):
    """eval_long_context on the test config, greedy: eval.engine server and local write the same predictions."""
    items = [
        LongContextItem(
            str(i),
            f"What is item {i}?",
            (f"answer {i}",),
            "".join(f"Document {d}:\nTitle {d}\n{'Some text about things. ' * 30}\n" for d in (1, 2)),
            2,
            (),
        )
        for i in range(3)
    ]
    data = tmp_path / "long.parquet"
    qa.write_long_context(items, data)
    cfg["eval"]["sampling"] = {"temperature": 0.0, "top_p": 1.0}
    tables = {}
    for engine in ("local", "server"):
        cfg["eval"]["engine"] = engine
        output = tmp_path / f"{engine}.parquet"
        assert (
            stages.main(
                [
                    "eval_long_context",
                    "--threads",
                    "1",
                    "--settings",
                    settings_json(cfg, {"mode": mode}, {"seed": "0"}, str(tmp_path / "results"), "memtrain"),
                    "--files",
                    files_json({"policy": str(tiny_policy), "data": str(data)}, {"rows": str(output)}),
                ]
            )
            == 0
        )
        tables[engine] = pq.read_table(output).to_pylist()
    assert tables["server"] == tables["local"]
    assert len(tables["local"]) == 3
