"""Real git repositories with real Git LFS objects, served over ``file://``, shaped like a hub model repo
(Hugging Face's, or ModelScope's: ``<base>/models/<org>/<name>.git`` on branch ``master``)."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

QWEN3_CONFIG: dict[str, object] = {
    "architectures": ["Qwen3ForCausalLM"],
    "model_type": "qwen3",
    "hidden_size": 8,
    "num_hidden_layers": 1,
    "vocab_size": 16,
}
# A BPE tokenizer.json reduced to what `fetch` reads: the vocabulary with the classifier tokens.
TOKENIZER: dict[str, object] = {
    "version": "1.0",
    "added_tokens": [{"id": 3, "content": "<|im_end|>", "special": True}],
    "model": {"type": "BPE", "vocab": {"no": 0, "yes": 1, "a": 2}, "merges": []},
}
TOKENIZER_CONFIG: dict[str, object] = {"tokenizer_class": "Qwen2Tokenizer"}


def safetensors_bytes(tensors: Mapping[str, int]) -> bytes:
    """A valid safetensors file: ``{name: number of float32 values}`` with deterministic content."""
    header: dict[str, object] = {}
    offset = 0
    data = bytearray()
    for name, count in tensors.items():
        header[name] = {"dtype": "F32", "shape": [count], "data_offsets": [offset, offset + 4 * count]}
        data += struct.pack(f"<{count}f", *(float(i % 7) for i in range(count)))
        offset += 4 * count
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + bytes(data)


def pointer_text(content: bytes) -> bytes:
    oid = hashlib.sha256(content).hexdigest()
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {len(content)}\n".encode()


def git(*args: str, cwd: Path, env: Mapping[str, str] | None = None) -> str:
    result = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


@dataclass
class ModelRepo:
    path: Path
    revision: str

    @property
    def url(self) -> str:
        return self.path.as_uri()

    def lfs_object(self, name: str) -> Path:
        """The remote's stored LFS object for file ``name`` at this revision."""
        pointer = git("show", f"{self.revision}:{name}", cwd=self.path)
        oid = next(line.split(":", 1)[1] for line in pointer.splitlines() if line.startswith("oid "))
        return self.path / ".git" / "lfs" / "objects" / oid[:2] / oid[2:4] / oid


def standard_files(*, sharded: bool = True) -> dict[str, bytes]:
    """The files of a Qwen3-Reranker repository, small: config, tokenizer, weights (sharded like the 4B)."""
    files = {
        "config.json": json.dumps(QWEN3_CONFIG).encode(),
        "tokenizer.json": json.dumps(TOKENIZER).encode(),
        "tokenizer_config.json": json.dumps(TOKENIZER_CONFIG).encode(),
        "generation_config.json": b'{"do_sample": false}',
        "README.md": b"# tiny test model\n",
        "onnx/model.onnx": b"\x00" * 4096,  # a file serving does not read: never downloaded
    }
    if sharded:
        files["model-00001-of-00002.safetensors"] = safetensors_bytes({"a": 300, "b": 5})
        files["model-00002-of-00002.safetensors"] = safetensors_bytes({"c": 200})
        index = {
            "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00001-of-00002.safetensors"}
        }
        index["weight_map"]["c"] = "model-00002-of-00002.safetensors"
        files["model.safetensors.index.json"] = json.dumps(index).encode()
    else:
        files["model.safetensors"] = safetensors_bytes({"w": 256})
    return files


def make_model_repo(
    path: Path,
    files: Mapping[str, bytes],
    *,
    lfs_patterns: tuple[str, ...] = ("*.safetensors", "*.onnx", "tokenizer.json"),
    branch: str = "main",
) -> ModelRepo:
    """A repository whose second commit holds ``files`` (the first is an empty-ish earlier revision)."""
    path.mkdir(parents=True)
    git("init", "--quiet", f"--initial-branch={branch}", cwd=path)
    git("config", "user.email", "test@example.invalid", cwd=path)
    git("config", "user.name", "test", cwd=path)
    git("lfs", "install", "--local", cwd=path)
    (path / ".gitattributes").write_text(
        "".join(f"{pattern} filter=lfs diff=lfs merge=lfs -text\n" for pattern in lfs_patterns)
    )
    git("add", ".gitattributes", cwd=path)
    git("commit", "--quiet", "-m", "attributes", cwd=path)
    for name, content in files.items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    git("add", "--all", cwd=path)
    git("commit", "--quiet", "-m", "model", cwd=path)
    return ModelRepo(path, git("rev-parse", "HEAD", cwd=path).strip())


def make_modelscope_repo(
    base: Path, repo: str, files: Mapping[str, bytes], *, branch: str = "master", tag: str | None = None
) -> ModelRepo:
    """``repo`` (``<org>/<name>``) laid out as ModelScope serves it under ``base``:
    ``models/<org>/<name>.git`` on ``branch``, ``tag`` (annotated) on the model commit, and a HEAD that names
    a branch the repository does not have, so nothing may rely on the server's HEAD."""
    model = make_model_repo(base / "models" / f"{repo}.git", files, branch=branch)
    if tag is not None:
        git("tag", "--annotate", tag, "--message", f"release {tag}", model.revision, cwd=model.path)
    git("symbolic-ref", "HEAD", "refs/heads/no-such-branch", cwd=model.path)
    return model
