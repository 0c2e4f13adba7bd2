"""`snakemake --lint`, less the one lint this workflow answers otherwise: `make lint` runs this.

Snakemake asks every rule for a conda environment or a container. Here one locked environment serves every
step (the lockfiles `make lock` writes, installed by `make setup`, or by conda as a whole from
environment.yml: README, "With conda"), so per-rule `conda:` directives would only name that same file, and
`--use-conda` cannot be tested where no conda channel is reached. Every other lint fails the check.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ANSWERED = {"Specify a conda environment or container for each rule."}


def main() -> int:
    snakemake = str(Path(sys.executable).parent / "snakemake")
    result = subprocess.run([snakemake, "--lint"], capture_output=True, text=True, check=False)
    said = result.stdout + result.stderr
    titles = re.findall(r"^\s+\* (.+?):?$", said, flags=re.MULTILINE)
    others = [title for title in titles if title.rstrip(":") not in ANSWERED]
    if others or (result.returncode != 0 and not titles):
        print(said, file=sys.stderr)
        return 1
    print(f"snakemake --lint: clean ({len(titles)} rules without a per-rule environment, by design)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
