rule prepare_base_model:
    input:
        script=script_path("prepare_base_model"),
    output:
        directory("results/models/{model}"),
    log:
        "results/logs/models/{model}/prepare_base_model.log",
    benchmark:
        "results/benchmarks/models/{model}/prepare_base_model.tsv"
    conda:
        "../../environment.yml"
    threads: workflow.cores
    resources:
        mem_mb=8000,
    params:
        source=model_source_flags,
    shell:
        "python {input.script:q} {params.source} --out {output:q} --log-file {log:q}"
