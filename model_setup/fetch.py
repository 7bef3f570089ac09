"""Fetch a Qwen3-Reranker snapshot with git + git-lfs at a pinned commit, and verify snapshots before serving.

``fetch`` clones pointers only (``GIT_LFS_SKIP_SMUDGE=1``), checks the config and tokenizer before any weight
is downloaded, ``git lfs pull``s only the files vLLM and the gateway read, runs ``git lfs fsck``, hashes every
LFS file against its pointer, and moves the files into place with a manifest (``.rerank-model.json``). A
failure is one line on stderr and a non-zero exit, and leaves nothing at the destination.

``verify`` is the entrypoint's start-up check: the manifest, file sizes, no LFS pointers, complete safetensors
headers, a Qwen3 causal LM config and the ``yes``/``no`` tokens, in well under a second for the 8 GB 4B model.
It does not rehash the weights (``--full`` does): in the image the model is a content-addressed layer that
``fetch`` hashed at build time, and hashing 8 GB at every start would add tens of seconds to each restart.

Sources: Hugging Face (``https://huggingface.co/<org>/<name>``, pinned by commit SHA) and ModelScope
(``https://www.modelscope.cn/models/<org>/<name>.git``, branch ``master``, its own commit history, pinned by
its own commit SHA or a tag). A model is a size (``0.6b``, ``4b``, ``8b``), a hub name or a git URL.

Standard library only, on purpose: the image's model stage runs this file on its own
(``python fetch.py fetch ...``) so that editing any other file of the project does not refetch the model.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, NoReturn

MANIFEST_NAME: Final = ".rerank-model.json"
MANIFEST_FORMAT: Final = 1

# The sizes a shop chooses between (0.6B for edge and low latency, 4B balanced, 8B for quality): the names
# `fetch --repo`, `scripts/run.sh`, the image's MODEL_REPO and the chart's model.size take.
SIZES: Final[Mapping[str, str]] = {
    "0.6b": "Qwen/Qwen3-Reranker-0.6B",
    "4b": "Qwen/Qwen3-Reranker-4B",
    "8b": "Qwen/Qwen3-Reranker-8B",
}
DEFAULT_SIZE: Final = "4b"  # what the GPU image bakes in
CPU_DEFAULT_SIZE: Final = "0.6b"  # what `scripts/run.sh` serves on a CPU-only host
DEFAULT_REPO: Final = SIZES[DEFAULT_SIZE]
CPU_DEFAULT_REPO: Final = SIZES[CPU_DEFAULT_SIZE]

HUGGINGFACE: Final = "huggingface"
MODELSCOPE: Final = "modelscope"
DEFAULT_SOURCE: Final = HUGGINGFACE


@dataclass(frozen=True)
class Hub:
    """Where a source keeps ``<org>/<name>`` repositories, and what pins it accepts."""

    base: str
    url_format: str  # {base} and {repo}
    branch: str | None  # cloned explicitly when the server's HEAD cannot be relied on
    tags: bool  # whether a tag may pin a revision
    username: str  # what its git server takes beside a token (the token is the password)


# ModelScope's default branch is master and a plain clone can fail on its HEAD, so it is cloned by branch.
SOURCES: Final[Mapping[str, Hub]] = {
    HUGGINGFACE: Hub("https://huggingface.co", "{base}/{repo}", branch=None, tags=False, username="hf_user"),
    MODELSCOPE: Hub(
        "https://www.modelscope.cn", "{base}/models/{repo}.git", branch="master", tags=True, username="oauth2"
    ),
}

# Commit SHAs of the hub repositories, pinned so a build never picks up a surprise revision. Each was
# found pinned in several unrelated public projects (the 4B one also as a Hugging Face cache snapshot
# directory name); the build still verifies every file against the LFS hashes that commit records.
PINNED_REVISIONS: Final[Mapping[str, str]] = {
    "Qwen/Qwen3-Reranker-4B": "22e683669bc0f0bd69640a1354a6d0aebcfeede5",
    "Qwen/Qwen3-Reranker-0.6B": "e61197ed45024b0ed8a2d74b80b4d909f1255473",
    # Pinned in five unrelated public projects, one of them a Hugging Face cache snapshot directory.
    "Qwen/Qwen3-Reranker-8B": "77d193c791ed757ca307ee72715aa132723da912",
}
# ModelScope's own commits (Hugging Face SHAs do not resolve there). None verified yet: a revision is
# required.
MODELSCOPE_PINNED_REVISIONS: Final[Mapping[str, str]] = {}
PINS: Final[Mapping[str, Mapping[str, str]]] = {
    HUGGINGFACE: PINNED_REVISIONS,
    MODELSCOPE: MODELSCOPE_PINNED_REVISIONS,
}

# What serving reads. Weights are safetensors only (never pickles): model.safetensors, or the shards that
# model.safetensors.index.json names.
REQUIRED_FILES: Final = ("config.json", "tokenizer.json", "tokenizer_config.json")
OPTIONAL_FILES: Final = (
    "generation_config.json",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
    "LICENSE",
    "README.md",  # the model card: provenance and licence travel with the weights
)
WEIGHTS_FILE: Final = "model.safetensors"
WEIGHTS_INDEX: Final = "model.safetensors.index.json"

# model_setup.serving.HF_OVERRIDES["classifier_from_token"]: vLLM builds the score head from these tokens.
# (Repeated here to keep this file standalone; tests/test_fetch.py asserts the two agree.)
CLASSIFIER_TOKENS: Final = ("no", "yes")
MODEL_TYPE: Final = "qwen3"
ARCHITECTURE: Final = "Qwen3ForCausalLM"

LFS_POINTER_PREFIXES: Final = (
    b"version https://git-lfs.github.com/spec/",
    b"version https://hawser.github.com/spec/",
)
LFS_POINTER_MAX_BYTES: Final = 1024
_SHA_RE: Final = re.compile(r"[0-9a-f]{40}")
_TAG_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*(/[A-Za-z0-9][A-Za-z0-9_.+-]*)*")
_HUB_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")
_GIT_NOISE: Final = (  # advice and summaries around the line that names the problem
    "Failed to fetch some objects",
    "hint:",
    "Please make sure you have the correct access rights",
    "and the repository exists",
    "objects: repair:",
)
_HASH_CHUNK: Final = 8 * 1024 * 1024
_MAX_SAFETENSORS_HEADER: Final = 100 * 1024 * 1024


class FetchError(Exception):
    """A failure the operator can act on; its message is the one line they see."""


@dataclass(frozen=True)
class Source:
    """A snapshot's origin. ``url`` never carries credentials: it is logged and kept in the manifest."""

    repo: str  # hub name (a size resolved to its name), or the URL when given one
    url: str
    revision: str  # a full commit SHA, or a tag name when ``is_tag``
    source: str = DEFAULT_SOURCE
    branch: str | None = None  # cloned by name (ModelScope's master); None: the server's HEAD
    is_tag: bool = False


