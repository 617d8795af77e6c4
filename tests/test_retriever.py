"""The MEM1 retrieval server over real HTTP on loopback: real MiniLM encoder, real FAISS index, a real child process."""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import socket
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import FLAT, MAX_TOP_K

from memtrain.data import retrieval
from memtrain.errors import InputError
from memtrain.retriever import (
    Hit,
    RetrieverClient,
    RetrieverError,
    format_contents,
    passages_to_string,
    serve,
    split_contents,
)
from memtrain.retriever import server as retriever_server
from memtrain.retriever.protocol import check_host
from memtrain.settings import Runtime


@pytest.fixture
def client(retrieval_server):
    return retrieval_server


def post(url: str, body: bytes, path: str = "/retrieve", method: str = "POST") -> tuple[int, dict]:
    request = urllib.request.Request(url + path, data=body, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def port_of(url: str) -> int:
    return urllib.parse.urlsplit(url).port


def accepts_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return True
    except OSError:
        return False


# --------------------------------------------------------------------------- serving


def test_health_reports_the_corpus_size(client):
    assert client.url.startswith("http://127.0.0.1:")
    assert client.health() == {"status": "ok", "passages": 30}


def test_the_answer_passage_is_the_top_hit(client, corpus_files):
    _, _, table = corpus_files
    hits = client.search(
        ["Who wrote the novel about Huckleberry Finn?", "palace and fortress complex in Granada, Spain"]
    )
    assert [query_hits[0].title for query_hits in hits] == ["Adventures of Huckleberry Finn", "Alhambra"]
    top = hits[0][0]
    row = table.to_pylist()[table.column("id").to_pylist().index(top.id)]
    assert (top.title, top.text) == (row["title"], row["text"]) and isinstance(top.score, float)
    assert 0.3 < top.score <= 1.0 + 1e-5


def test_top_k_default_and_requested_and_scores_sorted(client):
    query = ["famous paintings and art movements"]
    assert len(client.search(query)[0]) == 3  # the server's default top_k
    for k in (1, 7, 30):
        hits = client.search(query, top_k=k)[0]
        assert len(hits) == k and len({hit.id for hit in hits}) == k
        assert all(a.score >= b.score for a, b in itertools.pairwise(hits))
    assert len(client.search(query, top_k=MAX_TOP_K)[0]) == 30  # capped by the corpus size
    many = client.search(["music", "film", "architecture", "poetry"], top_k=2)
    assert [len(hits) for hits in many] == [2, 2, 2, 2]


def test_wire_format_is_search_r1s(client):
    """MEM1/Search-R1 agents post {queries, topk, return_scores} and read result[i][j]['document']['contents']."""
    status, reply = post(
        client.url, json.dumps({"queries": ["Alhambra Granada"], "topk": 2, "return_scores": True}).encode()
    )
    assert status == 200 and set(reply) == {"result"}
    item = reply["result"][0][0]
    assert set(item) == {"document", "score"} and set(item["document"]) >= {"id", "contents"}
    assert item["document"]["contents"] == '"Alhambra"\n' + item["document"]["text"]
    status, reply = post(client.url, json.dumps({"queries": ["Alhambra Granada"], "topk": 2}).encode())
    assert status == 200 and reply["result"][0][0]["id"] == "Alhambra"  # without scores: bare documents
    status, reply = post(client.url, json.dumps({"queries": ["Alhambra"], "topk": None}).encode())
    assert status == 200 and len(reply["result"][0]) == 3  # null topk -> default, as in Search-R1


def test_agent_observation_text_matches_search_r1():
    hits = [Hit("a", "Alhambra", "A palace in Granada.", 0.9), Hit("b", "Aladdin", "A folk tale.\nSecond line.", 0.5)]
    assert passages_to_string(hits) == (
        'Doc 1(Title: "Alhambra") A palace in Granada.\nDoc 2(Title: "Aladdin") A folk tale.\nSecond line.\n'
    )
    assert format_contents("Alhambra", "A palace.") == '"Alhambra"\nA palace.'
    assert split_contents(format_contents("Alhambra", "A palace.\nMore.")) == ("Alhambra", "A palace.\nMore.")


# --------------------------------------------------------------------------- bad requests

BAD_BODIES = {
    "invalid JSON": (b'{"queries": [', 400, "not valid JSON"),
    "not UTF-8": (b'{"queries": ["\xff"]}', 400, "UTF-8"),
    "not an object": (b'["a query"]', 400, "JSON object"),
    "missing queries": (b'{"topk": 3}', 400, "missing field 'queries'"),
    "queries not a list": (b'{"queries": "a query"}', 400, "must be a list"),
    "non-string query": (b'{"queries": ["ok", 3]}', 400, "queries[1] must be a string"),
    "empty queries": (b'{"queries": []}', 400, "empty list"),
    "topk zero": (b'{"queries": ["q"], "topk": 0}', 400, "between 1 and 50"),
    "topk negative": (b'{"queries": ["q"], "topk": -2}', 400, "between 1 and 50"),
    "topk too large": (b'{"queries": ["q"], "topk": 51}', 400, "between 1 and 50"),
    "topk string": (b'{"queries": ["q"], "topk": "3"}', 400, "positive integer"),
    "topk float": (b'{"queries": ["q"], "topk": 2.5}', 400, "positive integer"),
    "topk bool": (b'{"queries": ["q"], "topk": true}', 400, "positive integer"),
    "return_scores not bool": (b'{"queries": ["q"], "return_scores": "yes"}', 400, "return_scores"),
}


@pytest.mark.parametrize("body, status, reason", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_malformed_bodies_get_400_with_a_reason(client, body, status, reason):
    got_status, reply = post(client.url, body)
    assert got_status == status and reason in reply["error"]


@pytest.mark.parametrize(
    "method, path, status, reason",
    [
        ("GET", "/nope", 404, "unknown path"),
        ("POST", "/nope", 404, "unknown path"),
        ("GET", "/retrieve", 405, "accepts POST"),
        ("POST", "/health", 405, "accepts GET"),
        ("PUT", "/retrieve", 405, "accepts POST"),
        ("DELETE", "/health", 405, "accepts GET"),
    ],
)
def test_unknown_paths_and_wrong_methods(client, method, path, status, reason):
    got_status, reply = post(client.url, b'{"queries": ["q"]}' if method != "GET" else None, path, method)
    assert got_status == status and reason in reply["error"]


def raw_request(url: str, headers: dict[str, str], body: bytes) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port_of(url), timeout=30)
    try:
        connection.putrequest("POST", "/retrieve", skip_accept_encoding=True)
        for key, value in headers.items():
            connection.putheader(key, value)
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_oversized_missing_and_chunked_bodies_are_refused(client):
    status, reply = raw_request(client.url, {"Content-Length": str(10**9)}, b'{"queries": ["q"]}')
    assert status == 413 and "exceeds the limit" in reply["error"]
    status, reply = raw_request(client.url, {}, b"")
    assert status == 411 and "Content-Length" in reply["error"]
    status, reply = raw_request(client.url, {"Transfer-Encoding": "chunked"}, b"0\r\n\r\n")
    assert status == 411 and "chunked" in reply["error"]
    assert client.health()["status"] == "ok"  # and it keeps serving


def test_client_raises_the_servers_reason(client):
    with pytest.raises(RetrieverError, match="between 1 and 50") as caught:
        client.search(["q"], top_k=500)
    assert caught.value.status == 400
    with pytest.raises(RetrieverError, match="cannot reach"):
        RetrieverClient("http://127.0.0.1:9", timeout=2).health()


# --------------------------------------------------------------------------- binding and lifecycle


def test_non_loopback_hosts_are_refused_unless_allowed(corpus_files, encoder_ref):
    for host in ("127.0.0.1", "::1", "localhost"):
        check_host(host, allow_remote=False)
    for host in ("0.0.0.0", "", "::", "10.1.2.3"):
        with pytest.raises(InputError, match="not a loopback address"):
            check_host(host, allow_remote=False)
    check_host("0.0.0.0", allow_remote=True)
    corpus, index, _ = corpus_files
    with pytest.raises(InputError, match="not a loopback"), serve(corpus, index, encoder_ref, host="0.0.0.0"):
        pass
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "memtrain.retriever",
            "--corpus",
            str(corpus),
            "--index",
            str(index),
            "--encoder",
            encoder_ref,
            "--host",
            "0.0.0.0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2 and "not a loopback address" in done.stderr


@pytest.mark.parametrize("body_raises", [False, True])
def test_server_is_stopped_when_the_block_ends(corpus_files, encoder_ref, body_raises):
    corpus, index, _ = corpus_files

    class Boom(Exception):
        pass

    with (
        pytest.raises(Boom) if body_raises else contextlib.nullcontext(),
        serve(corpus, index, encoder_ref, threads=1, startup_timeout=120) as served,
    ):
        process, port = served.process, port_of(served.url)
        assert served.search(["Alhambra"], top_k=1)[0][0].title == "Alhambra"
        if body_raises:
            raise Boom
    assert process.poll() == 0  # SIGTERM -> clean exit
    assert not accepts_connections(port)


# --------------------------------------------------------------------------- bad inputs


def test_corpus_index_size_mismatch_is_a_clear_error(tmp_path, corpus_files, encoder_ref):
    _corpus, index, table = corpus_files
    pq.write_table(table.slice(0, 29), tmp_path / "short.parquet")
    with pytest.raises(InputError, match="index holds 30 vectors but the corpus .* has 29 passages") as caught:
        retriever_server.open_retriever(tmp_path / "short.parquet", index, encoder_ref)
    assert caught.value.file == index
    with (
        pytest.raises(
            RetrieverError, match="(?s)exited with code 2 .*index holds 30 vectors but the corpus .* has 29 passages"
        ),
        serve(tmp_path / "short.parquet", index, encoder_ref, startup_timeout=60),
    ):
        pass


def test_missing_or_corrupt_files_name_the_file(tmp_path, corpus_files, encoder_ref):
    corpus, _index, _ = corpus_files
    with pytest.raises(InputError, match="corpus file does not exist") as caught:
        retriever_server.load_corpus(tmp_path / "missing.parquet")
    assert caught.value.file == tmp_path / "missing.parquet"
    (tmp_path / "broken.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(InputError, match="cannot read the corpus table"):
        retriever_server.load_corpus(tmp_path / "broken.parquet")
    pq.write_table(pa.table({"id": ["a"], "body": ["b"]}), tmp_path / "columns.parquet")
    with pytest.raises(InputError, match="needs columns title and text"):
        retriever_server.load_corpus(tmp_path / "columns.parquet")
    with pytest.raises(InputError, match="FAISS index file does not exist"):
        retriever_server.open_retriever(corpus, tmp_path / "missing.faiss", encoder_ref)
    (tmp_path / "broken.faiss").write_bytes(b"not an index")
    with pytest.raises(InputError, match="cannot read FAISS index") as caught:
        retriever_server.open_retriever(corpus, tmp_path / "broken.faiss", encoder_ref)
    assert caught.value.file == tmp_path / "broken.faiss"


def test_corpus_layouts_memtrain_passages_wiki18_contents_and_arrow_ipc(tmp_path, encoder):
    passages = pa.table({"passage_id": ["p0"], "article_ids": [["a"]], "title": ["T"], "text": ["x"], "num_words": [1]})
    pq.write_table(passages, tmp_path / "passages.parquet")
    assert retriever_server.load_corpus(tmp_path / "passages.parquet").to_pylist() == [
        {"id": "p0", "title": "T", "text": "x"}
    ]
    wiki = pa.table({"id": ["0"], "contents": ['"Aaron"\nAaron is a prophet.']})
    with pa.OSFile(str(tmp_path / "wiki.arrow"), "wb") as sink, pa.ipc.new_file(sink, wiki.schema) as writer:
        writer.write_table(wiki)
    assert retriever_server.load_corpus(tmp_path / "wiki.arrow").to_pylist() == wiki.to_pylist()
    texts = ["Aaron is a prophet.", "Paris is the capital of France."]
    wiki = pa.table(
        {"id": ["0", "1"], "contents": [format_contents("Aaron", texts[0]), format_contents("Paris", texts[1])]}
    )
    retriever = retriever_server.Retriever(wiki, retrieval.build_index(retrieval.embed(encoder, texts), FLAT), encoder)
    [[(document, _score)]] = retriever.search(["capital of France"], 1)
    assert document == {"id": "1", "title": "Paris", "text": texts[1], "contents": wiki.column("contents")[1].as_py()}


# --------------------------------------------------------------------------- the MEM1 agent against it


@pytest.mark.slow
def test_mem1_rollout_with_real_smollm2_against_the_running_server(client, smollm2_policy, test_config):
    """SmolLM2 plays the MEM1 agent for real: its searches reach the server, results come back pruned."""
    import numpy as np

    from memtrain import config as memtrain_config
    from memtrain.rl import policies
    from memtrain.rl.mem1_task import Mem1Task

    cfg = memtrain_config.deep_merge(
        test_config, {"posttrain": {"mem1": {"max_turns": 3, "response_tokens": 64, "information_tokens": 96}}}
    )
    sent = []

    def search(queries):
        sent.extend(queries)
        return [passages_to_string(hits) for hits in client.search(list(queries), 3)]

    policy = policies.load(smollm2_policy, Runtime.of(cfg), seed=3)
    agent = policies.search_agent(policy, cfg, search)
    item = type(
        "Item",
        (),
        {
            "id": "q",
            "question": "Who wrote Adventures of Huckleberry Finn?; Where is the Alhambra?",
            "targets": (("Mark Twain",), ("Granada",)),
        },
    )
    rollout = Mem1Task(agent, group_size=4).rollout([item], np.random.default_rng(0))
    (group,) = rollout.groups
    assert len(group.members) == 4 and all(0.0 <= r <= 1.0 for r in group.rewards)
    tokenizer = policy.tokenizer
    for member in group.members:
        assert 1 <= len(member.samples) <= 3
        for sample in member.samples:
            assert len(sample.response_ids) <= 64
            assert "Doc 1(Title:" not in tokenizer.decode(sample.response_ids)  # retrieved text never in the loss
    sent.clear()
    episodes = agent.run([item.question], group_size=4)[0]
    assert len(sent) == sum(len(e.information) for e in episodes)  # every search went over HTTP, once
    searched = [e for e in episodes if e.information]
    for episode in searched:  # what came back is the server's passages, cut to the information budget
        assert episode.information[0].startswith("Doc 1(Title:")
        assert len(tokenizer(episode.information[0], add_special_tokens=False)["input_ids"]) <= 96
        assert episode.information[0] in tokenizer.decode(episode.turns[1].prompt_ids)


def test_a_server_whose_health_check_fails_is_not_ready_and_says_why(tmp_path):
    from memtrain.processes import NotReady, free_loopback_port
    from memtrain.retriever.client import _healthy_url

    ready = tmp_path / "ready"
    assert _healthy_url(ready) is None  # no address written yet: nothing to say
    url = f"http://127.0.0.1:{free_loopback_port()}"  # nothing listens there
    ready.write_text(url)
    with pytest.raises(NotReady, match=rf"^{url}/health: "):
        _healthy_url(ready)
