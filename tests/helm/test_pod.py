"""The chart's pod, for real: `helm template` with the CI values (CPU flavour, the image scripts/image.sh
built) and the rendered Deployment run by `podman kube play`. What the chart declares is checked inside the
running pod: the environment reaches the gateway and vLLM, the security context holds, the keys Secret is a
read-only file where RERANK_API_KEYS_FILE points, the emptyDirs are the writable places, and the probes'
paths and ports answer. Probes are polled from the host: podman runs its health checks from systemd timers.

What kube play cannot show (GPU requests, NetworkPolicy, HPA, PDB, Services, hooks) is listed in docs/helm.md
with the static check that covers each instead."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import cohere
import httpx
import pytest

from gateway import keys as keylib
from tests.helm.chart import Manifests, render
from tests.helm.kubeplay import Pod, env_of, play, secret_files, tear_down
from tests.support.containers import READY_BUDGET_S, podman
from tests.support.procs import free_port

KEY_ID = "shop-pod"
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")


@pytest.fixture(scope="module")
def raw_key() -> tuple[str, str]:
    raw, line = keylib.generate(KEY_ID)
    return raw, line


@pytest.fixture(scope="module")
def manifests(image: str, raw_key: tuple[str, str]) -> Manifests:
    """The CI values (helm/ci/cpu.yaml) with the built image and the keys as chart values (a Secret the chart
    renders); pullPolicy Never because there is no registry, only the local image."""
    repository, tag = image.rsplit(":", 1)
    return render(
        ("cpu.yaml",),
        {
            "image.repository": repository, "image.tag": tag, "image.pullPolicy": "Never",
            "apiKeys.existingSecret": "", "apiKeys.lines[0]": raw_key[1],
        },
    )  # fmt: skip


@pytest.fixture(scope="module")
def pod(manifests: Manifests, tmp_path_factory: pytest.TempPathFactory, artifacts: Path) -> Iterator[Pod]:
    ports = manifests.one("Deployment")["spec"]["template"]["spec"]["containers"][0]["ports"]
    played = play(manifests, {port["name"]: free_port() for port in ports}, tmp_path_factory.mktemp("pod"))
    try:
        startup = played.reranker["startupProbe"]
        budget = min(READY_BUDGET_S, startup["periodSeconds"] * startup["failureThreshold"])
        url = played.url(startup["httpGet"]["port"]) + startup["httpGet"]["path"]
        deadline = time.monotonic() + budget
        while True:
            try:
                if httpx.get(url, timeout=startup["timeoutSeconds"]).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if played.restarts() or time.monotonic() > deadline:
                log = artifacts / "pod.log"
                log.write_text(played.logs())
                pytest.fail(
                    f"the container restarted {played.restarts()} times or the startup probe failed for "
                    f"{budget:.0f}s; its log: {log}\n{played.logs()[-4000:]}"
                )
            time.sleep(1)
        yield played
    finally:
        tear_down(played, manifests)


def processes(pod: Pod) -> list[str]:
    """Every command line in the container (the image has no ps)."""
    script = 'for f in /proc/[0-9]*/cmdline; do tr "\\0" " " < "$f" 2>/dev/null; echo; done'
    return [line.strip() for line in pod.exec("sh", "-c", script).splitlines() if line.strip()]


def proc_status(pod: Pod) -> dict[str, str]:
    lines = pod.exec("cat", "/proc/1/status").splitlines()
    return {name: value.strip() for name, _, value in (line.partition(":") for line in lines)}


def mounts(pod: Pod) -> dict[str, tuple[str, set[str]]]:
    """Mount point -> (filesystem type, options), as the container sees them."""
    table = {}
    for line in pod.exec("cat", "/proc/mounts").splitlines():
        _, point, fstype, options, *_ = line.split()
        table[point] = (fstype, set(options.split(",")))
    return table


# helm/ci/cpu.yaml declares no size and no name: the entrypoint names the CPU image's tiny model after its
# snapshot, and vLLM, the gateway and /v1/models use that name.
SNAPSHOT_NAME = "qwen3-reranker-tiny"


def test_the_pod_serves_a_rerank_through_the_cohere_sdk(pod: Pod, raw_key: tuple[str, str]) -> None:
    env = env_of(pod.reranker)
    assert "RERANK_SERVED_MODEL_NAME" not in env
    listed = httpx.get(
        f"{pod.url('http')}/v1/models", headers={"authorization": f"Bearer {raw_key[0]}"}, timeout=10
    )
    assert next(card["id"] for card in listed.json()["data"]) == SNAPSHOT_NAME
    with cohere.ClientV2(api_key=raw_key[0], base_url=pod.url("http"), timeout=60, max_retries=0) as client:
        for model in (SNAPSHOT_NAME, *env["RERANK_MODEL_ALIASES"].split(",")):
            documents = ["chef's knife", "Sony headphones"]
            result = client.rerank(model=model, query="wireless headphones", documents=documents, top_n=2)
            assert sorted(r.index for r in result.results) == [0, 1], model
    body = {"query": "q", "documents": ["d"]}
    unauthorized = httpx.post(f"{pod.url('http')}/v2/rerank", json=body, timeout=10)
    assert unauthorized.status_code == 401


def test_the_probes_answer_on_the_paths_and_ports_the_chart_declares(pod: Pod) -> None:
    declared_ports = {port["name"] for port in pod.reranker["ports"]}
    for probe_name in PROBES:
        probe = pod.reranker[probe_name]
        get = probe["httpGet"]
        assert get["port"] in declared_ports, probe_name
        answer = httpx.get(pod.url(get["port"]) + get["path"], timeout=probe["timeoutSeconds"])
        assert answer.status_code == 200, (probe_name, answer.text)
    metrics = httpx.get(f"{pod.url('metrics')}/metrics", timeout=10)
    assert metrics.status_code == 200
    assert "\nrerank_build_info{" in metrics.text


def test_every_env_the_chart_sets_reaches_the_container_and_is_read(pod: Pod) -> None:
    """The rendered env is the container's, and each RERANK_ name is one the shipped code reads: a renamed
    chart variable would be silently ignored by the gateway (its settings ignore unknown names)."""
    rendered = env_of(pod.reranker)
    environ = dict(
        item.split("=", 1) for item in pod.exec("cat", "/proc/1/environ").split("\0") if "=" in item
    )
    assert {name: environ.get(name) for name in rendered} == rendered
    unread = pod.exec(
        "/opt/venv/bin/python", "-I", "-c",
        "import inspect, re, sys, model_setup.serving as s; from gateway.settings import Settings\n"
        "known = {'RERANK_' + f.upper() for f in Settings.model_fields}\n"
        "text = open('/app/entrypoint.sh').read() + inspect.getsource(s)\n"
        "print(*(n for n in sys.argv[1:] if n not in known and not re.search(rf'\\b{n}\\b', text)))",
        *(name for name in rendered if name.startswith("RERANK_")),
    ).split()  # fmt: skip
    assert unread == []
    vllm = next(line for line in processes(pod) if "vllm.entrypoints.openai.api_server" in line)
    for flag, name in (("--dtype", "RERANK_DTYPE"), ("--max-model-len", "RERANK_MAX_MODEL_LEN")):
        assert f"{flag} {rendered[name]} " in f"{vllm} ", (flag, vllm)
    assert f"--served-model-name {SNAPSHOT_NAME} " in f"{vllm} ", vllm  # the entrypoint's, from the snapshot


def test_the_pod_runs_the_image_entrypoint_with_the_chart_limits(pod: Pod) -> None:
    """No command or args in the chart: the image's tini and entrypoint run; limits.memory is the cgroup's."""
    assert "command" not in pod.reranker
    assert "args" not in pod.reranker
    assert pod.exec("cat", "/proc/1/cmdline").split("\0")[:3] == ["/usr/bin/tini", "--", "/app/entrypoint.sh"]
    memory = podman("inspect", "--format", "{{.HostConfig.Memory}}", pod.container).stdout.strip()
    assert int(memory) == 12 * 2**30 == _bytes(pod.reranker["resources"]["limits"]["memory"])


def _bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    return int(quantity[:-2]) * units[quantity[-2:]] if quantity[-2:] in units else int(quantity)


def test_the_security_context_holds_inside_the_pod(pod: Pod) -> None:
    context = pod.reranker["securityContext"]
    assert pod.exec("id", "-u").strip() == str(context["runAsUser"])
    assert pod.exec("id", "-g").strip() == str(context["runAsGroup"])
    status = proc_status(pod)
    assert context["capabilities"]["drop"] == ["ALL"]
    assert {status[name] for name in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")} == {"0" * 16}
    assert context["allowPrivilegeEscalation"] is False
    assert status["NoNewPrivs"] == "1"
    assert context["seccompProfile"]["type"] == "RuntimeDefault"
    assert status["Seccomp"] == "2"
    assert context["readOnlyRootFilesystem"] is True
    assert "ro" in mounts(pod)["/"][1]
    refused = podman("exec", pod.container, "touch", "/app/written", check=False)
    assert refused.returncode != 0
    assert "Read-only file system" in refused.stderr


def test_the_keys_secret_is_a_read_only_file_where_the_env_points(
    pod: Pod, manifests: Manifests, raw_key: tuple[str, str]
) -> None:
    volume = next(v for v in pod.spec["volumes"] if v["name"] == "api-keys")["secret"]
    (item,) = volume["items"]
    mount = next(m for m in pod.reranker["volumeMounts"] if m["name"] == "api-keys")
    keys_file = env_of(pod.reranker)["RERANK_API_KEYS_FILE"]
    assert keys_file == f"{mount['mountPath']}/{item['path']}"
    assert pod.exec("cat", keys_file) == secret_files(manifests)[volume["secretName"]][item["key"]]
    assert "ro" in mounts(pod)[mount["mountPath"]][1]
    assert pod.exec("cat", keys_file).count(f"\n{raw_key[1]}\n") == 1
    assert raw_key[0] not in pod.exec("cat", "/proc/1/environ")  # a file, never the environment


def test_the_empty_dirs_are_the_writable_places(pod: Pod) -> None:
    empty_dirs = {v["name"]: v["emptyDir"] for v in pod.spec["volumes"] if "emptyDir" in v}
    table = mounts(pod)
    for mount in pod.reranker["volumeMounts"]:
        if mount["name"] not in empty_dirs:
            continue
        path = mount["mountPath"]
        assert "rw" in table[path][1], path
        pod.exec("sh", "-c", f'echo ok > "{path}/probe-write" && rm "{path}/probe-write"')
        if empty_dirs[mount["name"]].get("medium") == "Memory":
            assert table[path][0] == "tmpfs", path
    # The caches the chart points at the emptyDir are used there: vLLM's compile cache is written at start.
    cache = env_of(pod.reranker)["VLLM_CACHE_ROOT"]
    assert pod.exec("sh", "-c", f'find "{cache}" -type f | head -1').strip()


def test_the_pod_is_one_container_of_the_built_image(pod: Pod, image: str) -> None:
    listing = "{{range .Containers}}{{.Name}} {{end}}"
    names = podman("pod", "inspect", "--format", listing, pod.name).stdout.split()
    assert [n for n in names if not n.endswith("-infra")] == [pod.container]
    assert podman("inspect", "--format", "{{.ImageName}}", pod.container).stdout.strip() == image
    assert pod.reranker["image"] == image
