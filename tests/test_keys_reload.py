"""Keys rotate without a restart: under a running gateway the keys file (laid out like a Kubernetes Secret
volume, replaced by a symlink swap) gains a key, loses one, and breaks; new keys work and revoked ones stop
within a few seconds, a broken file keeps the old keys with one error line, and a request in flight when its
key is revoked still gets its answer."""

from __future__ import annotations

import concurrent.futures
import itertools
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway import keys as keylib
from tests.support.fake_vllm import FakeVllm, fake_vllm
from tests.support.procs import Service
from tests.support.stack import GatewayStarter, Keys

RELOAD_S = 0.5
WITHIN_S = 5.0  # "within a few seconds": the reload interval plus generous slack for a busy machine
_versions = itertools.count()


class SecretVolume:
    """kubelet's layout: keys -> ..data/keys, ..data -> ..<version>/; an update swaps ..data atomically."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.file = root / "keys"

    def write(self, text: str) -> None:
        version = self.root / f"..v{next(_versions)}"
        version.mkdir()
        (version / "keys").write_text(text)
        staging = self.root / "..data_tmp"
        staging.symlink_to(version.name)
        os.replace(staging, self.root / "..data")
        if not self.file.is_symlink():
            self.file.symlink_to("..data/keys")


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeVllm]:
    with fake_vllm() as server:
        yield server


@pytest.fixture(scope="module")
def rotation(
    upstream: FakeVllm, start_module_gateway: GatewayStarter, tmp_path_factory: pytest.TempPathFactory
) -> tuple[SecretVolume, dict[str, tuple[str, str]], Service, str]:
    """The volume, keys by id (raw key, keys-file line) and a gateway reading the volume's file."""
    volume = SecretVolume(tmp_path_factory.mktemp("secret-volume"))
    made = {key_id: keylib.generate(key_id) for key_id in ("shop-old", "shop-new", "shop-slow")}
    volume.write(f"{made['shop-old'][1]}\n{made['shop-slow'][1]}\n")
    gateway = start_module_gateway(
        "keys-reload",
        upstream.url,
        keys=Keys({}, volume.file),
        RERANK_API_KEYS_RELOAD_S=str(RELOAD_S),
        RERANK_UPSTREAM_TIMEOUT_S="30",
    )
    return volume, made, gateway.service, gateway.url


def status(url: str, raw: str) -> int:
    body = {"query": "shoes", "documents": ["Nike Pegasus", "cast iron pan"]}
    response = httpx.post(
        f"{url}/v1/rerank", json=body, headers={"Authorization": f"Bearer {raw}"}, timeout=30
    )
    return response.status_code


def scrape(service: Service) -> str:
    return httpx.get(f"http://127.0.0.1:{service.env['RERANK_METRICS_PORT']}/metrics", timeout=10).text


def eventually(url: str, raw: str, expected: int) -> float:
    """Seconds until a request with ``raw`` gets ``expected``; fails after WITHIN_S."""
    started = time.monotonic()
    while time.monotonic() - started < WITHIN_S:
        if status(url, raw) == expected:
            return time.monotonic() - started
        time.sleep(0.1)
    pytest.fail(f"no {expected} within {WITHIN_S} s")


def test_add_revoke_and_corrupt_under_a_running_gateway(
    rotation: tuple[SecretVolume, dict[str, tuple[str, str]], Service, str], upstream: FakeVllm
) -> None:
    volume, made, service, url = rotation
    old, new, slow = (made[key_id] for key_id in ("shop-old", "shop-new", "shop-slow"))
    assert status(url, old[0]) == 200
    assert status(url, new[0]) == 401

    # Add a key: it works within seconds, and the old one still does.
    volume.write(f"{old[1]}\n{slow[1]}\n{new[1]}\n")
    eventually(url, new[0], 200)
    assert status(url, old[0]) == 200

    # Revoke a key while one of its requests is in flight: new requests are refused, that one is answered.
    upstream.slow_seconds, upstream.mode = 3.0, "slow"
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            in_flight = pool.submit(status, url, slow[0])
            time.sleep(0.5)  # the request is admitted and waiting on vLLM
            volume.write(f"{old[1]}\n{new[1]}\n")
            upstream.mode = "ok"  # later requests need no waiting; the slow one keeps its timer
            eventually(url, slow[0], 401)
            assert in_flight.result(timeout=30) == 200, "a request admitted before the revocation completes"
    finally:
        upstream.mode = "ok"

    # Corrupt the file: the keys in force stay, one error line says so, without the file's content.
    leaked = keylib.generate("not-a-line")[0]
    logged_before = len(service.log_text())  # the log file is appended to across runs
    volume.write(f"{old[1]}\n{leaked} this is not a keys line\n")
    time.sleep(6 * RELOAD_S)  # several checks, and no request to trigger one: still one line
    errors = [
        line for line in service.log_text()[logged_before:].splitlines() if "api_keys_reload_failed" in line
    ]
    assert len(errors) == 1, errors
    assert status(url, old[0]) == 200
    assert status(url, new[0]) == 200
    assert "line 2" in errors[0]
    assert leaked not in service.log_text()
    # Counted as well, once the worker has written its totals (each second).
    reloads = 'rerank_api_keys_reloads_total{result="error"} 1.0'
    started = time.monotonic()
    while reloads not in (metrics := scrape(service)):
        assert time.monotonic() - started < WITHIN_S, metrics
        time.sleep(0.2)

    # Fixed again: the next good version is in force (here: new revoked too).
    volume.write(f"{old[1]}\n")
    eventually(url, new[0], 401)
    assert status(url, old[0]) == 200
