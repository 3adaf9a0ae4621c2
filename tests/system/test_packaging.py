"""Packaging: the installed versions are the pinned ones CI tests, every dependency is pinned,
test-only clients are dev dependencies, and a wheel installed elsewhere can migrate."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from sqlalchemy import create_engine, text

ROOT = Path(__file__).parents[2]
CONSTRAINTS = ROOT / "constraints.txt"
# Imported only by tests and bench: the platform itself must run without them.
DEV_ONLY = {"hl7", "authlib", "pytest", "playwright", "moto", "faker"}
BUILD_LITTER = ("__pycache__", "*.egg-info", "build")


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"constraints.txt pins exact versions only: {line!r}"
            pins[canonicalize_name(name)] = version.strip()
    return pins


def test_installed_versions_are_the_pinned_ones() -> None:
    drift = {}
    for name, pinned in _pins().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = "not installed"
        if installed != pinned:
            drift[name] = f"{installed} installed, {pinned} pinned"
    assert drift == {}, "the environment is not the one CI tests: run `make install`"


def _requirements(name: str, extras: set[str]) -> list[Requirement]:
    found = []
    for line in metadata.requires(name) or []:
        req = Requirement(line)
        if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in extras | {""}):
            found.append(req)
    return found


def test_every_dependency_is_pinned() -> None:
    """Adding a dependency to pyproject.toml without `make constraints` is caught here."""
    pins = _pins()
    seen: set[str] = set()
    todo: list[tuple[str, set[str]]] = [("enrs", {"dev"})]
    unpinned = []
    while todo:
        name, extras = todo.pop()
        for req in _requirements(name, extras):
            dep = canonicalize_name(req.name)
            if dep not in pins:
                unpinned.append(dep)
            key = f"{dep}[{','.join(sorted(req.extras))}]"
            if key not in seen:
                seen.add(key)
                todo.append((dep, set(req.extras)))
    assert sorted(set(unpinned)) == []


def test_test_clients_are_dev_dependencies_only() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = {canonicalize_name(Requirement(r).name) for r in project["dependencies"]}
    dev = {canonicalize_name(Requirement(r).name) for r in project["optional-dependencies"]["dev"]}
    assert {"hl7", "authlib"} <= dev
    assert runtime & DEV_ONLY == set()
    imported = set()
    for path in (ROOT / "src").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                imported |= {(a.name.split(".")[0], path.name) for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add((node.module.split(".")[0], path.name))
    assert {(m, f) for m, f in imported if m in DEV_ONLY} == set()


def test_a_wheel_installed_elsewhere_migrates(tmp_path: Path) -> None:
    """`pip install .` or a wheel has no repository around it: the migrations are in it."""
    tree = tmp_path / "tree"  # a copy: building in the work tree would leave build/ there
    shutil.copytree(ROOT / "src", tree / "src", ignore=shutil.ignore_patterns(*BUILD_LITTER))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tree / name)
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(tree), "-w", str(dist)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = dist.glob("enrs-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    database = tmp_path / "wheel.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENRS_")}
    env.update(
        PYTHONPATH=str(site),
        ENRS_DATA_DIR=str(tmp_path / "var"),
        ENRS_DATABASE_URL=f"sqlite:///{database}",
    )
    where = subprocess.run(
        [sys.executable, "-c", "import enrs; print(enrs.__file__)"],
        env=env,
        cwd=elsewhere,
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(where.stdout.strip()).is_relative_to(site)  # the wheel's code, not the tree's
    done = subprocess.run(
        [sys.executable, "-m", "enrs", "migrate"],
        env=env,
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    engine = create_engine(f"sqlite:///{database}")
    with engine.connect() as conn:
        version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
    engine.dispose()
    assert version == _head_revision()


def _head_revision() -> str:
    from alembic.script import ScriptDirectory

    from enrs.kit.migrate import alembic_config

    return str(ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head())