@dataclass(frozen=True)
class Pointer:
    oid: str  # sha256 of the content
    size: int


def _say(command: str, message: str) -> None:
    print(f"model_setup {command}: {message}", file=sys.stderr, flush=True)


# --- sources -------------------------------------------------------------------------------------------


def resolve_source(
    repo: str, revision: str | None, *, hub: str | None = None, source: str = DEFAULT_SOURCE
) -> Source:
    """A size (``4b``), a hub name (``Qwen/Qwen3-Reranker-4B``) or a git URL, on a source, at a pinned
    revision: a full commit SHA, or on ModelScope also a tag (resolved to its commit when cloned)."""
    if source not in SOURCES:
        raise FetchError(f"--source must be one of {', '.join(SOURCES)}, not {source!r}")
    where = SOURCES[source]
    repo = model_repo(repo)
    if _is_url(repo):
        url = repo if "://" in repo else Path(repo).as_uri()
    else:
        url = where.url_format.format(base=(hub or where.base).rstrip("/"), repo=repo)
    parts = urllib.parse.urlsplit(url)
    if parts.username or parts.password:
        raise FetchError(
            "the repository URL carries credentials; give the token with --token-file or HF_TOKEN "
            "instead, so it never appears in a URL, a log line or the manifest"
        )
    if revision is None:
        revision = PINS[source].get(repo)
        if revision is None:
            raise FetchError(_no_pin(repo, source))
    revision = revision.strip()
    if _SHA_RE.fullmatch(revision.lower()):
        return Source(repo, url, revision.lower(), source, where.branch)
    if where.tags and _TAG_RE.fullmatch(revision) and ".." not in revision:
        return Source(repo, url, revision, source, where.branch, is_tag=True)
    if where.tags:
        raise FetchError(f"--revision must be a full 40-character commit SHA or a tag: {revision!r}")
    raise FetchError(
        f"--revision must be a full 40-character commit SHA, not a branch, tag or short SHA: {revision!r}"
    )


def model_repo(repo: str) -> str:
    """A size resolved to its hub name; a hub name or a git URL (or local path) as given."""
    repo = SIZES.get(repo.lower(), repo)
    if _is_url(repo) or _HUB_NAME_RE.fullmatch(repo):
        return repo
    raise FetchError(
        f"--repo {repo!r} is neither a size ({', '.join(SIZES)}), a hub name like {DEFAULT_REPO} "
        "nor a git URL"
    )


def _is_url(repo: str) -> bool:
    return "://" in repo or repo.startswith("/")


