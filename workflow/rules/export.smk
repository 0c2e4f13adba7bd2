# In the default DAG (each experiment's manifest hashes its products, the merged model among them): the
# product a researcher ships is the merged model, and the check that it equals base + adapter belongs to
# every run. Alone: snakemake --cores all results/<experiment>/export/merge_check.json
rule export:
    input:
        unpack(export_inputs),
        script=script_path("export_model"),
    output:
        merged=directory(layout.output("export", "merged")),
        check=layout.output("export", "check"),
    log:
        layout.log("export"),
    benchmark:
        layout.benchmark("export")
    threads: all_cores()
    resources:
        mem_mb=8000,
    params:
        license=lambda w: experiment(w).recipe["model"].get("license", "unknown"),
    shell:
        "python {input.script:q} --experiment {wildcards.experiment:q} --model {input.model:q}"
        " --adapter {input.adapter:q} --eval {input.eval:q} --recipe {input.recipe:q}"
        " --convert-summary {input.convert_summary:q} --metrics {input.metrics:q}"
        " --license {params.license:q} --output-dir {output.merged:q} --check {output.check:q}"
        " --log-file {log:q}"
