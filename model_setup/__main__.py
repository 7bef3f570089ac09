"""``python -m model_setup``: fetch, verify or publish a snapshot, write the tiny test model, name the model a
snapshot serves, start vLLM, print the container's defaults."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from model_setup import defaults, fetch, fleet, localhub, naming
from model_setup.serving import VllmOptions, exec_vllm


def main(argv: list[str] | None = None) -> int:  # noqa: PLR0911  # one return per command
    parser = argparse.ArgumentParser(prog="model_setup", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    fetch.add_commands(sub)
    tiny = sub.add_parser("tiny", help="write the tiny random-weight Qwen3 test model (ranks randomly)")
    tiny.add_argument("dest", type=Path)
    tiny.add_argument("--seed", type=int, default=0, help="another seed, another model (a fleet's second)")
    tiny.add_argument("--layers", type=int, default=2, help="more: a costlier model (benchmarks)")
    tiny.add_argument("--hidden", type=int, default=64, help="wider (a multiple of 32): a costlier model")
    publish = sub.add_parser(
        "publish", help="lay a snapshot out as a local git-lfs repository (a local hub); prints the commit"
    )
    publish.add_argument("snapshot", type=Path)
    publish.add_argument("repo", type=Path)
    publish.add_argument("--branch", default="main")

    served = sub.add_parser(
        "served-name",
        help="print the name a snapshot is served under when RERANK_SERVED_MODEL_NAME is unset",
    )
    served.add_argument("model_dir", type=Path, nargs="?", default=None, help="default: RERANK_MODEL_DIR")
    served.add_argument(
        "--size",
        default=None,
        help=f"refuse a snapshot that is not this size's model ({', '.join(fetch.SIZES)})",
    )
    served.add_argument(
        "--repo", default=None, help="name a size, hub name or git URL instead of a snapshot (no directory)"
    )

    for name, text in (
        ("serve", "exec vLLM for the model in RERANK_MODEL_DIR (or --model-dir, or --fleet-model)"),
        ("args", "print the vLLM command serve would run"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--model-dir", type=Path, default=None)
        cmd.add_argument(
            "--fleet-model", default=None, help="a local model of the fleet in RERANK_FLEET_FILE, by name"
        )

    members = sub.add_parser(
        "fleet",
        help="check RERANK_FLEET_FILE and verify its local snapshots; print '<port>:<online quantisation>:"
        "<name>' per local model",
    )
    members.add_argument("--full", action="store_true", help="rehash every file of every local snapshot")

    sub.add_parser("defaults", help="print the RERANK_* defaults as shell assignments (for entrypoint.sh)")

    ns = parser.parse_args(argv)
    if ns.command == "defaults":
        print(defaults.shell(), end="")
        return 0
    if ns.command in ("fetch", "verify"):
        return fetch.run(ns)
    if ns.command == "tiny":
        from model_setup.tiny import write_tiny_model  # noqa: PLC0415  # pulls in torch

        print(write_tiny_model(ns.dest, seed=ns.seed, layers=ns.layers, hidden=ns.hidden))
        return 0
    if ns.command == "publish":
        return _publish(ns)
    if ns.command == "served-name":
        return _served_name(ns)
    if ns.command == "fleet":
        return _fleet(ns)
    try:
        options = _vllm_options(ns)
        options.precision()  # an impossible combination fails here, before vLLM loads anything
    except ValueError as exc:
        print(f"model_setup: {exc}", file=sys.stderr)
        return 2
    if ns.command == "args":
        print(shlex.join(options.command()))
        return 0
    exec_vllm(options)
    return 0  # not reached: exec replaced the process


def _vllm_options(ns: argparse.Namespace) -> VllmOptions:
    """One vLLM's options: the single model's, or a fleet member's (its settings over the environment's)."""
    if ns.fleet_model is None:
        return VllmOptions.from_env(os.environ, model_dir=ns.model_dir)
    local = {member.name: member for member in _fleet_file().local}
    if ns.fleet_model not in local:
        raise ValueError(f"{ns.fleet_model!r} is not a local model of the fleet ({', '.join(local)})")
    return VllmOptions.from_env(local[ns.fleet_model].vllm_env(os.environ))


def _fleet_file() -> fleet.Fleet:
    """The fleet in RERANK_FLEET_FILE, its defaults from the environment; ValueError when unset or wrong."""
    path = os.environ.get("RERANK_FLEET_FILE")
    if not path:
        raise ValueError("RERANK_FLEET_FILE is not set")
    return fleet.load(Path(path), os.environ)


def _fleet(ns: argparse.Namespace) -> int:
    """The entrypoint's view of the fleet: every local snapshot verified, then one line per local model."""
    try:
        lines = []
        for member in _fleet_file().local:
            fetch.verify(member.model_dir, full=ns.full)
            options = VllmOptions.from_env(member.vllm_env(os.environ))
            options.precision()  # an impossible combination is refused here, not after loading
            lines.append(f"{member.port}:{options.quantization}:{member.name}")
    except (fetch.FetchError, ValueError) as exc:
        print(f"model_setup fleet: {exc}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


def _publish(ns: argparse.Namespace) -> int:
    try:
        print(localhub.publish(ns.snapshot, ns.repo, branch=ns.branch))
    except fetch.FetchError as exc:
        print(f"model_setup publish: {exc}", file=sys.stderr)
        return 1
    return 0


def _served_name(ns: argparse.Namespace) -> int:
    try:
        if ns.repo is not None:
            print(naming.model_name(fetch.model_repo(ns.repo)))
            return 0
        directory = ns.model_dir or os.environ.get("RERANK_MODEL_DIR")
        if not directory:
            raise fetch.FetchError("no model directory: pass one or set RERANK_MODEL_DIR")
        if ns.size:
            naming.check_size(Path(directory), ns.size)
        print(naming.served_name(Path(directory)))
    except fetch.FetchError as exc:
        print(f"model_setup served-name: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
