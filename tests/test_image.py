"""The image a shop runs, built and run for real: the CPU flavour from `scripts/image.sh build cpu`, started
with podman as a shop starts it (read-only root, tmpfs /tmp, the keys file mounted read-only, published
ports) as uid 10001 and as an arbitrary uid. What the entrypoint does with real vLLM is proven here, in the
image, rather than from the checkout: the SDKs, /metrics, the SIGTERM drain under load, a dead vLLM.

Two containers load vLLM at once (each cold start is 60-120 s on two cores); the drain test ends the first.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cohere
import httpx
import pytest
from scipy.stats import kendalltau

from gateway import keys as keylib
from model_setup.prompt import PRODUCT_SEARCH_INSTRUCTION
from tests.support.containerfile import CONTAINERFILE, env_of, parse
from tests.support.containers import PODMAN_ENV, Container, podman, run_container
from tests.support.procs import ROOT
from tests.support.reference import CardReranker
from tests.support.stack import Keys

ARBITRARY_USER = "54321:54321"  # no passwd entry, no group 0: nothing in the image is owned by it
QUANTISED_DIR = "/models/quantised"  # the quantised tiny model, mounted as a shop mounts a snapshot volume
QUERY = "wireless noise cancelling headphones"
DOCS = [
    "Sony WH-1000XM5 Wireless Noise Canceling Over-Ear Headphones, black",
    "Stainless steel chef's knife, 8 inch",
    "Bose QuietComfort 45 Bluetooth headphones",
    "USB-C charging cable, 2 m",
]
# The client subpackages need their extras (gradio, ranx), which the image does not install.
CLIENT_PACKAGES = ("gateway.demo", "gateway.eval")


@pytest.fixture(scope="module")
def keys(artifacts: Path) -> Keys:
    """This module's keys file, readable by any uid (the containers run as 10001 and 54321)."""
    raw: dict[str, str] = {}
    lines = []
    for key_id in ("shop-a", "shop-b"):
        raw[key_id], line = keylib.generate(key_id)
        lines.append(line)
    file = artifacts / "image-keys"
    file.write_text("\n".join(lines) + "\n")
    file.chmod(0o644)
    return Keys(raw, file)


def inspect(image: str) -> dict[str, object]:
    (config,) = json.loads(podman("image", "inspect", image).stdout)
    result: dict[str, object] = config["Config"]
    return result


def run_python(image: str, script: str, *args: str) -> str:
    return podman(
        "run", "--rm", "--read-only", "--user", "10001:0", "--entrypoint", "/opt/venv/bin/python", image,
        "-c", script, *args,
    ).stdout  # fmt: skip


def test_the_image_keeps_the_gpu_contract_but_where_the_flavour_says(image: str) -> None:
    """Environment, user, entrypoint, ports and stop signal are the Containerfile's for the GPU flavour,
    except RERANK_DEVICE (FLAVOUR=cpu) and what the base and model arguments name."""
    containerfile = parse(CONTAINERFILE)
    runtime = containerfile.final
    config = inspect(image)
    env = dict(item.split("=", 1) for item in config["Env"])  # type: ignore[attr-defined]
    declared = {k: containerfile.resolve(v, runtime) for k, v in env_of(runtime).items()}
    differs = {k for k, v in declared.items() if k != "PATH" and env.get(k) != v}
    assert differs == {"RERANK_DEVICE"}, {k: (declared[k], env.get(k)) for k in differs}
    assert (declared["RERANK_DEVICE"], env["RERANK_DEVICE"]) == ("cuda", "cpu")
    assert env["PATH"].startswith("/opt/venv/bin:")
    assert "SSL_CERT_FILE" not in env, "the build stages' CA reached the runtime image"
    assert config["User"] == runtime.all("USER")[-1].args == "10001:0"
    assert config["Entrypoint"] == json.loads(runtime.all("ENTRYPOINT")[0].args)
    assert sorted(config["ExposedPorts"]) == ["8000/tcp", "9090/tcp"]  # type: ignore[call-overload]
    assert config["WorkingDir"] == "/app"
    assert config["StopSignal"] == "SIGTERM"
    labels: dict[str, str] = config["Labels"]  # type: ignore[assignment]
    assert labels["org.opencontainers.image.base.name"] == "docker.io/library/debian:bookworm-slim"
    assert labels["io.product-rerank.model.repo"] == "file:///ci/hub/qwen3-reranker-tiny"
    assert labels["io.product-rerank.model.source"] == "huggingface"