def _no_pin(repo: str, source: str) -> str:
    if source == MODELSCOPE:
        return (
            f"no pinned ModelScope revision for {repo}: ModelScope has its own commits (Hugging Face SHAs do "
            "not resolve there), so pass --revision (MODEL_REVISION) with its full commit SHA or a tag"
        )
    return (
        f"no pinned revision for {repo}: pass --revision (MODEL_REVISION for scripts/run.sh and the image) "
        "with the full 40-character commit SHA"
    )


def read_token(token_file: Path | None, env: Mapping[str, str]) -> str | None:
    """The hub token for gated repositories: from a file (a build secret) or ``HF_TOKEN``, never a URL."""
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as exc:
            raise FetchError(f"cannot read the token file {token_file}: {exc.strerror}") from None
        if not token:
            raise FetchError(f"the token file {token_file} is empty")
        return token
    token = env.get("HF_TOKEN", "").strip()
    return token or None


def git_env(
    base: Mapping[str, str], token: str | None, *, url: str, username: str = "hf_user"
) -> dict[str, str]:
    """Environment for every git and git-lfs call.

    The token reaches git and git-lfs through a credential helper that reads it from this environment, so it
    is in no command line (``ps``), URL, config file or log. The helper answers for ``url``'s host alone:
    a redirect to another host (an LFS store, a mirror) gets no token. ``GIT_CONFIG_*`` entries (git >= 2.31)
    apply to git and to the ``git config``/``git credential`` calls git-lfs makes.
    """
    env = {key: value for key, value in base.items() if not key.startswith("GIT_CONFIG_")}
    env.update(
        GIT_LFS_SKIP_SMUDGE="1",  # pointers first; `git lfs pull` fetches only what serving reads
        GIT_TERMINAL_PROMPT="0",  # a build must fail, not wait for a password
        GIT_ASKPASS="",
        SSH_ASKPASS="",
        LC_ALL="C",  # git's messages, which our one-line errors quote, in one language
    )
    env.pop("RERANK_FETCH_TOKEN", None)
    if token is not None:
        env["RERANK_FETCH_TOKEN"] = token
        helper = (
            '!f() { test "$1" = get || exit 0; '
            f'echo username={username}; echo "password=$RERANK_FETCH_TOKEN"; }}; f'
        )
        parts = urllib.parse.urlsplit(url)
        origin = f"{parts.scheme}://{parts.hostname or ''}"
        # "" drops inherited helpers; the second is git's URL-scoped key, credential.<origin>.helper
        config = [("credential.helper", ""), (f"credential.{origin}.helper", helper)]
        env["GIT_CONFIG_COUNT"] = str(len(config))
        for index, (key, value) in enumerate(config):
            env[f"GIT_CONFIG_KEY_{index}"] = key
            env[f"GIT_CONFIG_VALUE_{index}"] = value
    return env


# --- checks shared by fetch and verify ------------------------------------------------------------------


def read_pointer(path: Path) -> Pointer | None:
    """The Git LFS pointer in ``path``, or None when the file holds real content."""
    if path.stat().st_size > LFS_POINTER_MAX_BYTES:
        return None
    data = path.read_bytes()
    if not data.startswith(LFS_POINTER_PREFIXES):
        return None
    fields = dict(line.split(" ", 1) for line in data.decode("utf-8", "replace").splitlines() if " " in line)
    oid = fields.get("oid", "")
    size = fields.get("size", "")
    if not oid.startswith("sha256:") or not size.isdigit():
        return Pointer(oid="", size=-1)  # a malformed pointer is still a pointer, not content
    return Pointer(oid=oid.removeprefix("sha256:"), size=int(size))


def _load_json(path: Path) -> Any:
    try:
        with path.open("rb") as handle:
            return json.load(handle)
    except (OSError, ValueError) as exc:
        raise FetchError(f"{path.name} is not readable JSON: {exc}") from None


def check_config(path: Path) -> Quantization | None:
    """The config must be the Qwen3 causal LM that vLLM's Qwen3-Reranker overrides convert, and, when the
    checkpoint is quantised, in a scheme that keeps ``lm_head`` unquantised; returns that scheme."""
    config = _load_json(path)
    if not isinstance(config, dict):
        raise FetchError("config.json is not a JSON object")
    model_type = config.get("model_type")
    architectures = config.get("architectures") or []
    if model_type != MODEL_TYPE or ARCHITECTURE not in architectures:
        raise FetchError(
            f"config.json describes model_type {model_type!r} with architectures {architectures}: serving "
            f"needs a Qwen3-Reranker checkpoint (model_type {MODEL_TYPE!r}, {ARCHITECTURE})"
        )
    quantization = checkpoint_quantization(config)
    if quantization is not None and quantization.lm_head_quantized:
        raise FetchError(
            f"config.json quantises lm_head ({quantization.scheme}): the reranker's score is read from "
            f"lm_head's {' and '.join(repr(t) for t in CLASSIFIER_TOKENS)} rows, so a quantised lm_head "
            "moves every score; use a checkpoint that keeps lm_head in 16 bits"
        )
    return quantization


