"""The child-process helpers every server start goes through (retrieval, generation, MLflow's UI)."""

from __future__ import annotations

import sys

import pytest

from memtrain import processes

SLEEPER = [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"]


def test_running_stops_the_child_however_the_block_ends(tmp_path):
    log = tmp_path / "logs" / "child.log"
    with pytest.raises(KeyError), processes.running(SLEEPER, log, grace=5.0) as process:
        assert process.poll() is None
        raise KeyError("the block fails")
    assert process.returncode is not None  # stopped and reaped
    with processes.running(SLEEPER, log, grace=5.0) as second:
        pass
    assert second.returncode is not None


def test_running_puts_the_package_on_the_childs_path(tmp_path):
    log = tmp_path / "child.log"
    command = [sys.executable, "-c", "import memtrain.processes; print('imported')"]
    with processes.running(command, log, grace=5.0) as process:
        assert process.wait(timeout=60) == 0
    assert log.read_text().strip() == "imported"


def test_running_in_a_given_environment_keeps_the_package_on_the_childs_path(tmp_path):
    log = tmp_path / "child.log"
    command = [sys.executable, "-c", "import os, memtrain.processes; print(os.environ['CHOSEN'], 'HOME' in os.environ)"]
    with processes.running(command, log, grace=5.0, env={"CHOSEN": "yes"}) as process:
        assert process.wait(timeout=60) == 0
    assert log.read_text().strip() == "yes False"  # the given environment, not this one


def test_the_mlflow_ui_turns_off_mlflows_job_runner_unless_the_user_turned_it_on(monkeypatch):
    from memtrain import ui

    monkeypatch.delenv("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", raising=False)
    assert ui._environment()["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    monkeypatch.setenv("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "true")
    assert ui._environment()["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "true"
    assert ui._command("results", "127.0.0.1", 5000)[-2:] == ["--workers", "1"]


def test_wait_ready_returns_what_ready_gives_once_it_is_not_none(tmp_path):
    answers = iter([None, None, "http://127.0.0.1:1"])
    with processes.running(SLEEPER, tmp_path / "child.log", grace=5.0) as process:
        found = processes.wait_ready(lambda: next(answers), process, "server", tmp_path / "child.log", 30, poll=0.01)
    assert found == "http://127.0.0.1:1"


def test_wait_ready_fails_fast_with_the_exit_code_and_the_log_when_the_child_dies(tmp_path):
    log = tmp_path / "child.log"
    command = [sys.executable, "-c", "import sys; print('bad index', flush=True); sys.exit(3)"]
    with processes.running(command, log, grace=5.0) as process:
        process.wait(timeout=60)
        with pytest.raises(ValueError, match=r"(?s)^server exited with code 3 before it was ready; .*bad index"):
            processes.wait_ready(lambda: None, process, "server", log, 300, ValueError)


def test_wait_ready_gives_up_after_the_timeout_naming_the_log(tmp_path):
    log = tmp_path / "child.log"
    with processes.running(SLEEPER, log, grace=5.0) as process, pytest.raises(RuntimeError) as error:
        processes.wait_ready(lambda: None, process, "server", log, 2, poll=0.05)
    assert str(error.value).startswith(f"server not ready after 2 s; its log ({log}) ends:")


def test_wait_ready_ends_its_timeout_error_with_the_last_reason_the_check_gave(tmp_path):
    log = tmp_path / "child.log"
    reasons = iter(f"refused {n}" for n in range(10**6))

    def ready():
        raise processes.NotReady(next(reasons))

    with processes.running(SLEEPER, log, grace=5.0) as process, pytest.raises(RuntimeError) as error:
        processes.wait_ready(ready, process, "server", log, 1, poll=0.05)
    message = str(error.value)
    assert message.startswith("server not ready after 1 s;")
    last = int(message.rsplit("the last check: refused ", 1)[1])  # the last one, not the first
    assert last >= 2 and f"refused {last + 1}" not in message


def test_http_ready_is_true_on_an_answer_and_names_the_url_and_the_error_until_then():
    import http.server
    import threading

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        assert processes.http_ready(f"http://127.0.0.1:{server.server_port}/", 5.0) is True
        server.shutdown()
    url = f"http://127.0.0.1:{processes.free_loopback_port()}/health"  # nothing listens there
    with pytest.raises(processes.NotReady, match=rf"^{url}: "):
        processes.http_ready(url, 5.0)
