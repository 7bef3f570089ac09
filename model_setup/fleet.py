"""The fleet file (``RERANK_FLEET_FILE``): the models one deployment serves, and cascades over them.

TOML, read by three programs that must agree: the entrypoint (``python -m model_setup fleet`` names the
local models it starts a vLLM for), ``python -m model_setup serve --fleet-model NAME`` (that vLLM's
arguments) and the gateway (routing, budgets, caches). docs/fleet.md is the format's reference::

    default = "qwen3-reranker-4b"            # a request naming no model gets this one (else the first)

    [[models]]                               # local: the entrypoint starts a vLLM for it
    model_dir = "/models/0.6b"               # a snapshot; its name is the served name unless `name` is set
    aliases = ["small"]
    gpu_memory_utilization = 0.25            # this vLLM's share of the GPU's memory

    [[models]]                               # remote: a vLLM elsewhere (another pod) serving `name`
    name = "qwen3-reranker-8b"
    model_dir = "/models/8b-tokenizer"       # the gateway still reads its tokenizer.json and config.json
    upstream_url = "http://rerank-8b:8001"

    [[cascades]]
    name = "rerank-cascade"
    first = "qwen3-reranker-0.6b"            # scores every candidate
    second = "qwen3-reranker-4b"             # re-scores the first's best top_k
    top_k = 50
    max_top_k = 200                          # a request's cascade_top_k may go up to this

Plain Python and the standard library only: the entrypoint runs it before anything heavy.
"""

from __future__ import annotations

import math
import re
import shlex
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from model_setup import defaults
from model_setup.fetch import FetchError
from model_setup.naming import served_name

NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
MAX_MEMBERS: Final = 8  # vLLMs in one pod: past a few, split the fleet into deployments (docs/fleet.md)
DEFAULT_TOP_K: Final = 50
DEFAULT_MAX_TOP_K: Final = 200
_MEMBER_KEYS: Final = frozenset(
    {
        "name", "aliases", "model_dir", "upstream_url", "port", "gpu_memory_utilization", "dtype",
        "quantization", "max_model_len", "max_pairs_in_flight", "vllm_args",
    }
)  # fmt: skip
_CASCADE_KEYS: Final = frozenset({"name", "aliases", "first", "second", "top_k", "max_top_k"})


class FleetError(ValueError):
    """The fleet file is wrong; the message says where and what to change."""


@dataclass(frozen=True, slots=True)
class Member:
    """One model behind its own vLLM: local (the entrypoint starts it on ``port``) or remote."""

    name: str
    aliases: tuple[str, ...]
    model_dir: Path
    upstream_url: str | None = None  # set: remote, nothing is started for it
    port: int | None = None  # local only
    gpu_memory_utilization: float | None = None  # local only
    dtype: str | None = None  # None: RERANK_DTYPE
    quantization: str | None = None  # None: RERANK_QUANTIZATION
    max_model_len: int | None = None  # None: RERANK_MAX_MODEL_LEN
    max_pairs_in_flight: int | None = None  # None: RERANK_MAX_PAIRS_IN_FLIGHT
    vllm_args: tuple[str, ...] = ()

    @property
    def local(self) -> bool:
        return self.upstream_url is None

    @property
    def url(self) -> str:
        return self.upstream_url or f"http://{defaults.VLLM_HOST}:{self.port}"

    def vllm_env(self, env: Mapping[str, str]) -> dict[str, str]:
        """``env`` with this member's settings in the RERANK_* variables VllmOptions reads."""
        own = {
            "RERANK_MODEL_DIR": str(self.model_dir),
            "RERANK_SERVED_MODEL_NAME": self.name,
            "RERANK_VLLM_PORT": str(self.port),
            "RERANK_GPU_MEMORY_UTILIZATION": None
            if self.gpu_memory_utilization is None
            else str(self.gpu_memory_utilization),
            "RERANK_DTYPE": self.dtype,
            "RERANK_QUANTIZATION": self.quantization,
            "RERANK_MAX_MODEL_LEN": None if self.max_model_len is None else str(self.max_model_len),
        }
        merged = {**env, **{name: value for name, value in own.items() if value is not None}}
        if self.vllm_args:
            merged["RERANK_VLLM_EXTRA_ARGS"] = shlex.join(
                [*shlex.split(env.get("RERANK_VLLM_EXTRA_ARGS", "")), *self.vllm_args]
            )
        return merged


@dataclass(frozen=True, slots=True)
class Cascade:
    """A model entry of two stages: ``first`` scores every candidate, ``second`` re-scores the best K."""

    name: str
    aliases: tuple[str, ...]
    first: str
    second: str
    top_k: int = DEFAULT_TOP_K
    max_top_k: int = DEFAULT_MAX_TOP_K