def test_the_image_imports_every_server_module_from_the_installed_wheel(image: str) -> None:
    """Every module of gateway and model_setup the source tree has (but the clients' subpackages) imports
    inside the image, from the venv's site-packages, in a process started outside any source tree."""
    expected = sorted(
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for package in ("gateway", "model_setup")
        for path in (ROOT / package).rglob("*.py")
    )
    expected = [name for name in expected if not name.startswith(CLIENT_PACKAGES)]
    script = (
        "import importlib, importlib.metadata as md, json, os, pkgutil, sys\n"
        "import gateway, model_setup\n"
        "names = sorted({m.name for p in (gateway, model_setup)\n"
        "    for m in pkgutil.walk_packages(p.__path__, p.__name__ + '.')} | {'gateway', 'model_setup'})\n"
        "names = [n for n in names if not n.startswith(tuple(sys.argv[1:]))]\n"
        "files = {n: importlib.import_module(n).__file__ for n in names}\n"
        "dist = md.distribution('product-rerank')\n"
        "print(json.dumps({'files': files, 'cwd': os.getcwd(), 'src': os.path.exists('/src'),\n"
        "    'direct_url': dist.read_text('direct_url.json')}))\n"
    )
    shipped = json.loads(run_python(image, script, *CLIENT_PACKAGES).strip().splitlines()[-1])
    assert sorted(shipped["files"]) == expected
    site = "/opt/venv/lib/python3.11/site-packages/"
    assert {n: f for n, f in shipped["files"].items() if not f.startswith(site)} == {}
    assert shipped["src"] is False, "a source tree in the image could stand in for the wheel"
    assert shipped["direct_url"] is None or '"editable": true' not in shipped["direct_url"]


def test_the_build_stages_ca_never_reaches_the_runtime_image(image: str) -> None:
    assert (
        podman(
            "run", "--rm", "--entrypoint", "test", image, "-e", "/etc/ssl/build-ca.pem", check=False
        ).returncode
        == 1
    )


@dataclass
class Pair:
    as_10001: Container
    arbitrary: Container


@pytest.fixture(scope="module")
def containers(image: str, keys: Keys, quantised_model_dir: Path) -> Iterator[Pair]:
    """Both containers load vLLM at once: one cold start's wall time for two. The arbitrary uid's serves
    the tiny model's INT8 W8A8 copy from a read-only volume, in float32 like the reference it is held to."""
    pair = Pair(
        run_container(image, keys_file=keys.file),
        run_container(
            image,
            keys_file=keys.file,
            user=ARBITRARY_USER,
            env={"RERANK_MODEL_DIR": QUANTISED_DIR, "RERANK_DTYPE": "float32"},
            options=["--volume", f"{quantised_model_dir}:{QUANTISED_DIR}:ro"],
        ),
    )
    try:
        for container in (pair.as_10001, pair.arbitrary):
            try:
                container.wait_ready()
            except Exception as exc:
                pytest.fail(str(exc))
        yield pair
    finally:
        pair.as_10001.remove()
        pair.arbitrary.remove()


def test_as_uid_10001_on_a_read_only_root(containers: Pair) -> None:
    container = containers.as_10001
    assert container.exec("id", "-u").strip() == "10001"
    denied = podman("exec", container.name, "sh", "-c", "echo x > /app/probe", check=False)
    assert denied.returncode != 0
    assert "Read-only file system" in denied.stderr
    assert httpx.get(f"{container.url}/ready", timeout=5).status_code == 200


def test_the_cohere_sdk_v1_and_v2_rerank_through_the_image(containers: Pair, keys: Keys) -> None:
    url = containers.as_10001.url
    with cohere.ClientV2(api_key=keys["shop-a"], base_url=url, max_retries=0) as v2:
        ranked = v2.rerank(model="rerank-v3.5", query=QUERY, documents=DOCS, top_n=3)
    with cohere.Client(api_key=keys["shop-a"], base_url=url, max_retries=0) as v1:
        ranked_v1 = v1.rerank(model="rerank-v3.5", query=QUERY, documents=DOCS, top_n=3)
    for response in (ranked, ranked_v1):
        scores = [result.relevance_score for result in response.results]
        assert len(scores) == 3
        assert scores == sorted(scores, reverse=True)
        assert all(0.0 <= score <= 1.0 for score in scores)
    assert [r.index for r in ranked.results] == [r.index for r in ranked_v1.results]