# --- quantised checkpoints ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Quantization:
    """The scheme a checkpoint's ``quantization_config`` declares (vLLM serves it as declared)."""

    method: str  # vLLM's name for it: compressed-tensors, awq, gptq, fp8, modelopt
    scheme: str  # for people: "compressed-tensors W8A8 int (lm_head kept)"
    lm_head_quantized: bool


# The methods whose configs say whether lm_head is quantised; any other is refused, as nothing could vouch
# that the rows the score is read from are intact.
QUANTIZATION_METHODS: Final = ("compressed-tensors", "awq", "gptq", "fp8", "modelopt")


def checkpoint_quantization(config: Mapping[str, Any]) -> Quantization | None:
    """The checkpoint's declared quantisation, None for a 16/32-bit checkpoint. Raises FetchError for a
    ``quantization_config`` this cannot read."""
    declared = config.get("quantization_config")
    if declared is None:
        return None
    if not isinstance(declared, dict):
        raise FetchError("config.json's quantization_config is not a JSON object")
    method = str(declared.get("quant_method", "")).lower()
    if method == "compressed-tensors":
        return _compressed_tensors(declared)
    if method in ("awq", "gptq"):  # AutoAWQ never quantises lm_head; GPTQModel's `lm_head: true` does
        scheme = f"{method.upper()} W{declared.get('bits', '?')}A16 g{declared.get('group_size', '?')}"
        return _named(method, scheme, method == "gptq" and bool(declared.get("lm_head", False)))
    if method == "fp8":  # what stays in 16 bits is listed; lm_head among them or it was quantised
        kept = declared.get("ignored_layers") or []
        scheme = f"FP8 W8A8, {declared.get('activation_scheme', 'dynamic')} activations"
        return _named(method, scheme, not _lists_lm_head(kept))
    if method == "modelopt":
        kept = declared.get("exclude_modules") or declared.get("ignore") or []
        return _named(method, f"ModelOpt {declared.get('quant_algo', '?')}", not _lists_lm_head(kept))
    raise FetchError(
        f"config.json's quantization_config has quant_method {method or 'none'!r}; model_setup can check "
        f"that lm_head is kept unquantised only for {', '.join(QUANTIZATION_METHODS)}"
    )


def _named(method: str, scheme: str, lm_head_quantized: bool) -> Quantization:
    kept = "lm_head quantised" if lm_head_quantized else "lm_head kept"
    return Quantization(method=method, scheme=f"{scheme} ({kept})", lm_head_quantized=lm_head_quantized)


def _compressed_tensors(declared: Mapping[str, Any]) -> Quantization:
    """llm-compressor's format: groups of layers (``targets``) with weight and activation arguments; the
    ``ignore`` list keeps layers in 16 bits. Targets and ignores are module names, class names or ``re:``
    patterns; lm_head is a ``Linear`` named ``lm_head``."""
    groups = declared.get("config_groups")
    if not isinstance(groups, dict) or not groups:
        raise FetchError("config.json's compressed-tensors quantization_config has no config_groups")
    ignore = declared.get("ignore") or []
    schemes, lm_head = [], False
    for group in groups.values():
        if not isinstance(group, dict):
            raise FetchError("config.json's compressed-tensors config_groups holds a non-object")
        weights = group.get("weights") or {}
        activations = group.get("input_activations") or {}
        bits = f"W{weights.get('num_bits', 16)}A{activations.get('num_bits', 16)}"
        schemes.append(f"{bits} {weights.get('type', 'int')}")
        targets = group.get("targets") or []
        lm_head = lm_head or (_matches_lm_head(targets) and not _lists_lm_head(ignore))
    return _named("compressed-tensors", f"compressed-tensors {', '.join(sorted(set(schemes)))}", lm_head)


def _matches_lm_head(names: Iterable[object]) -> bool:
    return any(name == "Linear" for name in names) or _lists_lm_head(names)


def _lists_lm_head(names: Iterable[object]) -> bool:
    """Whether a list of module names or ``re:`` patterns names the top-level ``lm_head``."""
    for name in names:
        text = str(name)
        if text.startswith("re:"):  # matched from the start, as compressed-tensors matches them
            if re.match(text.removeprefix("re:"), "lm_head"):
                return True
        elif text == "lm_head":
            return True
    return False


