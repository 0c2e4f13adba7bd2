#!/usr/bin/env bash
# The code sandbox's mount-namespace layer (docs/sandbox.md) needs bubblewrap (`bwrap`). `make test` runs this
# first. As root on Debian or Ubuntu (as in CI) it installs Debian's bubblewrap when it is missing, the way
# tests/slurm/harness.sh installs SLURM. It stays installed: it changes nothing for other programs, and
# `make run` then gets the namespace layer too (uninstall with `apt-get purge bubblewrap`). Without root it
# only says so; the namespace tests then skip, naming the reason.
set -euo pipefail

APT_OPTIONS=(-o DPkg::Lock::Timeout=300 -o APT::Get::Assume-Yes=true -qq)

say() { echo "install-bubblewrap: $*" >&2; }

if command -v bwrap >/dev/null; then
	exit 0
fi
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
	say "bwrap is missing and installing it needs root and apt-get: the sandbox's namespace tests will skip"
	exit 0
fi
say "installing Debian's bubblewrap (--no-install-recommends)"
apt-get "${APT_OPTIONS[@]}" update
DEBIAN_FRONTEND=noninteractive apt-get "${APT_OPTIONS[@]}" install --no-install-recommends bubblewrap >/dev/null
command -v bwrap >/dev/null || {
	say "error: bwrap is still missing after the install"
	exit 1
}