def test_the_image_serves_its_model_under_the_model_s_own_name(containers: Pair, keys: Keys) -> None:
    """RERANK_SERVED_MODEL_NAME unset: the entrypoint names the model after its snapshot (the tiny model's
    local hub, file:///ci/hub/qwen3-reranker-tiny). The gateway lists that name and passes it on to vLLM,
    which answers only to its --served-model-name: a rerank by that name succeeds only if the two agree."""
    url = containers.as_10001.url
    headers = {"authorization": f"Bearer {keys['shop-a']}"}
    listed = httpx.get(f"{url}/v1/models", headers=headers, timeout=10)
    assert listed.status_code == 200, listed.text
    assert next(card["id"] for card in listed.json()["data"]) == "qwen3-reranker-tiny"
    with cohere.ClientV2(api_key=keys["shop-a"], base_url=url, max_retries=0) as client:
        response = client.rerank(model="qwen3-reranker-tiny", query=QUERY, documents=DOCS)
    assert len(response.results) == len(DOCS)


def test_metrics_on_the_metrics_port(containers: Pair, keys: Keys) -> None:
    container = containers.as_10001
    headers = {"authorization": f"Bearer {keys['shop-b']}"}
    body = {"model": "rerank-v3.5", "query": QUERY, "documents": DOCS}
    assert httpx.post(f"{container.url}/v2/rerank", json=body, headers=headers, timeout=60).status_code == 200
    deadline = time.monotonic() + 10  # the workers' metrics are flushed once a second
    labels = 'key_id="shop-b",model="qwen3-reranker-tiny",route="/v2/rerank",status="200"'
    pattern = re.compile(rf"rerank_requests_total\{{{labels}\}} [1-9]")
    text = ""
    while time.monotonic() < deadline and not pattern.search(text):
        response = httpx.get(f"{container.metrics_url}/metrics", timeout=5)
        assert response.status_code == 200
        text = response.text
        time.sleep(0.5)
    assert pattern.search(text), text[-2000:]
    assert httpx.get(f"{container.url}/metrics", timeout=5).status_code in (401, 404)  # not on the API port


def test_an_arbitrary_uid_serves(containers: Pair, keys: Keys) -> None:
    container = containers.arbitrary
    assert container.exec("id", "-u").strip() == ARBITRARY_USER.split(":", maxsplit=1)[0]
    with cohere.ClientV2(api_key=keys["shop-b"], base_url=container.url, max_retries=0) as client:
        response = client.rerank(model="rerank-v3.5", query=QUERY, documents=DOCS)
    assert len(response.results) == len(DOCS)


# INT8 W8A8 against the float32 model on the searches below (random weights drawn wide, so a harsher test
# than a trained model's) measured max |score difference| 0.060, mean 0.018, worst Kendall's tau 1.00
# (docs/sizing.md, "Quantised checkpoints"). The bounds leave room for other CPUs' kernels.
QUANTISED_BOUND = {"max_abs": 0.10, "mean_abs": 0.04, "min_tau": 0.75}
SEARCHES = {
    QUERY: DOCS,
    "trail running shoes": [
        "Salomon Speedcross 6 trail running shoes, men's",
        "Cast iron skillet, 26 cm",
        "Hoka Speedgoat 5 trail shoes",
        "Running socks, 3 pairs",
        "Garmin Forerunner 265 GPS watch",
        "Road running shoes, Nike Pegasus 40",
        "Hiking backpack 30 l",
        "Waterproof trail running jacket",
    ],
    "green tea": [
        "Organic green tea, 100 bags",
        "Black tea, English breakfast",
        "Ceramic teapot with infuser",
        "Matcha powder, ceremonial grade",
        "Coffee beans, dark roast, 1 kg",
        "Jasmine green tea, loose leaf",
    ],
}


