from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


# common.smk puts the interpreter running Snakemake first on PATH, for the rules' `python`.
envvars:
    "PATH",


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/model.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/export.smk"
include: "workflow/rules/manifest.smk"


# A cluster run ends with Snakemake's report (src/alpaca_lora/hooks.py says why not --report-after-run).
onsuccess:
    report_after_cluster_run(workflow.local_exec, sys.argv, logger)


rule all:
    input:
        EXPERIMENTS.targets(),
