"""What the workflow does when a run ends: the Snakefile's onsuccess handler.

report_after_cluster_run  ends a run on a cluster executor (SLURM) with Snakemake's HTML report,
                          results/report.html; a local run returns at once, since `make run` writes
                          the report itself. A report that cannot be built is a warning naming the
                          command to build it later, never a failed run.

Used by workflow/Snakefile (onsuccess) and tests/test_workflow.py.
"""

from __future__ import annotations

import subprocess
import sys

from alpaca_lora.layout import WORKFLOW_REPORT


def report_after_cluster_run(local: bool, argv: list[str], logger) -> bool:
    """End a cluster run (any executor but the local one) with Snakemake's HTML report, as --report-after-run
    would; True when it was written. Not that flag: Snakemake 9.27 also builds its report after dry runs and
    partial runs (--until, a target) and fails there. Snakemake calls onsuccess after real, successful runs
    only (not in a dry run, not inside a job), and a partial run's report that cannot be built is a warning
    with the command, never a failed run. A local run needs none: `make run` writes the report itself."""
    if local:
        return False
    command = [sys.executable, "-m", "snakemake", *argv[1:], "--report", WORKFLOW_REPORT]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode == 0:
        logger.info(f"Snakemake's report of this run: {WORKFLOW_REPORT}")
        return True
    reason = (result.stderr.strip() or result.stdout.strip()).splitlines()[-1:] or ["no message"]
    logger.warning(
        f"Snakemake's report was not written ({reason[0]}); once every result exists: "
        f"snakemake {' '.join(argv[1:])} --report {WORKFLOW_REPORT}"
    )
    return False


if __name__ == "__main__":
    from alpaca_lora.common import module_help

    module_help(__doc__ + "\nA library: nothing to run.").parse_args()