def test_a_quantised_checkpoint_serves_within_its_bound_of_the_float32_model(
    containers: Pair, keys: Keys, card: CardReranker, artifacts: Path
) -> None:
    """The image serves a checkpoint that declares its own quantisation as it declares it (vLLM loads
    compressed-tensors' INT8 W8A8, lm_head kept), says so in /v1/models and rerank_build_info, and ranks
    within QUANTISED_BOUND of the float32 weights (the model card's recipe), through the Cohere SDK."""
    container = containers.arbitrary
    assert "quantization=compressed-tensors" in container.logs()  # vLLM's engine configuration line
    headers = {"authorization": f"Bearer {keys['shop-a']}"}
    (card_entry, *_) = httpx.get(f"{container.url}/v1/models", headers=headers, timeout=10).json()["data"]
    assert card_entry == {
        "id": "qwen3-reranker-tiny-w8a8",
        "object": "model",
        "owned_by": "product-rerank",
        "root": "qwen3-reranker-tiny-w8a8",
        "dtype": "float32",
        "quantization": "compressed-tensors W8A8 int (lm_head kept)",
        "cascade": None,
    }
    metrics = httpx.get(f"{container.metrics_url}/metrics", timeout=5).text
    assert 'dtype="float32"' in metrics
    assert 'quantization="compressed-tensors W8A8 int (lm_head kept)"' in metrics

    differences, taus = [], []
    with cohere.ClientV2(api_key=keys["shop-a"], base_url=container.url, max_retries=0) as client:
        for query, documents in SEARCHES.items():
            ranked = client.rerank(model="rerank-v3.5", query=query, documents=documents)
            served = [0.0] * len(documents)
            for result in ranked.results:
                served[result.index] = result.relevance_score
            reference = card.scores(PRODUCT_SEARCH_INSTRUCTION, query, documents)
            differences += [abs(a - b) for a, b in zip(served, reference, strict=True)]
            taus.append(kendalltau(served, reference).statistic)
    measured = {
        "max_abs": max(differences),
        "mean_abs": sum(differences) / len(differences),
        "min_tau": min(taus),
    }
    (artifacts / "quantised-vs-float32.json").write_text(json.dumps(measured))  # docs/sizing.md quotes it
    assert measured["max_abs"] > 1e-4  # quantised for real: float32 vLLM matches the card within 1e-6
    assert measured["max_abs"] <= QUANTISED_BOUND["max_abs"], measured
    assert measured["mean_abs"] <= QUANTISED_BOUND["mean_abs"], measured
    assert measured["min_tau"] >= QUANTISED_BOUND["min_tau"], measured


def started_pid(container: Container, child: str) -> str:
    started = re.search(rf'"event":"{child}_started","message":"pid (\d+)"', container.logs())
    assert started, container.logs()[-3000:]
    return started[1]


def test_killing_the_only_gateway_worker_inside_leaves_the_entrypoint_running(
    containers: Pair, keys: Keys
) -> None:
    """The OOM killer takes the one worker: the gateway's master replaces it, the entrypoint (which exits 70
    when a child it started dies) sees nothing, and the container serves again without reloading vLLM."""
    container = containers.arbitrary
    master = started_pid(container, "gateway")
    (worker,) = (
        pid
        for pid in container.exec("cat", f"/proc/{master}/task/{master}/children").split()
        if " worker-1" in container.exec("cat", f"/proc/{pid}/cmdline").replace("\0", " ")
    )
    container.exec("sh", "-c", f"kill -KILL {worker}")

    def count(event: str) -> int:  # the gateway's JSON has a space after the colon, the entrypoint's none
        return len(re.findall(rf'"event": ?"{event}"', container.logs()))

    deadline = time.monotonic() + 90  # the new worker imports the app and loads the tokenizer
    while count("Started worker-1") < 2 and time.monotonic() < deadline:
        assert container.running(), container.logs()[-3000:]
        time.sleep(0.5)
    assert count("worker_exited") == 1, container.logs()[-3000:]
    assert count("Started worker-1") == 2, container.logs()[-3000:]
    with cohere.ClientV2(api_key=keys["shop-b"], base_url=container.url, max_retries=0) as client:
        assert len(client.rerank(model="rerank-v3.5", query=QUERY, documents=DOCS).results) == len(DOCS)
    assert httpx.get(f"{container.url}/ready", timeout=5).json()["workers"] == {"configured": 1, "alive": 1}
    assert container.running()
    assert count("vllm_started") == 1


