"""`model_setup fetch` and `verify` against real git repositories with real LFS objects over ``file://``.

Every failure ends with one ``model_setup fetch: error: ...`` line, a non-zero exit, and nothing left behind:
no destination directory and no partial clone beside it.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from model_setup import fetch as fetchlib
from model_setup.serving import HF_OVERRIDES
from tests.support.lfs_repo import (
    QWEN3_CONFIG,
    TOKENIZER,
    ModelRepo,
    git,
    make_model_repo,
    make_modelscope_repo,
    pointer_text,
    safetensors_bytes,
    standard_files,
)
from tests.support.procs import ROOT

# Not in the `unit` tier although it needs no server: dozens of real git and git-lfs runs take about 12 s of
# CPU, and the tier is kept under a minute.

FETCH_PY = ROOT / "model_setup" / "fetch.py"
SERVED_FILES = {
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
    "README.md",
    "model.safetensors.index.json",
    "model-00001-of-00002.safetensors",
    "model-00002-of-00002.safetensors",
}


def model_setup(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "model_setup", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def fetch(
    repo: ModelRepo, dest: Path, *extra: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return model_setup("fetch", "--repo", repo.url, "--revision", repo.revision, *extra, str(dest), env=env)


def assert_failed(result: subprocess.CompletedProcess[str], dest: Path, message: str) -> None:
    """Non-zero, exactly one error line (the last), containing ``message``, and no debris."""
    assert result.returncode != 0, result.stderr
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if ": error: " in line]
    assert errors == [lines[-1]], result.stderr
    assert lines[-1].startswith(("model_setup fetch: error: ", "model_setup verify: error: ")), lines[-1]
    assert message in lines[-1]
    assert result.stdout == ""
    assert not dest.exists()
    assert [p.name for p in dest.parent.iterdir() if p.name.startswith(f".{dest.name}.")] == []


@pytest.fixture
def repo(tmp_path: Path) -> ModelRepo:
    return make_model_repo(tmp_path / "remote" / "Qwen3-Reranker-test", standard_files())


def test_classifier_tokens_match_the_serving_overrides() -> None:
    """fetch.py repeats the tokens (it must stay standalone); it must check the ones vLLM will look up."""
    assert list(fetchlib.CLASSIFIER_TOKENS) == HF_OVERRIDES["classifier_from_token"]


def test_happy_path_pulls_only_what_serving_reads(repo: ModelRepo, tmp_path: Path) -> None:
    dest = tmp_path / "models" / "reranker"
    result = fetch(repo, dest)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(dest)
    assert {p.name for p in dest.iterdir()} == {*SERVED_FILES, fetchlib.MANIFEST_NAME}  # no .git, no onnx/
    for name in SERVED_FILES:
        assert (dest / name).read_bytes() == (repo.path / name).read_bytes(), name
    manifest = json.loads((dest / fetchlib.MANIFEST_NAME).read_text())
    assert manifest["revision"] == repo.revision
    assert manifest["url"] == repo.url
    assert set(manifest["files"]) == SERVED_FILES
    assert [p.name for p in dest.parent.iterdir()] == ["reranker"]  # the clone is gone

    verified = model_setup("verify", "--full", str(dest))
    assert verified.returncode == 0, verified.stderr
    assert repo.revision in verified.stdout

    again = fetch(repo, dest)  # same source and revision: a no-op that re-verifies
    assert again.returncode == 0, again.stderr
    assert "already holds" in again.stderr


def test_single_file_weights_through_a_shared_lfs_cache(tmp_path: Path) -> None:
    """--lfs-storage (a build cache mount) serves a second fetch even after the server lost the objects."""
    repo = make_model_repo(tmp_path / "remote", standard_files(sharded=False))
    cache = tmp_path / "lfs-cache"
    first = fetch(repo, tmp_path / "a", "--lfs-storage", str(cache))
    assert first.returncode == 0, first.stderr
    shutil.rmtree(repo.path / ".git" / "lfs" / "objects")
    second = fetch(repo, tmp_path / "b", "--lfs-storage", str(cache))
    assert second.returncode == 0, second.stderr
    assert (tmp_path / "b" / "model.safetensors").read_bytes() == (
        repo.path / "model.safetensors"
    ).read_bytes()


def test_the_file_runs_standalone_on_the_standard_library(repo: ModelRepo, tmp_path: Path) -> None:
    """The image's model stage runs fetch.py alone (no project, no site-packages), so it caches apart."""
    dest = tmp_path / "model"
    command = [sys.executable, "-I", "-S", str(FETCH_PY), "fetch", "--repo", repo.url]
    result = subprocess.run(
        [*command, "--revision", repo.revision, str(dest)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert (dest / fetchlib.MANIFEST_NAME).is_file()


def test_wrong_revision(repo: ModelRepo, tmp_path: Path) -> None:
    dest = tmp_path / "model"
    result = model_setup("fetch", "--repo", repo.url, "--revision", "0123456789" * 4, str(dest))
    assert_failed(result, dest, f"revision {'0123456789' * 4} is not a commit in {repo.url}")


@pytest.mark.parametrize("revision", ["main", "22e6836", "v1.0"])
def test_revision_must_be_a_full_commit_sha(revision: str, repo: ModelRepo, tmp_path: Path) -> None:
    dest = tmp_path / "model"
    result = model_setup("fetch", "--repo", repo.url, "--revision", revision, str(dest))
    assert_failed(result, dest, "--revision must be a full 40-character commit SHA")


def test_unknown_hub_repo_demands_a_revision(tmp_path: Path) -> None:
    dest = tmp_path / "model"
    result = model_setup("fetch", "--repo", "someone/some-reranker", str(dest))
    assert_failed(result, dest, "no pinned revision for someone/some-reranker: pass --revision")


def test_known_hub_repos_default_to_their_pins() -> None:
    source = fetchlib.resolve_source(fetchlib.DEFAULT_REPO, None)
    assert source.url == "https://huggingface.co/Qwen/Qwen3-Reranker-4B"
    assert source.revision == "22e683669bc0f0bd69640a1354a6d0aebcfeede5"
    cpu = fetchlib.resolve_source(fetchlib.CPU_DEFAULT_REPO, None, hub="https://mirror.example/")
    assert cpu.url == "https://mirror.example/Qwen/Qwen3-Reranker-0.6B"
    assert cpu.revision == "e61197ed45024b0ed8a2d74b80b4d909f1255473"


@pytest.mark.parametrize(
    ("size", "repo"),
    [
        ("0.6b", "Qwen/Qwen3-Reranker-0.6B"),
        ("4b", "Qwen/Qwen3-Reranker-4B"),
        ("4B", "Qwen/Qwen3-Reranker-4B"),
    ],
)
def test_a_size_is_its_hub_repository_at_its_pin(size: str, repo: str) -> None:
    by_size = fetchlib.resolve_source(size, None)
    assert by_size == fetchlib.resolve_source(repo, None)
    assert (by_size.repo, by_size.revision) == (repo, fetchlib.PINNED_REVISIONS[repo])


def test_the_sizes_are_the_three_qwen3_rerankers_and_the_default_is_the_4b() -> None:
    assert dict(fetchlib.SIZES) == {
        "0.6b": "Qwen/Qwen3-Reranker-0.6B",
        "4b": "Qwen/Qwen3-Reranker-4B",
        "8b": "Qwen/Qwen3-Reranker-8B",
    }
    assert fetchlib.SIZES["4b"] == fetchlib.DEFAULT_REPO
    assert fetchlib.SIZES["0.6b"] == fetchlib.CPU_DEFAULT_REPO


def test_every_size_has_its_pinned_revision() -> None:
    """Each size resolves to its Hugging Face pin; an explicit revision still wins."""
    assert {size: fetchlib.resolve_source(size, None).revision for size in fetchlib.SIZES} == {
        "0.6b": "e61197ed45024b0ed8a2d74b80b4d909f1255473",
        "4b": "22e683669bc0f0bd69640a1354a6d0aebcfeede5",
        "8b": "77d193c791ed757ca307ee72715aa132723da912",
    }
    pinned = fetchlib.resolve_source("8b", "a" * 40)
    assert (pinned.url, pinned.revision) == ("https://huggingface.co/Qwen/Qwen3-Reranker-8B", "a" * 40)


def test_an_unknown_size_or_source_is_one_line(tmp_path: Path) -> None:
    dest = tmp_path / "model"
    assert_failed(
        model_setup("fetch", "--repo", "9b", str(dest)), dest, "--repo '9b' is neither a size (0.6b"
    )
    result = model_setup("fetch", "--repo", "4b", "--source", "hf-mirror", str(dest))
    assert_failed(result, dest, "--source must be one of huggingface, modelscope, not 'hf-mirror'")


def test_a_hub_url_with_credentials_is_refused_too(tmp_path: Path) -> None:
    dest = tmp_path / "model"
    result = model_setup("fetch", "--hub-url", "https://u:ms_secret@mirror.example", str(dest))
    assert_failed(result, dest, "the repository URL carries credentials")
    assert "ms_secret" not in result.stderr


def test_missing_lfs_object(repo: ModelRepo, tmp_path: Path) -> None:
    repo.lfs_object("model-00002-of-00002.safetensors").unlink()
    dest = tmp_path / "model"
    assert_failed(fetch(repo, dest), dest, "git lfs pull failed: ")


def test_corrupted_object_on_the_server(repo: ModelRepo, tmp_path: Path) -> None:
    """git-lfs hashes what it downloads: a damaged object never reaches the working tree."""
    corrupt(repo.lfs_object("model-00001-of-00002.safetensors"))
    dest = tmp_path / "model"
    result = fetch(repo, dest)
    assert_failed(result, dest, "git lfs pull failed: ")
    assert "hash" in result.stderr.splitlines()[-1]


def test_corrupted_object_in_the_lfs_cache_is_caught_by_fsck(repo: ModelRepo, tmp_path: Path) -> None:
    """A damaged object already in the cache is not downloaded again, so only `git lfs fsck` sees it; fsck
    also moves it aside, so the next build downloads a good copy."""
    cache = tmp_path / "lfs-cache"
    name = "model-00002-of-00002.safetensors"
    cached = cache / repo.lfs_object(name).relative_to(repo.path / ".git" / "lfs")
    cached.parent.mkdir(parents=True)
    shutil.copyfile(repo.lfs_object(name), cached)
    corrupt(cached)
    dest = tmp_path / "model"
    result = fetch(repo, dest, "--lfs-storage", str(cache))
    assert_failed(result, dest, "git lfs fsck found a corrupt or missing object: ")
    assert name in result.stderr.splitlines()[-1]

    retry = fetch(repo, dest, "--lfs-storage", str(cache))
    assert retry.returncode == 0, retry.stderr


def test_pointer_left_behind(tmp_path: Path) -> None:
    """A pointer git-lfs does not recognise (here a mangled oid, committed as a plain file) is never pulled:
    the snapshot would hold 130 bytes of text where vLLM expects weights. fetch refuses it by name."""
    files = standard_files()
    name = "model-00002-of-00002.safetensors"
    files[name] = pointer_text(files[name]).replace(b"sha256:", b"sha256:zz")
    repo = make_model_repo(tmp_path / "remote", files, lfs_patterns=("model-00001-*", "tokenizer.json"))
    dest = tmp_path / "model"
    assert_failed(fetch(repo, dest), dest, f"{name} is still a Git LFS pointer after `git lfs pull`")


def test_not_a_qwen3_reranker_is_refused_before_downloading_weights(tmp_path: Path) -> None:
    files = standard_files()
    files["config.json"] = json.dumps(
        {"architectures": ["BertForSequenceClassification"], "model_type": "bert"}
    ).encode()
    repo = make_model_repo(tmp_path / "remote", files)
    for shard in ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"):
        repo.lfs_object(shard).unlink()  # a weight download would fail: the config check must come first
    dest = tmp_path / "model"
    assert_failed(fetch(repo, dest), dest, "config.json describes model_type 'bert'")


def test_converted_sequence_classifier_is_refused(tmp_path: Path) -> None:
    """The serving overrides convert the original causal LM; an already-converted checkpoint is refused."""
    files = standard_files()
    files["config.json"] = json.dumps(
        {**QWEN3_CONFIG, "architectures": ["Qwen3ForSequenceClassification"]}
    ).encode()
    dest = tmp_path / "model"
    result = fetch(make_model_repo(tmp_path / "remote", files), dest)
    assert_failed(result, dest, "serving needs a Qwen3-Reranker checkpoint")


def test_tokenizer_without_the_classifier_tokens(tmp_path: Path) -> None:
    files = standard_files()
    tokenizer = json.loads(json.dumps(TOKENIZER))
    del tokenizer["model"]["vocab"]["yes"]
    files["tokenizer.json"] = json.dumps(tokenizer).encode()
    dest = tmp_path / "model"
    assert_failed(
        fetch(make_model_repo(tmp_path / "remote", files), dest), dest, "tokenizer.json has no token 'yes'"
    )


def test_repository_without_weights(tmp_path: Path) -> None:
    files = {k: v for k, v in standard_files().items() if "safetensors" not in k}
    dest = tmp_path / "model"
    assert_failed(
        fetch(make_model_repo(tmp_path / "remote", files), dest), dest, "has no safetensors weights"
    )


def test_unreachable_repository(tmp_path: Path) -> None:
    dest = tmp_path / "model"
    result = model_setup(
        "fetch", "--repo", (tmp_path / "nowhere").as_uri(), "--revision", "a" * 40, str(dest)
    )
    assert_failed(result, dest, "cannot clone file://")


def test_existing_destination_with_other_content_is_refused(repo: ModelRepo, tmp_path: Path) -> None:
    dest = tmp_path / "model"
    dest.mkdir()
    (dest / "keep-me").write_text("operator's file")
    result = fetch(repo, dest)
    assert result.returncode == 1
    assert "already exists and holds something else" in result.stderr.splitlines()[-1]
    assert (dest / "keep-me").read_text() == "operator's file"


def test_credentials_in_the_url_are_refused(tmp_path: Path) -> None:
    dest = tmp_path / "model"
    result = model_setup(
        "fetch", "--repo", "https://user:hf_secret@huggingface.co/x/y", "--revision", "a" * 40, str(dest)
    )
    assert_failed(result, dest, "the repository URL carries credentials")
    assert "hf_secret" not in result.stderr


def test_token_reaches_git_only_through_the_environment(repo: ModelRepo, tmp_path: Path) -> None:
    """HF_TOKEN is in no git command line, log line or manifest, yet git's credential machinery (which
    git-lfs also uses) hands it out."""
    token = "hf_Sup3rSecretTokenValue"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    argv_log = tmp_path / "git-argv.log"
    real_git = shutil.which("git")
    assert real_git is not None
    wrapper = bin_dir / "git"
    wrapper.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {argv_log}\nexec {real_git} "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    env = {"HF_TOKEN": token, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    dest = tmp_path / "model"
    result = fetch(repo, dest, env=env)
    assert result.returncode == 0, result.stderr
    assert "clone" in argv_log.read_text()
    assert token not in argv_log.read_text()
    assert token not in result.stderr + result.stdout
    assert token not in (dest / fetchlib.MANIFEST_NAME).read_text()

    env = fetchlib.git_env(
        {**os.environ, "HOME": str(tmp_path)}, token, url="https://huggingface.co/Qwen/Qwen3-Reranker-4B"
    )

    def fill(request: str) -> str:
        """What git's credential machinery answers (for another host: nothing, and no prompt)."""
        return subprocess.run(
            ["git", "credential", "fill"], input=request, env=env, capture_output=True, text=True, check=False
        ).stdout

    assert (
        f"password={token}"
        in fill("protocol=https\nhost=huggingface.co\npath=Qwen/Qwen3-Reranker-4B\n\n").splitlines()
    )
    assert token not in fill("protocol=https\nhost=cdn-lfs.example.com\n\n")


def test_token_file(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("hf_fromfile\n")
    assert fetchlib.read_token(token_file, {"HF_TOKEN": "hf_fromenv"}) == "hf_fromfile"
    assert fetchlib.read_token(None, {"HF_TOKEN": "hf_fromenv"}) == "hf_fromenv"
    assert fetchlib.read_token(None, {}) is None
    token_file.write_text("\n")
    with pytest.raises(fetchlib.FetchError, match="is empty"):
        fetchlib.read_token(token_file, {})


# --- ModelScope: <base>/models/<org>/<name>.git, branch master, its own commits or a tag -----------------

MS_REPO = "Qwen/Qwen3-Reranker-0.6B"  # what `--repo 0.6b` names: the size resolves on ModelScope too


@pytest.fixture
def modelscope(tmp_path: Path) -> tuple[Path, ModelRepo]:
    """A local hub laid out as ModelScope's (its base URL, and the repository it serves with tag v1.0)."""
    base = tmp_path / "modelscope"
    return base, make_modelscope_repo(base, MS_REPO, standard_files(), tag="v1.0")


def fetch_modelscope(base: Path, dest: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return model_setup(
        "fetch", "--source", "modelscope", "--hub-url", base.as_uri(), "--repo", "0.6b", *extra, str(dest)
    )


def test_modelscope_by_its_own_commit(modelscope: tuple[Path, ModelRepo], tmp_path: Path) -> None:
    """The size resolves to ModelScope's layout, cloned by branch master (the server's HEAD names a branch it
    lacks), and is verified file by file exactly as from Hugging Face."""
    base, repo = modelscope
    dest = tmp_path / "models" / "reranker"
    result = fetch_modelscope(base, dest, "--revision", repo.revision)
    assert result.returncode == 0, result.stderr
    url = f"{base.as_uri()}/models/{MS_REPO}.git"
    assert url == repo.url
    assert f"cloning {url}, branch master" in result.stderr
    assert {p.name for p in dest.iterdir()} == {*SERVED_FILES, fetchlib.MANIFEST_NAME}
    for name in SERVED_FILES:
        assert (dest / name).read_bytes() == (repo.path / name).read_bytes(), name
    manifest = json.loads((dest / fetchlib.MANIFEST_NAME).read_text())
    assert (manifest["repo"], manifest["url"], manifest["revision"]) == (MS_REPO, url, repo.revision)
    assert manifest["source"] == "modelscope"
    assert "tag" not in manifest
    assert [p.name for p in dest.parent.iterdir()] == ["reranker"]
    assert model_setup("verify", "--full", str(dest)).returncode == 0


def test_modelscope_by_tag_records_the_commit_and_the_tag(
    modelscope: tuple[Path, ModelRepo], tmp_path: Path
) -> None:
    base, repo = modelscope
    dest = tmp_path / "model"
    result = fetch_modelscope(base, dest, "--revision", "v1.0")
    assert result.returncode == 0, result.stderr
    assert f"verified {MS_REPO} @ {repo.revision} (tag v1.0)" in result.stderr
    manifest = json.loads((dest / fetchlib.MANIFEST_NAME).read_text())
    assert (manifest["revision"], manifest["tag"]) == (repo.revision, "v1.0")
    verified = model_setup("verify", str(dest))
    assert f"@ {repo.revision} (tag v1.0)" in verified.stdout

    again = fetch_modelscope(base, dest, "--revision", "v1.0")  # same tag: a no-op that re-verifies
    assert again.returncode == 0, again.stderr
    assert "already holds" in again.stderr
    by_sha = fetch_modelscope(base, dest, "--revision", repo.revision)  # the commit the tag named: the same
    assert by_sha.returncode == 0, by_sha.stderr
    assert "already holds" in by_sha.stderr


def test_modelscope_needs_a_revision(modelscope: tuple[Path, ModelRepo], tmp_path: Path) -> None:
    """No ModelScope commit is known to us, and Hugging Face's pins do not resolve there."""
    dest = tmp_path / "model"
    result = fetch_modelscope(modelscope[0], dest)
    assert_failed(result, dest, f"no pinned ModelScope revision for {MS_REPO}: ")
    assert "--revision (MODEL_REVISION)" in result.stderr.splitlines()[-1]


def test_modelscope_wrong_sha(modelscope: tuple[Path, ModelRepo], tmp_path: Path) -> None:
    """Hugging Face's pin for the same model is not a ModelScope commit."""
    base, repo = modelscope
    dest = tmp_path / "model"
    hf_pin = fetchlib.PINNED_REVISIONS[MS_REPO]
    result = fetch_modelscope(base, dest, "--revision", hf_pin)
    assert_failed(result, dest, f"revision {hf_pin} is not a commit in {repo.url}")


@pytest.mark.parametrize("revision", ["v9.9", "master", "22e6836"])
def test_modelscope_a_revision_that_is_no_tag(
    revision: str, modelscope: tuple[Path, ModelRepo], tmp_path: Path
) -> None:
    """A missing tag, a branch (it moves) and a short SHA are not pins."""
    base, repo = modelscope
    dest = tmp_path / "model"
    result = fetch_modelscope(base, dest, "--revision", revision)
    assert_failed(
        result, dest, f"tag {revision} is not in {repo.url} (a revision is a full commit SHA or a tag"
    )


def test_modelscope_missing_branch(tmp_path: Path) -> None:
    """A repository without ModelScope's master branch (here only main) cannot be cloned as ModelScope's."""
    base = tmp_path / "modelscope"
    repo = make_modelscope_repo(base, MS_REPO, standard_files(), branch="main")
    dest = tmp_path / "model"
    result = fetch_modelscope(base, dest, "--revision", repo.revision)
    assert_failed(result, dest, f"cannot clone {repo.url}: ")
    assert "master" in result.stderr.splitlines()[-1]


def test_modelscope_tampered_lfs_object(modelscope: tuple[Path, ModelRepo], tmp_path: Path) -> None:
    base, repo = modelscope
    corrupt(repo.lfs_object("model-00002-of-00002.safetensors"))
    dest = tmp_path / "model"
    result = fetch_modelscope(base, dest, "--revision", "v1.0")
    assert_failed(result, dest, "git lfs pull failed: ")
    assert "model-00002-of-00002.safetensors" in result.stderr.splitlines()[-1]
    assert "hash" in result.stderr.splitlines()[-1]


def test_tags_pin_only_on_modelscope(modelscope: tuple[Path, ModelRepo]) -> None:
    with pytest.raises(fetchlib.FetchError, match="full 40-character commit SHA, not a branch, tag"):
        fetchlib.resolve_source(modelscope[1].url, "v1.0")
    with pytest.raises(fetchlib.FetchError, match="full 40-character commit SHA or a tag"):
        fetchlib.resolve_source(modelscope[1].url, "../v1", source="modelscope")


def test_the_hugging_face_token_is_never_handed_to_modelscope(
    modelscope: tuple[Path, ModelRepo], tmp_path: Path
) -> None:
    """HF_TOKEN is Hugging Face's; a ModelScope token comes from --token-file, and reaches git only through
    its environment, as on Hugging Face."""
    base, _ = modelscope
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "git.log"
    real_git = shutil.which("git")
    assert real_git is not None
    wrapper = bin_dir / "git"
    wrapper.write_text(
        f'#!/bin/sh\nprintf "%s | token=%s\\n" "$*" "${{RERANK_FETCH_TOKEN:-none}}" >> {log}\n'
        f'exec {real_git} "$@"\n'
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    env = {"HF_TOKEN": "hf_NotForModelScope", "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    first = model_setup(
        "fetch", "--source", "modelscope", "--hub-url", base.as_uri(), "--repo", "0.6b",
        "--revision", "v1.0", str(tmp_path / "a"), env=env,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert "hf_NotForModelScope" not in log.read_text()
    assert "clone" in log.read_text()

    token_file = tmp_path / "ms-token"
    token_file.write_text("ms_FromTheFile\n")
    log.unlink()
    second = model_setup(
        "fetch", "--source", "modelscope", "--hub-url", base.as_uri(), "--repo", "0.6b", "--revision", "v1.0",
        "--token-file", str(token_file), str(tmp_path / "b"), env=env,
    )  # fmt: skip
    assert second.returncode == 0, second.stderr
    calls = log.read_text().splitlines()
    assert all(line.endswith("token=ms_FromTheFile") for line in calls), calls
    assert not any("ms_FromTheFile" in line.split(" | ")[0] for line in calls)  # in no command line
    assert "ms_FromTheFile" not in second.stderr + second.stdout


def test_the_source_defaults_to_rerank_model_source(
    modelscope: tuple[Path, ModelRepo], tmp_path: Path
) -> None:
    base, repo = modelscope
    dest = tmp_path / "model"
    env = {"RERANK_MODEL_SOURCE": "modelscope", "RERANK_HUB_URL": base.as_uri()}
    result = model_setup("fetch", "--repo", "0.6b", "--revision", "v1.0", str(dest), env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads((dest / fetchlib.MANIFEST_NAME).read_text())["url"] == repo.url


# --- verify: the entrypoint's start-up check -------------------------------------------------------------


@pytest.fixture
def fetched(repo: ModelRepo, tmp_path: Path) -> Path:
    dest = tmp_path / "fetched"
    result = fetch(repo, dest)
    assert result.returncode == 0, result.stderr
    return dest


def test_verify_accepts_the_tiny_test_model(model_dir: Path) -> None:
    result = model_setup("verify", str(model_dir))
    assert result.returncode == 0, result.stderr


def test_verify_reads_rerank_model_dir(fetched: Path) -> None:
    result = model_setup("verify", env={"RERANK_MODEL_DIR": str(fetched)})
    assert result.returncode == 0, result.stderr


def verify_error(directory: Path, *extra: str) -> str:
    result = model_setup("verify", *extra, str(directory))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("model_setup verify: error: ")
    return lines[0]


def test_verify_failures(fetched: Path, tmp_path: Path) -> None:
    assert "does not exist" in verify_error(tmp_path / "absent")

    shard = fetched / "model-00002-of-00002.safetensors"
    original = shard.read_bytes()
    shard.write_bytes(original[:-4])
    assert "bytes but the manifest says" in verify_error(fetched)

    shard.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))  # same size, one bit flipped
    assert model_setup("verify", str(fetched)).returncode == 0  # the quick check does not hash
    assert "does not match its sha256" in verify_error(fetched, "--full")

    shard.write_bytes(original)
    (fetched / fetchlib.MANIFEST_NAME).unlink()
    assert "has no .rerank-model.json" in verify_error(fetched)


def test_verify_catches_a_pointer_and_a_truncated_safetensors_even_with_a_matching_manifest(
    fetched: Path,
) -> None:
    """Someone rewrote the manifest over a bad directory: the content checks still refuse it."""
    shard = fetched / "model-00001-of-00002.safetensors"
    original = shard.read_bytes()
    shard.write_bytes(pointer_text(original))
    rewrite_manifest(fetched)
    assert "is a Git LFS pointer" in verify_error(fetched)

    shard.write_bytes(safetensors_bytes({"a": 300, "b": 5})[:-8])
    rewrite_manifest(fetched)
    assert "truncated or damaged" in verify_error(fetched)


def rewrite_manifest(directory: Path) -> None:
    manifest = json.loads((directory / fetchlib.MANIFEST_NAME).read_text())
    fetchlib.write_manifest(directory, repo=manifest["repo"], url=manifest["url"], revision="x", tool="test")


def corrupt(path: Path) -> None:
    """Flip bytes in the middle, keeping the size (what a bad disk or an interrupted copy leaves)."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4] = bytes(b ^ 0xFF for b in data[middle : middle + 4])
    path.chmod(0o644)
    path.write_bytes(bytes(data))


def test_git_helper_is_real(repo: ModelRepo) -> None:
    """Guard: the fixture repository really stores its weights in LFS (a pointer in git, the object aside)."""
    blob = git("show", f"{repo.revision}:model-00001-of-00002.safetensors", cwd=repo.path)
    assert blob.startswith("version https://git-lfs.github.com/spec/v1")
    assert repo.lfs_object("model-00001-of-00002.safetensors").is_file()


# --- quantised checkpoints ------------------------------------------------------------------------------

W8A8_GROUP = {
    "targets": ["Linear"],
    "weights": {"num_bits": 8, "type": "int", "strategy": "channel", "symmetric": True},
    "input_activations": {"num_bits": 8, "type": "int", "strategy": "token", "dynamic": True},
}


def _compressed_tensors(ignore: list[str], targets: list[str] | None = None) -> dict[str, object]:
    group = {**W8A8_GROUP, "targets": targets or ["Linear"]}
    return {"quant_method": "compressed-tensors", "config_groups": {"group_0": group}, "ignore": ignore}


@pytest.mark.parametrize(
    ("declared", "scheme", "lm_head_quantized"),
    [
        (_compressed_tensors(["lm_head"]), "compressed-tensors W8A8 int (lm_head kept)", False),
        (_compressed_tensors(["re:.*lm_head"]), "compressed-tensors W8A8 int (lm_head kept)", False),
        (_compressed_tensors([]), "compressed-tensors W8A8 int (lm_head quantised)", True),
        (_compressed_tensors([], ["re:.*lm_head"]), "compressed-tensors W8A8 int (lm_head quantised)", True),
        (_compressed_tensors([], ["re:.*proj$"]), "compressed-tensors W8A8 int (lm_head kept)", False),
        ({"quant_method": "awq", "bits": 4, "group_size": 128}, "AWQ W4A16 g128 (lm_head kept)", False),
        ({"quant_method": "gptq", "bits": 4, "group_size": 128}, "GPTQ W4A16 g128 (lm_head kept)", False),
        (
            {"quant_method": "gptq", "bits": 4, "group_size": 128, "lm_head": True},
            "GPTQ W4A16 g128 (lm_head quantised)",
            True,
        ),
        (
            {"quant_method": "fp8", "activation_scheme": "dynamic", "ignored_layers": ["lm_head"]},
            "FP8 W8A8, dynamic activations (lm_head kept)",
            False,
        ),
        (
            {"quant_method": "fp8", "activation_scheme": "static"},
            "FP8 W8A8, static activations (lm_head quantised)",
            True,
        ),
        (
            {"quant_method": "modelopt", "quant_algo": "NVFP4", "exclude_modules": ["lm_head"]},
            "ModelOpt NVFP4 (lm_head kept)",
            False,
        ),
    ],
    ids=[
        "ct-ignored",
        "ct-ignored-pattern",
        "ct-all-linear",
        "ct-targets-lm-head",
        "ct-projections-only",
        "awq",
        "gptq",
        "gptq-lm-head",
        "fp8-kept",
        "fp8-not-kept",
        "modelopt",
    ],
)
@pytest.mark.unit
def test_a_checkpoints_scheme_and_whether_it_quantises_lm_head(
    declared: dict[str, object], scheme: str, lm_head_quantized: bool
) -> None:
    found = fetchlib.checkpoint_quantization({**QWEN3_CONFIG, "quantization_config": declared})
    assert found is not None
    assert (found.scheme, found.lm_head_quantized) == (scheme, lm_head_quantized)


@pytest.mark.unit
def test_an_unquantised_checkpoint_has_no_scheme_and_an_unknown_one_is_refused() -> None:
    assert fetchlib.checkpoint_quantization(QWEN3_CONFIG) is None
    with pytest.raises(fetchlib.FetchError, match="quant_method 'bitsandbytes'; model_setup can check"):
        fetchlib.checkpoint_quantization(
            {**QWEN3_CONFIG, "quantization_config": {"quant_method": "bitsandbytes"}}
        )


def test_a_quantised_checkpoint_is_fetched_and_its_scheme_said(tmp_path: Path) -> None:
    files = standard_files()
    files["config.json"] = json.dumps(
        {**QWEN3_CONFIG, "quantization_config": _compressed_tensors(["lm_head"])}
    ).encode()
    dest = tmp_path / "model"
    result = fetch(make_model_repo(tmp_path / "remote", files), dest)
    assert result.returncode == 0, result.stderr
    assert "a quantised checkpoint: compressed-tensors W8A8 int (lm_head kept)" in result.stderr
    verified = model_setup("verify", str(dest))
    assert verified.returncode == 0, verified.stderr
    assert ", compressed-tensors W8A8 int (lm_head kept), " in verified.stdout


def test_a_checkpoint_with_a_quantised_lm_head_is_refused_before_its_weights(tmp_path: Path) -> None:
    """The score is read from lm_head's yes/no rows: a quantised lm_head is refused with the reason, after
    the config and before gigabytes of weights."""
    files = standard_files()
    files["config.json"] = json.dumps(
        {**QWEN3_CONFIG, "quantization_config": _compressed_tensors([])}
    ).encode()
    dest = tmp_path / "model"
    result = fetch(make_model_repo(tmp_path / "remote", files), dest)
    assert_failed(
        result,
        dest,
        "config.json quantises lm_head (compressed-tensors W8A8 int (lm_head quantised)): the reranker's "
        "score is read from lm_head's 'no' and 'yes' rows",
    )
    assert "pulling" not in result.stderr.split("config and tokenizer files")[-1]
