"""NOTES.txt is a runbook: how to reach the service, where the key is, and calls that work as printed.

The curl and Cohere SDK calls are run exactly as NOTES prints them, against a stand-in server that records
the request and answers like the gateway's /v2/rerank, so a broken quote or a wrong path fails here."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.helm.chart import FULLNAME, NAMESPACE, RELEASE, render_notes

pytestmark = pytest.mark.unit

API_KEY = "rk_notes-test-key"
CALL_TIMEOUT_S = 60


@dataclass
class Recorded:
    requests: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
def stand_in() -> Iterator[tuple[str, Recorded]]:
    """A local HTTP server answering POST /v2/rerank with a Cohere v2 body; records what it received."""
    recorded = Recorded()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            recorded.requests.append(
                {"path": self.path, "authorization": self.headers.get("Authorization"), "body": body}
            )
            results = [{"index": i, "relevance_score": 1.0 / (i + 1)} for i in range(body.get("top_n", 1))]
            reply = json.dumps({"id": "notes", "results": results, "meta": {"api_version": {"version": "2"}}})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply.encode())

        def log_message(self, format: str, *args: Any) -> None:  # the stdlib's parameter name
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", recorded
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _block(notes: str, first_line: str) -> str:
    """The indented block of NOTES that starts with ``first_line`` and runs to the next blank line."""
    match = re.search(rf"^( *){re.escape(first_line)}.*?(?=\n\s*\n|\Z)", notes, re.MULTILINE | re.DOTALL)
    assert match, f"NOTES has no block starting with {first_line!r}"
    return textwrap.dedent(match.group(0))


def _assert_rerank_request(recorded: Recorded) -> None:
    assert len(recorded.requests) == 1
    request = recorded.requests[0]
    assert request["path"] == "/v2/rerank"
    assert request["authorization"] == f"Bearer {API_KEY}"
    assert request["body"]["model"] == "qwen3-reranker-4b"
    assert request["body"]["top_n"] == 2
    assert len(request["body"]["documents"]) == 3


@pytest.fixture(scope="module")
def default_notes(tmp_path_factory: pytest.TempPathFactory) -> str:
    return render_notes(workdir=tmp_path_factory.mktemp("notes"))


def test_notes_say_how_to_reach_the_service_and_find_the_key(default_notes: str) -> None:
    assert f"kubectl -n {NAMESPACE} port-forward service/{FULLNAME} 8000:8000" in default_notes
    assert f"http://{FULLNAME}.{NAMESPACE}.svc:8000" in default_notes
    assert f"kubectl -n {NAMESPACE} rollout status deployment/{FULLNAME} --timeout=1800s" in default_notes
    assert f"helm test {RELEASE} -n {NAMESPACE}" in default_notes
    assert (
        f"kubectl -n {NAMESPACE} get secret {FULLNAME}-generated-key -o jsonpath='{{.data.key}}' | base64 -d"
        in default_notes
    )
    assert "counted in this pod's memory" in default_notes


def _run_as_printed(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run a NOTES example with the key in the environment variable the notes tell users to set."""
    return subprocess.run(
        argv,
        env={**os.environ, "RERANK_API_KEY": API_KEY},
        capture_output=True,
        text=True,
        timeout=CALL_TIMEOUT_S,
        check=False,
    )


def test_notes_curl_call_works_as_printed(default_notes: str, stand_in: tuple[str, Recorded]) -> None:
    url, recorded = stand_in
    curl = shutil.which("curl")
    assert curl, "curl is needed to run the NOTES example (Debian package curl)"
    command = _block(default_notes, "curl -sS").replace("http://localhost:8000", url)
    result = _run_as_printed(["bash", "-c", command])
    assert result.returncode == 0, result.stderr
    _assert_rerank_request(recorded)


def test_notes_cohere_sdk_call_works_as_printed(default_notes: str, stand_in: tuple[str, Recorded]) -> None:
    url, recorded = stand_in
    snippet = _block(default_notes, "import os, cohere").replace("http://localhost:8000", url)
    result = _run_as_printed([sys.executable, "-c", snippet])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[(0, 1.0), (1, 0.5)]"
    _assert_rerank_request(recorded)


def test_notes_with_ingress_and_given_keys(tmp_path: Path) -> None:
    """With an Ingress the calls go to its host (https with TLS); given keys are not printed."""
    notes = render_notes(["full.yaml"], workdir=tmp_path)
    assert 'base_url="https://rerank.example.com"' in notes
    assert "curl -sS https://rerank.example.com/v2/rerank" in notes
    assert f"port-forward service/{FULLNAME} " not in notes, "the API is reached through the Ingress"
    assert "generated-key" not in notes
    assert "sha256:" not in notes
    assert "scraped by ServiceMonitor rr-reranker" in notes
    assert "to the metrics port 9400 from networkPolicy.metricsFrom" in notes
    assert 'Grafana dashboard "Reranker": ConfigMap rr-reranker-dashboard in namespace monitoring' in notes
    assert "/apis/custom.metrics.k8s.io/v1beta1/namespaces/search/pods/*/vllm_num_requests_waiting" in notes


def test_notes_say_where_the_metrics_are_and_who_may_scrape_them(default_notes: str) -> None:
    """Metrics on their own port and Service; an open metrics port is called out (per-key usage)."""
    assert f"kubectl -n {NAMESPACE} port-forward service/{FULLNAME}-metrics 9090:9090" in default_notes
    assert "to the metrics port 9090 from anywhere (restrict it to Prometheus" in default_notes
    assert "ServiceMonitor" not in default_notes


def test_notes_without_metrics_mention_no_metrics(tmp_path: Path) -> None:
    notes = render_notes(sets={"metrics.enabled": "false"}, workdir=tmp_path)
    assert "metrics" not in notes.lower()


@pytest.mark.parametrize(
    ("sets", "model"),
    [
        ({"model.size": "0.6b"}, "qwen3-reranker-0.6b"),
        ({"model.size": "", "model.servedModelName": "search-reranker"}, "search-reranker"),
        ({"model.size": ""}, "rerank-v3.5"),  # named by the snapshot at start: the notes use an alias
    ],
)
def test_notes_call_the_model_by_a_name_it_answers_to(
    sets: dict[str, str], model: str, tmp_path: Path
) -> None:
    notes = render_notes(sets=sets, workdir=tmp_path)
    assert f'"model": "{model}"' in notes
    assert f'model="{model}"' in notes