def test_killing_vllm_inside_exits_70(containers: Pair) -> None:
    container = containers.arbitrary
    started = re.search(r'"event":"vllm_started","message":"pid (\d+)"', container.logs())
    assert started, container.logs()[-3000:]
    assert "vllm.entrypoints" in container.exec("cat", f"/proc/{started[1]}/cmdline")
    killed = time.monotonic()
    container.exec("sh", "-c", f"kill -KILL {started[1]}")  # the shell's kill: the image has no procps
    assert container.wait(timeout=30) == 70
    assert time.monotonic() - killed < 15
    assert "vllm exited with status 137" in container.logs()


def slow_body(salt: int, documents: int = 150) -> dict[str, object]:
    """Enough text for the tiny model to take a fraction of a second; a new ``salt`` defeats the prefix
    cache. Three of them in flight stay under the gateway's bound on pairs at vLLM (512): none is shed."""
    words = [f"product{i} brand{(i + salt) % 97} size{i % 13} colour{salt}" for i in range(documents)]
    return {"model": "rerank-v3.5", "query": f"{QUERY} {salt}", "documents": [w * 20 for w in words]}


def test_sigterm_during_load_finishes_every_accepted_request_and_exits_0(
    containers: Pair, keys: Keys
) -> None:
    """`podman stop` while three clients keep requests in flight: every request the gateway accepted gets
    its full 200; the rest are refused at connect; the container exits 0."""
    container = containers.as_10001
    headers = {"authorization": f"Bearer {keys['shop-a']}"}
    outcomes: list[tuple[str, float, float]] = []  # (outcome, sent, finished)
    stop = threading.Event()
    salts = iter(range(1, 10_000))
    lock = threading.Lock()

    def client() -> None:
        while not stop.is_set():
            with lock:
                salt = next(salts)
            sent = time.monotonic()
            try:
                with httpx.Client(timeout=60) as http:  # a connection per request: "accepted" is clear
                    response = http.post(f"{container.url}/v2/rerank", json=slow_body(salt), headers=headers)
                answer = response.json()
                outcome = f"{response.status_code}:{len(answer.get('results', [])) or answer.get('message')}"
            except httpx.ConnectError:
                outcome = "refused"
                stop.set()
            except httpx.HTTPError as exc:
                outcome = f"broken:{type(exc).__name__}"
            outcomes.append((outcome, sent, time.monotonic()))

    threads = [threading.Thread(target=client) for _ in range(3)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    while len([o for o in outcomes if o[0].startswith("200")]) < 4 and time.monotonic() < deadline:
        time.sleep(0.2)
    signalled = time.monotonic()
    stopping = subprocess.Popen(
        ["podman", "stop", "--time", "30", container.name], env={**PODMAN_ENV}, stdout=subprocess.DEVNULL
    )
    stopping.wait(60)
    stop.set()
    for thread in threads:
        thread.join(60)
    assert container.wait(timeout=10) == 0, container.logs()[-3000:]
    assert time.monotonic() - signalled < 30
    kinds = {outcome for outcome, _, _ in outcomes}
    assert kinds <= {"200:150", "refused"}, outcomes
    in_flight = [o for o in outcomes if o[0] == "200:150" and o[1] < signalled < o[2]]
    assert in_flight, "no request was in flight when SIGTERM came"
    assert '"event":"shutdown"' in container.logs()


def test_a_wrong_keys_file_exits_64_with_its_one_line(image: str, tmp_path: Path) -> None:
    bad = tmp_path / "keys"
    bad.write_text("shop-a not-a-digest\n")
    bad.chmod(0o644)
    container = run_container(image, keys_file=bad)
    try:
        assert container.wait(timeout=120) == 64
        errors = [line for line in container.logs().splitlines() if '"level":"error"' in line]
        assert len(errors) == 1, container.logs()
        assert '"event":"config_error"' in errors[0]
        assert "line 1" in errors[0]
        assert "not-a-digest" not in container.logs()  # the line may hold a raw key: never echoed
        assert "vllm_started" not in container.logs()
    finally:
        container.remove()
