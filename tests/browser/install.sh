#!/usr/bin/env bash
# Debian's headless browser for the report's browser test (tests/test_report_page.py): chromium and its
# chromedriver, installed with apt when missing. `make test` runs this first; CI runs as root on a fresh machine.
# Unlike the SLURM harness it leaves the packages installed: they change nothing else on the machine.
set -euo pipefail

if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
	exit 0
fi
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
	echo "tests/browser/install.sh: needs chromium and chromium-driver; install them as root" \
		"(apt-get install chromium chromium-driver), or run make test SKIP_BROWSER=1" >&2
	exit 1
fi
echo "tests/browser/install.sh: installing chromium chromium-driver (--no-install-recommends)" >&2
apt-get -o DPkg::Lock::Timeout=300 -qq update
DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 -qq -y install --no-install-recommends \
	chromium chromium-driver >/dev/null