def check_tokenizer(path: Path) -> None:
    """vLLM's score head reads the logits of exactly these tokens; a tokenizer without them cannot serve."""
    data = _load_json(path)
    model = data.get("model") if isinstance(data, dict) else None
    vocab = model.get("vocab") if isinstance(model, dict) else None
    if not isinstance(vocab, dict):
        raise FetchError("tokenizer.json has no BPE vocabulary (model.vocab): not a Qwen3 tokenizer")
    added = {entry.get("content") for entry in data.get("added_tokens", []) if isinstance(entry, dict)}
    missing = [token for token in CLASSIFIER_TOKENS if token not in vocab and token not in added]
    if missing:
        raise FetchError(
            f"tokenizer.json has no token {' or '.join(repr(t) for t in missing)}: the reranker scores "
            f"P(yes) from the logits of {list(CLASSIFIER_TOKENS)}"
        )


def check_safetensors(path: Path) -> None:
    """Header parses and the tensors end exactly at the end of the file (catches truncation cheaply)."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(8)
        length = int.from_bytes(head, "little") if len(head) == 8 else -1
        if not 0 < length <= min(_MAX_SAFETENSORS_HEADER, size - 8):
            raise FetchError(f"{path.name} is not a safetensors file (bad header length)")
        try:
            header = json.loads(handle.read(length))
        except ValueError:
            raise FetchError(f"{path.name} is not a safetensors file (header is not JSON)") from None
    if not isinstance(header, dict):
        raise FetchError(f"{path.name} is not a safetensors file (header is not an object)")
    ends = [
        entry["data_offsets"][1]
        for name, entry in header.items()
        if name != "__metadata__" and isinstance(entry, dict) and "data_offsets" in entry
    ]
    if not ends:
        raise FetchError(f"{path.name} holds no tensors")
    expected = 8 + length + max(ends)
    if expected != size:
        raise FetchError(
            f"{path.name} is {size} bytes but its header describes {expected}: truncated or damaged"
        )


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _check_snapshot_files(directory: Path, names: Iterable[str]) -> Quantization | None:
    """Content checks that need no manifest: no pointers, config, tokenizer, complete safetensors; returns
    the checkpoint's quantisation."""
    for name in names:
        if read_pointer(directory / name) is not None:
            raise FetchError(f"{name} is a Git LFS pointer, not the file: its content was never downloaded")
    quantization = check_config(directory / "config.json")
    check_tokenizer(directory / "tokenizer.json")
    for name in names:
        if name.endswith(".safetensors"):
            check_safetensors(directory / name)
    return quantization


# --- manifest -------------------------------------------------------------------------------------------


def write_manifest(
    directory: Path,
    *,
    repo: str,
    url: str,
    revision: str,
    tool: str,
    source: str | None = None,
    tag: str | None = None,
) -> Path:
    """Record what the directory holds: origin, commit (and the tag that named it), each file's size and
    sha256."""
    files = {}
    for path in sorted(directory.iterdir()):
        if path.name == MANIFEST_NAME or not path.is_file():
            continue
        files[path.name] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
    manifest = {
        "format": MANIFEST_FORMAT,
        "tool": tool,
        "repo": repo,
        "url": url,
        "revision": revision,
        "files": files,
    }
    manifest |= {key: value for key, value in (("source", source), ("tag", tag)) if value}
    target = directory / MANIFEST_NAME
    target.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return target


def read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST_NAME
    if not path.is_file():
        raise FetchError(
            f"{directory} has no {MANIFEST_NAME}: it was not made by `python -m model_setup fetch` "
            "(or `tiny`), so nothing vouches for its content"
        )
    manifest = _load_json(path)
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise FetchError(f"{path} is not a format-{MANIFEST_FORMAT} manifest")
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise FetchError(f"{path} lists no files")
    return manifest


def verify(directory: Path, *, full: bool = False) -> str:
    """Check a snapshot before serving it; returns a one-line summary. Raises FetchError."""
    if not directory.is_dir():
        raise FetchError(f"model directory {directory} does not exist")
    manifest = read_manifest(directory)
    files: dict[str, Any] = manifest["files"]
    for name in ("config.json", "tokenizer.json"):
        if name not in files:
            raise FetchError(f"the manifest lists no {name}")
    if not any(name.endswith(".safetensors") for name in files):
        raise FetchError("the manifest lists no safetensors weights")
    total = 0
    for name, entry in files.items():
        path = directory / name
        if not path.is_file():
            raise FetchError(f"{name} is missing from {directory}")
        size = path.stat().st_size
        if size != entry.get("size"):
            raise FetchError(
                f"{name} is {size} bytes but the manifest says {entry.get('size')}: truncated or replaced"
            )
        total += size
    quantization = _check_snapshot_files(directory, files)
    if full:
        for name, entry in files.items():
            if sha256_file(directory / name) != entry.get("sha256"):
                raise FetchError(
                    f"{name} does not match its sha256 in the manifest: the file is corrupt or replaced"
                )
    revision = str(manifest.get("revision", "?"))
    scheme = f", {quantization.scheme}" if quantization is not None else ""
    if manifest.get("tag"):
        revision += f" (tag {manifest['tag']})"
    return (
        f"{directory}: {manifest.get('repo')} @ {revision}{scheme}, {len(files)} files, {total / 1e9:.2f} GB "
        f"({'all hashes checked' if full else 'sizes, pointers, headers, config and tokenizer checked'})"
    )


