"""A fleet in the built image: one container, two local vLLMs (the image's own tiny model and another seed's,
mounted as a shop mounts a snapshot volume) and a cascade over them, from a fleet file mounted read-only.
Its own module, after tests/test_image.py's containers are gone: two more vLLM cold starts, one after the
other, on a 2-core machine."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cohere
import httpx
import pytest

from gateway import keys as keylib
from tests.support.containers import Container, run_container
from tests.support.stack import Keys
from tests.test_image import DOCS as IMAGE_DOCS
from tests.test_image import QUERY

SMALL, LARGE, CASCADE = "tiny-small", "tiny-large", "tiny-cascade"
TOP_K = 3
DOCS = [  # tests/test_image.py's, and more than TOP_K beyond them
    *IMAGE_DOCS,
    "Sennheiser Momentum 4 wireless headphones",
    "Ear plugs for sleeping, 20 pairs",
    "Apple AirPods Pro (2nd generation)",
    "Headphone stand, aluminium",
]
FLEET = f"""default = "{LARGE}"

[[models]]
name = "{SMALL}"
model_dir = "/models/second"

[[models]]
name = "{LARGE}"
aliases = ["large"]
model_dir = "/models/model"

[[cascades]]
name = "{CASCADE}"
first = "{SMALL}"
second = "{LARGE}"
top_k = {TOP_K}
"""


@pytest.fixture(scope="module")
def keys(artifacts: Path) -> Keys:
    raw, line = keylib.generate("shop-a")
    file = artifacts / "image-fleet-keys"
    file.write_text(line + "\n")
    file.chmod(0o644)
    return Keys({"shop-a": raw}, file)


@pytest.fixture(scope="module")
def container(image: str, keys: Keys, second_model_dir: Path, artifacts: Path) -> Iterator[Container]:
    second = second_model_dir
    fleet = artifacts / "image-fleet.toml"
    fleet.write_text(FLEET)
    fleet.chmod(0o644)
    served = run_container(
        image,
        keys_file=keys.file,
        env={"RERANK_FLEET_FILE": "/etc/rerank/fleet.toml", "RERANK_DTYPE": "float32"},
        options=["--volume", f"{second}:/models/second:ro", "--volume", f"{fleet}:/etc/rerank/fleet.toml:ro"],
    )
    try:
        try:
            served.wait_ready(budget=900)  # two cold starts, one after the other
        except Exception as exc:
            pytest.fail(str(exc))
        yield served
    finally:
        served.remove()


def ranked(container: Container, key: str, model: str, documents: list[str]) -> dict[str, Any]:
    response = httpx.post(
        f"{container.url}/v2/rerank",
        json={"model": model, "query": QUERY, "documents": documents},
        headers={"Authorization": f"Bearer {key}"},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def order(answer: dict[str, Any]) -> list[int]:
    return [result["index"] for result in answer["results"]]


def test_the_image_serves_a_fleet_and_its_cascade(container: Container, keys: Keys) -> None:
    key = keys["shop-a"]
    listed = httpx.get(f"{container.url}/v1/models", headers={"Authorization": f"Bearer {key}"}).json()
    assert {card["id"] for card in listed["data"]} >= {SMALL, LARGE, "large", CASCADE, "rerank-v3.5"}
    small = ranked(container, key, SMALL, DOCS)
    top = order(small)[:TOP_K]
    large = ranked(container, key, LARGE, [DOCS[i] for i in top])
    assert order(small) != order(ranked(container, key, LARGE, DOCS))  # two models, two orders
    with cohere.ClientV2(api_key=key, base_url=container.url, timeout=120, max_retries=0) as client:
        cascade = client.rerank(model=CASCADE, query=QUERY, documents=DOCS)
    got = [result.index for result in cascade.results]
    assert got[:TOP_K] == [top[i] for i in order(large)]
    assert got[TOP_K:] == order(small)[TOP_K:]
    scored_by = [(result.model_extra or {}).get("model") for result in cascade.results]
    assert scored_by == [LARGE] * TOP_K + [SMALL] * (len(DOCS) - TOP_K)
    assert cascade.meta is not None
    assert cascade.meta.tokens is not None
    by_model = ranked(container, key, CASCADE, DOCS)["meta"]["tokens"]["by_model"]
    assert set(by_model) == {SMALL, LARGE}
    assert cascade.meta.tokens.input_tokens == sum(by_model.values())


def test_one_vllm_of_the_fleet_dying_exits_70(container: Container) -> None:
    started = re.findall(r'"event":"vllm_started","message":"pid (\d+)"', container.logs())
    assert len(started) == 2, container.logs()[-3000:]
    small = started[0]  # started first: the file's first model
    assert f"--served-model-name {SMALL}" in container.exec("cat", f"/proc/{small}/cmdline").replace(
        "\0", " "
    )
    killed = time.monotonic()
    container.exec("sh", "-c", f"kill -KILL {small}")  # the shell's kill: the image has no procps
    assert container.wait(timeout=60) == 70
    assert time.monotonic() - killed < 30
    assert f"vLLM of {SMALL} exited with status 137" in container.logs()
