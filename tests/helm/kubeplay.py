"""The chart's pod under `podman kube play` (4.3.1): the rendered Deployment and its Secrets, run on this
machine as a kubelet would run them, with the few translations podman needs, each for a stated reason."""

from __future__ import annotations

import base64
import copy
import json
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.helm.chart import Doc, Manifests
from tests.support.containers import podman

CONTAINER = "reranker"  # the chart's container name


@dataclass(frozen=True)
class Pod:
    """A played pod: its container's podman name and the host port each named container port is on."""

    name: str
    container: str
    host_ports: Mapping[str, int]
    deployment: Doc
    tmpfs_mounts: tuple[Path, ...] = ()

    @property
    def spec(self) -> Doc:
        spec: Doc = self.deployment["spec"]["template"]["spec"]
        return spec

    @property
    def reranker(self) -> Doc:
        (container,) = (c for c in self.spec["containers"] if c["name"] == CONTAINER)
        result: Doc = container
        return result

    def url(self, port_name: str) -> str:
        return f"http://127.0.0.1:{self.host_ports[port_name]}"

    def exec(self, *command: str, check: bool = True) -> str:
        return podman("exec", self.container, *command, check=check).stdout

    def logs(self) -> str:
        result = podman("logs", self.container, check=False)
        return result.stdout + result.stderr

    def restarts(self) -> int:
        """How often podman restarted the container (the Deployment's restartPolicy is Always)."""
        result = podman("inspect", "--format", "{{.RestartCount}}", self.container, check=False)
        return int(result.stdout.strip() or 0)


def secret_files(manifests: Manifests) -> dict[str, dict[str, str]]:
    """Each rendered Secret's keys, decoded as a kubelet decodes them into the mounted files."""
    return {
        doc["metadata"]["name"]: {key: base64.b64decode(value).decode() for key, value in doc["data"].items()}
        for doc in manifests.of_kind("Secret")
        if not (doc["metadata"].get("annotations") or {}).get("helm.sh/hook")
    }


def playable(deployment: Doc, host_ports: Mapping[str, int], empty_dirs: Mapping[str, Path]) -> Doc:
    """The Deployment with each container port also bound on the host's loopback (hostIP + hostPort): the
    stand-in for the Service and a port-forward, so the probes can be polled from the host as declared; and
    each emptyDir a hostPath of a fresh directory made as the kubelet makes an emptyDir (`empty_dir`)."""
    doc = copy.deepcopy(deployment)
    spec = doc["spec"]["template"]["spec"]
    for container in spec["containers"]:
        for port in container.get("ports", []):
            port["hostPort"] = host_ports[port["name"]]
            port["hostIP"] = "127.0.0.1"
    for volume in spec.get("volumes", []):
        if "emptyDir" in volume:
            del volume["emptyDir"]
            volume["hostPath"] = {"path": str(empty_dirs[volume["name"]]), "type": "Directory"}
    return doc


def empty_dir(volume: Doc, root: Path) -> tuple[Path, bool]:
    """A directory for an emptyDir volume as the kubelet makes it: new for this pod, mode 0777 (any uid
    writes, as fsGroup would allow), and for `medium: Memory` a tmpfs of `sizeLimit`. podman 4.3.1 would make
    a named volume instead, which outlives the pod and takes the owner and mode of the image's directory
    (root 0755 for /dev/shm), so uid 10001 could not write /dev/shm. The path, and whether it is a tmpfs."""
    path = root / volume["name"]
    path.mkdir(parents=True)
    path.chmod(0o777)
    if volume["emptyDir"].get("medium") != "Memory":
        return path, False
    size = str(volume["emptyDir"].get("sizeLimit", "")).removesuffix("i").lower()  # 2Gi -> 2g
    options = "mode=1777" + (f",size={size}" if size else "")
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)
    return path, True


def play(manifests: Manifests, host_ports: Mapping[str, int], workdir: Path) -> Pod:
    """Store the Secrets, then `podman kube play` the Deployment.

    podman 4.3.1 mounts a kube Secret's `data` values still base64-encoded (podman#16625, fixed in 4.4), so
    the Secrets go in through `podman secret create` with the decoded values, which kube play then mounts as
    the Secret volume's files, byte for byte what Kubernetes would mount."""
    for name, files in secret_files(manifests).items():
        podman("secret", "rm", name, check=False)
        podman("secret", "create", name, "-", input=json.dumps({"data": files}))
    deployment = manifests.one("Deployment")
    dirs, tmpfs = {}, []
    for volume in deployment["spec"]["template"]["spec"].get("volumes", []):
        if "emptyDir" in volume:
            dirs[volume["name"]], is_tmpfs = empty_dir(volume, workdir / "empty-dirs")
            if is_tmpfs:
                tmpfs.append(dirs[volume["name"]])
    file = workdir / "kube-play.yaml"
    file.write_text(yaml.safe_dump(playable(deployment, host_ports, dirs), sort_keys=False))
    report = podman("kube", "play", str(file)).stdout
    pod_id = re.search(r"^Pod:\n([0-9a-f]{64})$", report, re.MULTILINE)
    assert pod_id, f"no pod in podman kube play's report:\n{report}"
    name = podman("pod", "inspect", "--format", "{{.Name}}", pod_id.group(1)).stdout.strip()
    return Pod(name, f"{name}-{CONTAINER}", host_ports, deployment, tuple(tmpfs))


def tear_down(pod: Pod, manifests: Manifests) -> None:
    podman("pod", "rm", "--force", "--time", "5", pod.name, check=False)
    for path in pod.tmpfs_mounts:
        subprocess.run(["umount", str(path)], check=False)
    for name in secret_files(manifests):
        podman("secret", "rm", name, check=False)


def env_of(container: Doc) -> dict[str, Any]:
    """A container's env as the chart renders it: literal values only (the CI values use no valueFrom)."""
    return {item["name"]: item["value"] for item in container.get("env", []) if "value" in item}