@dataclass(frozen=True, slots=True)
class Fleet:
    members: tuple[Member, ...]
    cascades: tuple[Cascade, ...]
    default: str  # an entry's name

    @property
    def local(self) -> tuple[Member, ...]:
        return tuple(member for member in self.members if member.local)

    def member(self, name: str) -> Member:
        """The member named ``name`` (its name, not an alias)."""
        for member in self.members:
            if member.name == name:
                return member
        raise KeyError(name)

    def names(self) -> dict[str, str]:
        """Every name a request may use (names, then aliases) -> the entry's name."""
        entries: list[Member | Cascade] = [*self.members, *self.cascades]
        found = {entry.name: entry.name for entry in entries}
        for entry in entries:
            found.update(dict.fromkeys(entry.aliases, entry.name))
        return found


def load(path: Path, env: Mapping[str, str], *, check_gpu: bool = True) -> Fleet:
    """Read and check the fleet file; ``env`` gives the defaults (RERANK_VLLM_PORT, RERANK_PORT,
    RERANK_GPU_MEMORY_UTILIZATION). ``check_gpu=False`` leaves the GPU shares unchecked (the gateway, which
    takes no GPU; the entrypoint checks them). Raises FleetError."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise FleetError(f"cannot read the fleet file {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise FleetError(f"the fleet file {path} is not TOML: {exc}") from None
    return parse(data, env, where=str(path), check_gpu=check_gpu)


def parse(
    data: Mapping[str, Any], env: Mapping[str, str], *, where: str = "the fleet file", check_gpu: bool = True
) -> Fleet:
    _only(data, {"default", "models", "cascades"}, where)
    models, cascades = data.get("models", []), data.get("cascades", [])
    if not isinstance(models, list) or not models or not all(isinstance(m, dict) for m in models):
        raise FleetError(f"{where}: declare at least one model as a [[models]] table")
    if len(models) > MAX_MEMBERS:
        raise FleetError(
            f"{where}: {len(models)} models; one pod holds at most {MAX_MEMBERS} (docs/fleet.md)"
        )
    if not isinstance(cascades, list) or not all(isinstance(c, dict) for c in cascades):
        raise FleetError(f"{where}: cascades must be [[cascades]] tables")
    base_port = _int_env(env, "RERANK_VLLM_PORT", defaults.VLLM_PORT)
    members = _members(models, env, base_port, where)
    if check_gpu:
        members = _shared_gpu(members, env, where)
    known = {member.name for member in members}
    built = tuple(_cascade(i, table, known, where) for i, table in enumerate(cascades))
    fleet = Fleet(members, built, default="")
    _unique(fleet, where)
    default = data.get("default", members[0].name)
    names = fleet.names()
    if not isinstance(default, str) or default not in names:
        raise FleetError(f"{where}: default {default!r} is no model's name or alias")
    return Fleet(members, built, names[default])


def _members(
    models: list[dict[str, Any]], env: Mapping[str, str], base_port: int, where: str
) -> tuple[Member, ...]:
    members: list[Member] = []
    local_index = 0
    for i, table in enumerate(models):
        at = f"{where}: models[{i}]"
        _only(table, _MEMBER_KEYS, at)
        model_dir = Path(_text(table, "model_dir", at, required=True))
        for needed in ("tokenizer.json", "config.json"):
            if not (model_dir / needed).is_file():
                raise FleetError(f"{at}: model_dir {model_dir} has no {needed}")
        name = _text(table, "name", at) or _snapshot_name(model_dir, at)
        remote = _text(table, "upstream_url", at)
        if remote is not None:
            if not remote.startswith(("http://", "https://")):
                raise FleetError(f"{at}: upstream_url must be an http:// or https:// URL")
            if "@" in urlsplit(remote).netloc:  # it is logged and listed: never a place for a secret
                raise FleetError(f"{at}: upstream_url must not carry credentials")
            for local_only in ("port", "gpu_memory_utilization", "vllm_args"):
                if local_only in table:
                    raise FleetError(f"{at}: {local_only} is for a local model; this one has an upstream_url")
        port = gpu = None
        if remote is None:
            port = _number(table, "port", at, int, low=1, high=65535) or base_port + local_index
            gpu = _number(table, "gpu_memory_utilization", at, float, low=0.01, high=1.0)
            local_index += 1
        members.append(
            Member(
                name=_name(name, at),
                aliases=_aliases(table, at),
                model_dir=model_dir,
                upstream_url=remote.rstrip("/") if remote else None,
                port=port,
                gpu_memory_utilization=gpu,
                dtype=_text(table, "dtype", at),
                quantization=_text(table, "quantization", at, empty=True),
                max_model_len=_number(table, "max_model_len", at, int, low=256),
                max_pairs_in_flight=_number(table, "max_pairs_in_flight", at, int, low=0),
                vllm_args=_vllm_args(table, at),
            )
        )
    local = [member for member in members if member.local]
    ports = [member.port for member in local]
    api_port = _int_env(env, "RERANK_PORT", defaults.PORT)
    if len(set(ports)) != len(ports) or api_port in ports:
        raise FleetError(f"{where}: local models need ports of their own, apart from RERANK_PORT={api_port}")
    return tuple(members)


def _shared_gpu(members: tuple[Member, ...], env: Mapping[str, str], where: str) -> tuple[Member, ...]:
    """Every local model with its share of the GPU: the ones set, and what they leave of
    RERANK_GPU_MEMORY_UTILIZATION split equally (rounded down) between the others."""
    budget = _float_env(env, "RERANK_GPU_MEMORY_UTILIZATION", defaults.GPU_MEMORY_UTILIZATION)
    local = [member for member in members if member.local]
    given = math.fsum(m.gpu_memory_utilization for m in local if m.gpu_memory_utilization is not None)
    unset = sum(1 for member in local if member.gpu_memory_utilization is None)
    share = math.floor((budget - given) / max(unset, 1) * 100) / 100
    whole = f"RERANK_GPU_MEMORY_UTILIZATION={budget:.2f} (the GPU memory all of this pod's vLLMs may take)"
    if given > budget + 1e-9:
        raise FleetError(
            f"{where}: the local models' gpu_memory_utilization add up to {given:.2f}, more than {whole}"
        )
    if unset and share < 0.01:
        raise FleetError(
            f"{where}: the gpu_memory_utilization given add up to {given:.2f} and leave less than 0.01 of "
            f"{whole} for each of the {unset} local models without one"
        )
    return tuple(
        replace(member, gpu_memory_utilization=share)
        if member.local and member.gpu_memory_utilization is None
        else member
        for member in members
    )


def _cascade(i: int, table: dict[str, Any], known: set[str], where: str) -> Cascade:
    at = f"{where}: cascades[{i}]"
    _only(table, _CASCADE_KEYS, at)
    name = _name(_text(table, "name", at, required=True), at)
    first, second = _text(table, "first", at, required=True), _text(table, "second", at, required=True)
    for stage, member in (("first", first), ("second", second)):
        if member not in known:
            raise FleetError(f"{at}: {stage} = {member!r} is not the name of a model in [[models]]")
    if first == second:
        raise FleetError(f"{at}: first and second are the same model")
    top_k = _number(table, "top_k", at, int, low=1) or DEFAULT_TOP_K
    max_top_k = _number(table, "max_top_k", at, int, low=1) or max(top_k, DEFAULT_MAX_TOP_K)
    if max_top_k < top_k:
        raise FleetError(f"{at}: max_top_k ({max_top_k}) is below top_k ({top_k})")
    return Cascade(name, _aliases(table, at), first, second, top_k, max_top_k)


def _unique(fleet: Fleet, where: str) -> None:
    seen: set[str] = set()
    entries: tuple[Member | Cascade, ...] = (*fleet.members, *fleet.cascades)
    for entry in entries:
        for name in (entry.name, *entry.aliases):
            if name in seen:
                raise FleetError(f"{where}: the name {name!r} is used twice")
            seen.add(name)


def _snapshot_name(model_dir: Path, at: str) -> str:
    try:
        return served_name(model_dir)
    except FetchError as exc:
        raise FleetError(f"{at}: no name given and {exc}") from None


def _only(table: Mapping[str, Any], allowed: set[str] | frozenset[str], at: str) -> None:
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise FleetError(f"{at}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")


def _text(table: Mapping[str, Any], key: str, at: str, *, required: bool = False, empty: bool = False) -> Any:
    value = table.get(key)
    if value is None:
        if required:
            raise FleetError(f"{at}: {key} is required")
        return None
    if not isinstance(value, str) or (not value and not empty):
        raise FleetError(f"{at}: {key} must be a{'' if empty else ' non-empty'} string")
    return value


def _number(
    table: Mapping[str, Any],
    key: str,
    at: str,
    kind: type[int] | type[float],
    *,
    low: float,
    high: float = math.inf,
) -> Any:
    value = table.get(key)
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (kind is int and not isinstance(value, int))
    ):
        raise FleetError(f"{at}: {key} must be a{'' if kind is float else ' whole'} number")
    if not low <= value <= high:
        raise FleetError(f"{at}: {key} must be between {low:g} and {high:g}, not {value}")
    return kind(value)


def _name(name: str, at: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise FleetError(f"{at}: {name!r} is not a model name (letters, digits and ._:- , up to 128)")
    return name


def _aliases(table: Mapping[str, Any], at: str) -> tuple[str, ...]:
    aliases = table.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(alias, str) for alias in aliases):
        raise FleetError(f"{at}: aliases must be a list of strings")
    return tuple(_name(alias, at) for alias in aliases)


def _vllm_args(table: Mapping[str, Any], at: str) -> tuple[str, ...]:
    args = table.get("vllm_args", [])
    if not isinstance(args, list) or not all(isinstance(arg, str) for arg in args):
        raise FleetError(f"{at}: vllm_args must be a list of strings (one argument each)")
    return tuple(args)


def _int_env(env: Mapping[str, str], name: str, default: int) -> int:
    try:
        return int(env.get(name) or default)
    except ValueError:
        raise FleetError(f"{name} must be a whole number") from None


def _float_env(env: Mapping[str, str], name: str, default: float) -> float:
    try:
        return float(env.get(name) or default)
    except ValueError:
        raise FleetError(f"{name} must be a number") from None
