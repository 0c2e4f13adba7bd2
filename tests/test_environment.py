"""The locked environment: the lockfiles `make lock` writes are in step with pyproject.toml, and hashed.

Offline: it re-resolves nothing (that needs the package index), it checks that every pin declared in
pyproject.toml (and requirements-nodeps.in) is locked at that version, that the runtime lock is the dev lock's
runtime part, and that every locked file carries a hash, as `pip install --require-hashes` demands.
"""

from __future__ import annotations

import re
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from alpaca_lora.lockfiles import pins
from conftest import ROOT

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def declared(*groups: str) -> dict[str, str]:
    """Direct dependencies of pyproject.toml (the runtime ones, plus the named extras): name -> version."""
    lines = PROJECT["dependencies"] + [
        line for group in groups for line in PROJECT["optional-dependencies"][group]
    ]
    found = {}
    for line in lines:
        requirement = Requirement(line)
        (specifier,) = requirement.specifier  # every direct dependency is pinned with ==
        assert specifier.operator == "==", f"pyproject.toml: {line}: pin it with =="
        found[canonicalize_name(requirement.name)] = specifier.version
    return found


def assert_locked(wanted: dict[str, str], lock: str) -> None:
    locked = pins(ROOT / lock)
    stale = {
        name: (version, locked.get(name))
        for name, version in wanted.items()
        if name not in locked or Version(locked[name]).public != Version(version).public
    }
    assert not stale, (
        f"{lock} is not in step with what is declared (declared, locked): {stale}; run `make lock`"
    )


def test_the_runtime_lock_pins_every_runtime_dependency():
    assert_locked(declared(), "requirements.txt")


def test_the_dev_lock_pins_runtime_trackers_and_tools():
    assert_locked(declared(*PROJECT["optional-dependencies"]), "requirements-dev.txt")


def test_the_runtime_lock_is_the_runtime_part_of_the_dev_lock():
    runtime, dev = pins(ROOT / "requirements.txt"), pins(ROOT / "requirements-dev.txt")
    assert {name: dev.get(name) for name in runtime} == runtime


def test_the_embedded_models_lock_pins_its_package():
    wanted = {}
    for line in (ROOT / "requirements-nodeps.in").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            requirement = Requirement(line)
            wanted[canonicalize_name(requirement.name)] = next(iter(requirement.specifier)).version
    assert wanted and pins(ROOT / "requirements-nodeps.txt") == wanted


@pytest.mark.parametrize("lock", ["requirements.txt", "requirements-dev.txt", "requirements-nodeps.txt"])
def test_every_locked_package_has_a_hash(lock):
    text = (ROOT / lock).read_text(encoding="utf-8")
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2])  # after uv's two header lines
    unhashed = [block.split()[0] for block in blocks if "--hash=sha256:" not in block]
    assert pins(ROOT / lock) and not unhashed, f"{lock}: no hash for {unhashed}"
