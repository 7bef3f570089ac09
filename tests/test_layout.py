"""The package map is written once, in gateway/__init__.py's docstring, and names every module there is."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import gateway

pytestmark = pytest.mark.unit

PACKAGE = Path(gateway.__file__).parent


def test_the_package_docstring_names_every_module_and_subpackage() -> None:
    """A module added without a line in the map (or a map line left after its module went) fails here."""
    doc = re.sub(r"tests/\S+", "", gateway.__doc__ or "")  # the tests' own paths are not modules of the map
    modules = {p.name for p in PACKAGE.iterdir() if p.suffix in (".py", ".lua") and p.name != "__init__.py"}
    packages = {f"{p.name}/" for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    named = set(re.findall(r"\b([a-z_0-9]+\.(?:py|lua))\b", doc)) | set(re.findall(r"\b([a-z_]+/)", doc))
    assert modules | packages <= named, f"not in the map: {sorted((modules | packages) - named)}"
    assert named <= modules | packages, f"in the map, but gone: {sorted(named - modules - packages)}"


def test_the_readme_points_to_the_map_instead_of_copying_it() -> None:
    readme = (PACKAGE.parent / "README.md").read_text()
    layout = readme[readme.index("Layout: `gateway/`") :].split("\n\n", 1)[0]
    assert "gateway/__init__.py" in layout
    assert not re.search(r"`[a-z_]+\.py`", layout.split("`model_setup/`")[0]), "gateway modules listed again"
