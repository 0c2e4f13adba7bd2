"""The locked environment: the lockfiles `make lock` writes (uv, with hashes) and what they pin.

pyproject.toml declares the direct dependencies; requirements.txt locks the runtime, requirements-dev.txt the
runtime plus the trackers and the development tools (what `make setup` installs), requirements-nodeps.txt
the embedded model's package. write_manifest.py records their hashes and how the installed packages differ
from the lock; tests/test_environment.py checks that the locks are in step with pyproject.toml.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

from packaging.utils import canonicalize_name
from packaging.version import Version

LOCKFILES = ("requirements.txt", "requirements-dev.txt", "requirements-nodeps.txt")
# What a run needs: the manifest checks the installed packages against these (the dev lock adds only tools).
RUNTIME_LOCKS = ("requirements.txt", "requirements-nodeps.txt")
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")


def pins(path: str | Path) -> dict[str, str]:
    """Normalised package name -> pinned version, for every requirement line of a lockfile."""
    found = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if match := _PIN.match(line):
            found[canonicalize_name(match.group(1))] = match.group(2)
    return found


def differences_from_lock(lock: dict[str, str]) -> dict[str, dict]:
    """Locked packages missing or at another version in this interpreter's environment."""
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    return {
        name: {"locked": version, "installed": installed.get(name)}
        for name, version in sorted(lock.items())
        if installed.get(name) is None or Version(installed[name]) != Version(version)
    }


if __name__ == "__main__":
    from alpaca_lora.common import module_help

    module_help(
        __doc__ + "\nA library for the step scripts, the workflow and the tests: nothing to run."
    ).parse_args()