# --- fetch ----------------------------------------------------------------------------------------------


class _Git:
    def __init__(self, cwd: Path, env: Mapping[str, str], secret: str | None) -> None:
        self.cwd = cwd
        self.env = dict(env)
        self.secret = secret

    def __call__(self, *args: str, what: str, cwd: Path | None = None) -> str:
        try:
            result = subprocess.run(  # noqa: S603  # fixed program, our arguments
                ["git", *args],  # noqa: S607  # git from PATH, as an operator runs it
                cwd=cwd or self.cwd,
                env=self.env,
                capture_output=True,
                text=True,
                check=False,
            )
        except FileNotFoundError:
            raise FetchError("git is not installed (fetch needs git and git-lfs)") from None
        if result.returncode != 0:
            raise FetchError(f"{what}: {self._last_line(result.stderr or result.stdout)}")
        return result.stdout

    def _last_line(self, text: str) -> str:
        """The line of git's output that says what went wrong (not its advice or summaries)."""
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        meaningful = [line for line in lines if not line.startswith(_GIT_NOISE)] or lines or ["no message"]
        fatal = [line for line in meaningful if line.startswith("fatal:")]
        line = fatal[0] if fatal else meaningful[-1]
        return line.replace(self.secret, "***") if self.secret else line


def _metadata_files(tree: set[str], where: str) -> list[str]:
    """The config and tokenizer files serving reads that this revision holds (plus the weights index)."""
    missing = [name for name in REQUIRED_FILES if name not in tree]
    if missing:
        raise FetchError(f"{where} has no {', '.join(missing)}: not a Qwen3-Reranker model repository")
    return [name for name in (*REQUIRED_FILES, *OPTIONAL_FILES, WEIGHTS_INDEX) if name in tree]


def _weights(checkout: Path, tree: set[str], where: str) -> list[str]:
    if WEIGHTS_INDEX in tree:
        index = _load_json(checkout / WEIGHTS_INDEX)
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise FetchError(f"{WEIGHTS_INDEX} has no weight_map")
        shards = sorted({str(name) for name in weight_map.values()})
        absent = [name for name in shards if name not in tree]
        if absent:
            raise FetchError(f"{WEIGHTS_INDEX} names {', '.join(absent)}, which {where} does not have")
        if not all(name.endswith(".safetensors") and "/" not in name for name in shards):
            raise FetchError(f"{WEIGHTS_INDEX} names files that are not top-level safetensors shards")
        return shards
    if WEIGHTS_FILE in tree:
        return [WEIGHTS_FILE]
    raise FetchError(f"{where} has no safetensors weights ({WEIGHTS_FILE} or {WEIGHTS_INDEX})")


def _pull(git: _Git, names: Sequence[str], pointers: Mapping[str, Pointer]) -> None:
    wanted = [name for name in names if name in pointers]
    if not wanted:
        return
    try:
        git("lfs", "pull", f"--include={','.join(wanted)}", "--exclude=", what="git lfs pull failed")
    except FetchError as exc:  # git-lfs names objects by oid; say which file it was
        message = str(exc)
        for name in wanted:
            oid = pointers[name].oid
            message = message.replace(f'"{oid}"', oid).replace(oid, f"{name} (sha256 {oid[:12]})")
        raise FetchError(message) from None


