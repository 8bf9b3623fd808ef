"""Packaging a user can trust: licence, changelog, py.typed, one version source, metadata,
install advice that works from a source checkout."""
import re
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

import pylmem

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]


def test_license_file_matches_pyproject():
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "pylmem developers" in text
    assert PROJECT["license"] == {"text": "MIT"}
    assert "License :: OSI Approved :: MIT License" in PROJECT["classifiers"]


def test_version_written_once():
    hits = re.findall(r"0\.\d+\.\d+", "\n".join(
        p.read_text() for p in (ROOT / "pylmem").rglob("*.py")))
    assert hits == [], hits                               # no version literal in the code
    assert (ROOT / "pyproject.toml").read_text().count("version =") == 1
    src = (ROOT / "pylmem" / "_version.py").read_text()
    assert "importlib.metadata" in src
    assert pylmem.__version__ in (PROJECT["version"], "0+unknown")


def test_changelog_names_the_version():
    text = (ROOT / "CHANGELOG.md").read_text()
    assert f"## [{PROJECT['version']}]" in text and "## [Unreleased]" in text


def test_py_typed_shipped():
    assert (ROOT / "pylmem" / "py.typed").exists()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["pylmem"]


def test_metadata():
    assert PROJECT["authors"] == [{"name": "pylmem developers"}]
    assert {"Homepage", "Documentation", "Source", "Changelog"} <= set(PROJECT["urls"])
    assert len(PROJECT["keywords"]) >= 3
    assert any(c.startswith("Programming Language :: Python :: 3.") for c in PROJECT["classifiers"])
    extras = PROJECT["optional-dependencies"]
    assert {"dask", "test", "docs", "arrow"} <= set(extras)
    assert any(d.startswith("pyarrow") for d in extras["arrow"])
    assert any(d.startswith("mkdocs") for d in extras["docs"])


def test_install_advice_works_from_a_checkout():
    from pylmem.io.readers import ARROW_EXTRA
    from pylmem.scaleout.reduce import DASK_EXTRA

    assert 'python3 -m pip install ".[dask]"' in DASK_EXTRA
    assert 'python3 -m pip install ".[arrow]"' in ARROW_EXTRA
    for md in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        text = md.read_text()
        # bare `pip install pylmem[...]` fails in a shell that globs, and from a checkout
        assert not re.search(r"pip install pylmem\[", text), md.name


@pytest.mark.parametrize("name", ["LICENSE", "CHANGELOG.md", "README.md", "mkdocs.yml"])
def test_files_exist(name):
    assert (ROOT / name).exists()
