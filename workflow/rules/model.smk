rule prepare_base_model:
    input:
        script=script_path("prepare_base_model"),
    output:
        model=directory(layout.output("prepare_base_model", "model")),
    log:
        layout.log("prepare_base_model"),
    benchmark:
        layout.benchmark("prepare_base_model")
    threads: all_cores()
    resources:
        mem_mb=8000,
    params:
        source=lambda w: EXPERIMENTS.model_source_flags(w.model),
    shell:
        "python {input.script:q} {params.source} --out {output.model:q} --log-file {log:q}"