def fetch(
    source: Source,
    dest: Path,
    *,
    token: str | None = None,
    lfs_storage: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Path:
    """Fetch ``source`` into ``dest`` (which must not exist); returns ``dest``. Raises FetchError."""
    dest = Path(os.path.abspath(dest))
    if dest.exists():
        return _already_fetched(source, dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.fetch-", dir=dest.parent))
    try:
        base = os.environ if env is None else env
        username = SOURCES[source.source].username
        model, commit = _fetch_into(
            work, source, git_env(base, token, url=source.url, username=username), token, lfs_storage
        )
        os.replace(model, dest)  # atomic: the destination appears complete or not at all
    finally:
        shutil.rmtree(work, ignore_errors=True)  # the clone, its .git and its LFS objects
    named = f" (tag {source.revision})" if source.is_tag else ""
    _say("fetch", f"verified {source.repo} @ {commit}{named} into {dest}")
    return dest


def _fetch_into(
    work: Path, source: Source, env: Mapping[str, str], token: str | None, lfs_storage: Path | None
) -> tuple[Path, str]:
    """Clone, pull, check and assemble the snapshot under ``work``; returns the finished model directory
    and the commit it holds."""
    checkout = work / "checkout"
    git = _Git(work, env, token)
    branch = f", branch {source.branch}" if source.branch else ""
    _say("fetch", f"cloning {source.url}{branch} (LFS pointers only)")
    git(
        "clone",
        "--quiet",
        "--no-checkout",
        *(("--branch", source.branch) if source.branch else ()),
        "--",
        source.url,
        str(checkout),
        what=f"cannot clone {source.url}",
    )
    git = _Git(checkout, git.env, token)
    git("lfs", "install", "--local", "--skip-smudge", what="git lfs is not usable")
    if lfs_storage is not None:
        git("config", "lfs.storage", str(lfs_storage.absolute()), what="cannot set lfs.storage")
    commit = _commit(git, source)
    git(
        "-c",
        "advice.detachedHead=false",
        "checkout",
        "--quiet",
        "--detach",
        commit,
        what="checkout failed",
    )
    where = f"{source.url} at {commit[:12]}"
    tree = set(git("ls-tree", "--name-only", "HEAD", what="cannot list the tree").splitlines())
    pointers = {}  # what each LFS file must hash to, as this commit records it
    for name in tree:
        if (checkout / name).is_file() and (pointer := read_pointer(checkout / name)) is not None:
            pointers[name] = pointer

    meta = _metadata_files(tree, where)
    _say("fetch", f"revision {commit}: pulling {len(meta)} config and tokenizer files")
    _pull(git, meta, pointers)
    _check_no_pointers(checkout, meta)
    quantization = check_config(checkout / "config.json")  # before gigabytes of weights, not after
    check_tokenizer(checkout / "tokenizer.json")
    if quantization is not None:
        _say("fetch", f"a quantised checkpoint: {quantization.scheme}")

    weights = _weights(checkout, tree, where)
    size = sum(pointers[name].size for name in weights if name in pointers)
    _say("fetch", f"pulling {len(weights)} weight files ({size / 1e9:.2f} GB)")
    _pull(git, weights, pointers)
    keep = [*meta, *weights]
    _check_no_pointers(checkout, weights)

    lfs_paths = set(git("lfs", "ls-files", "--name-only", what="git lfs ls-files failed").splitlines())
    skipped = sorted(lfs_paths - set(keep))
    if skipped:  # fsck checks every LFS file in HEAD unless excluded; we pulled only what we keep
        git("config", "lfs.fetchexclude", ",".join(skipped), what="cannot set lfs.fetchexclude")
    _say("fetch", "git lfs fsck")
    git("lfs", "fsck", what="git lfs fsck found a corrupt or missing object")

    _check_lfs_hashes(checkout, keep, pointers)
    for name in weights:
        check_safetensors(checkout / name)

    model = work / "model"
    model.mkdir()
    for name in keep:
        os.replace(checkout / name, model / name)
    write_manifest(
        model,
        repo=source.repo,
        url=source.url,
        revision=commit,
        tool="model_setup fetch",
        source=source.source,
        tag=source.revision if source.is_tag else None,
    )
    return model, commit


def _commit(git: _Git, source: Source) -> str:
    """The commit to check out: the pinned SHA, which must be in the clone, or the commit a tag names."""
    if source.is_tag:
        try:
            resolved = git("rev-parse", "--verify", f"refs/tags/{source.revision}^{{commit}}", what="")
        except FetchError:
            raise FetchError(
                f"tag {source.revision} is not in {source.url} (a revision is a full commit SHA or a tag, "
                "never a branch)"
            ) from None
        return resolved.strip()
    try:
        git("cat-file", "-e", f"{source.revision}^{{commit}}", what="")
    except FetchError:
        raise FetchError(f"revision {source.revision} is not a commit in {source.url}") from None
    return source.revision


def _already_fetched(source: Source, dest: Path) -> Path:
    """Re-running a fetch is a no-op for the same source and revision (or tag); anything else is refused."""
    try:
        manifest = read_manifest(dest) if dest.is_dir() else {}
    except FetchError:
        manifest = {}
    pinned = manifest.get("tag") if source.is_tag else manifest.get("revision")
    if (manifest.get("url"), pinned) != (source.url, source.revision):
        raise FetchError(
            f"{dest} already exists and holds something else: remove it or choose another directory"
        )
    _say("fetch", f"{dest} already holds {source.repo} @ {source.revision}; checking it")
    verify(dest)
    return dest


def _check_no_pointers(checkout: Path, names: Iterable[str]) -> None:
    for name in names:
        if read_pointer(checkout / name) is not None:
            raise FetchError(
                f"{name} is still a Git LFS pointer after `git lfs pull`: git-lfs did not download it "
                "(a malformed or non-canonical pointer committed as a plain file?)"
            )


def _check_lfs_hashes(checkout: Path, names: Iterable[str], pointers: Mapping[str, Pointer]) -> None:
    """Every LFS file matches the size and sha256 its pointer at this commit records."""
    for name in names:
        pointer = pointers.get(name)
        if pointer is None:
            continue
        path = checkout / name
        if path.stat().st_size != pointer.size or sha256_file(path) != pointer.oid:
            raise FetchError(f"{name} does not match the sha256 its LFS pointer records: corrupt download")


# --- command line ---------------------------------------------------------------------------------------


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``fetch`` and ``verify`` to a parser's subcommands (model_setup's and this file's own)."""
    fetch_cmd = sub.add_parser(
        "fetch",
        help="clone a model repository with git + git-lfs at a pinned commit, verify it, write DEST",
        description=(
            "Fetch a model snapshot. Sizes: "
            + ", ".join(f"{size} = {name}" for size, name in SIZES.items())
            + ". Pinned Hugging Face revisions: "
            + ", ".join(f"{name} @ {sha}" for name, sha in PINNED_REVISIONS.items())
            + "; anything else, and every ModelScope repository, needs --revision."
            " The token for gated repositories comes from --token-file (or, for Hugging Face, HF_TOKEN),"
            " never from the URL."
        ),
    )
    fetch_cmd.add_argument(
        "dest", type=Path, help="directory to create (must not exist, or hold this revision)"
    )
    fetch_cmd.add_argument(
        "--repo",
        default=DEFAULT_SIZE,
        help=f"a size ({', '.join(SIZES)}), a hub name or a git URL (default {DEFAULT_SIZE}; "
        f"CPU: {CPU_DEFAULT_SIZE})",
    )
    fetch_cmd.add_argument(
        "--revision",
        default=None,
        help="full commit SHA, or on ModelScope also a tag (default: the pin for a known repo)",
    )
    fetch_cmd.add_argument(
        "--source",
        default=os.environ.get("RERANK_MODEL_SOURCE") or DEFAULT_SOURCE,
        help=f"where hub names live: {' or '.join(SOURCES)} (default: RERANK_MODEL_SOURCE, else "
        f"{DEFAULT_SOURCE})",
    )
    fetch_cmd.add_argument("--token-file", type=Path, default=None, help="file holding the hub token")
    fetch_cmd.add_argument(
        "--hub-url",
        default=os.environ.get("RERANK_HUB_URL") or None,
        help="base URL for hub names, e.g. a mirror (default: RERANK_HUB_URL, else the source's own: "
        + ", ".join(hub.base for hub in SOURCES.values())
        + ")",
    )
    fetch_cmd.add_argument(
        "--lfs-storage", type=Path, default=None, help="shared LFS object cache (e.g. a build cache mount)"
    )
    verify_cmd = sub.add_parser("verify", help="check a fetched snapshot before serving it")
    verify_cmd.add_argument("model_dir", type=Path, nargs="?", default=None, help="default: RERANK_MODEL_DIR")
    verify_cmd.add_argument(
        "--full", action="store_true", help="also rehash every file (slow for big models)"
    )


def run(ns: argparse.Namespace) -> int:
    """Run a parsed ``fetch`` or ``verify`` command; failures are one line on stderr."""
    command: str = ns.command
    try:
        if command == "fetch":
            _terminate_cleanly()
            source = resolve_source(ns.repo, ns.revision, hub=ns.hub_url or None, source=ns.source)
            # HF_TOKEN is Hugging Face's: never handed to another source's server.
            token = read_token(ns.token_file, os.environ if source.source == HUGGINGFACE else {})
            print(fetch(source, ns.dest, token=token, lfs_storage=ns.lfs_storage))
        else:
            directory = ns.model_dir or os.environ.get("RERANK_MODEL_DIR")
            if not directory:
                raise FetchError("no model directory: pass one or set RERANK_MODEL_DIR")
            print(verify(Path(directory), full=ns.full))
    except FetchError as exc:
        _say(command, f"error: {exc}")
        return 1
    return 0


def _terminate_cleanly() -> None:
    """SIGTERM (a cancelled build, `timeout`) unwinds like Ctrl-C, so the partial clone is removed."""

    def handler(signum: int, _frame: object) -> NoReturn:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fetch.py", description=__doc__.split("\n\n")[0])
    add_commands(parser.add_subparsers(dest="command", required=True))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
