"""The wheel is the unit we ship: built from what the image's build context holds, installed (not editable)
into a clean venv outside the checkout, it holds every file of `gateway` and `model_setup` and every module
imports from it, not from the source tree.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

from tests.support.procs import ROOT

# Not in the `unit` tier although it needs no server: building the wheel and installing it into a fresh
# venv takes about 20 s, and the tier is kept under a minute.

PACKAGES = ("gateway", "model_setup")
# What the Containerfile's wheel stage copies (tests/test_containerfile.py holds the context to it).
CONTEXT_FILES = ("pyproject.toml", "README.md", *PACKAGES)


def source_files(root: Path) -> set[str]:
    """Every file the packages hold in the source tree, as wheel paths (bytecode caches aside)."""
    return {
        path.relative_to(root).as_posix()
        for package in PACKAGES
        for path in (root / package).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


def modules(files: set[str]) -> list[str]:
    return sorted(
        name.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        for name in files
        if name.endswith(".py")
    )


def build_wheel(context: Path, out: Path) -> Path:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(out),
         str(context)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (wheel,) = out.glob("product_rerank-*.whl")
    return wheel


def wheel_files(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return {name for name in archive.namelist() if name.split("/")[0] in PACKAGES}


def copy_context(dest: Path) -> Path:
    for name in CONTEXT_FILES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, dest / name)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    context = copy_context(tmp_path_factory.mktemp("context"))
    return build_wheel(context, tmp_path_factory.mktemp("dist"))


def test_the_wheel_holds_every_file_of_the_packages(wheel: Path) -> None:
    """Packages are found, not listed: every module, data file and subpackage of the tree ships."""
    missing = source_files(ROOT) - wheel_files(wheel)
    assert missing == set(), f"the wheel lacks {sorted(missing)}"


def test_a_subpackage_left_out_turns_the_check_red(tmp_path: Path) -> None:
    """Control: a hand-kept package list that forgets a subpackage (as one once did) fails the check."""
    context = copy_context(tmp_path)
    pyproject = context / "pyproject.toml"
    text = pyproject.read_text()
    found = '[tool.setuptools.packages.find]\ninclude = ["gateway*", "model_setup*"]\n'
    assert found in text
    listed = sorted({name.rsplit("/", 1)[0].replace("/", ".") for name in source_files(ROOT)})
    listed.remove("gateway.observe")
    pyproject.write_text(text.replace(found, f"[tool.setuptools]\npackages = {json.dumps(listed)}\n"))
    missing = source_files(ROOT) - wheel_files(build_wheel(context, tmp_path / "dist"))
    assert missing, "the check did not notice a missing subpackage"
    assert all(name.startswith("gateway/observe/") for name in missing), missing


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean venv with the wheel installed as a shop's pip installs it (no editable finder, no checkout).

    Its dependencies come from the test venv's site-packages, appended after its own through a path file:
    the project's own modules can only come from the wheel.
    """
    env_dir = tmp_path_factory.mktemp("shipped") / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", str(wheel)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    )  # fmt: skip
    (site / "zz-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def test_every_module_imports_from_the_installed_wheel(installed: Path, tmp_path: Path) -> None:
    names = modules(source_files(ROOT))
    script = (
        "import importlib, json, sys\n"
        "print(json.dumps({n: importlib.import_module(n).__file__ for n in sys.argv[1:]}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    result = subprocess.run(
        [str(installed), "-c", script, *names], cwd=tmp_path, env=env, capture_output=True, text=True,
        check=False, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    files = json.loads(result.stdout.strip().splitlines()[-1])
    assert sorted(files) == names
    outside = {
        name: file for name, file in files.items() if not file.startswith(str(installed.parent.parent))
    }
    assert outside == {}, "modules imported from outside the installed wheel"
