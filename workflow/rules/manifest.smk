rule manifest:
    input:
        unpack(manifest_inputs),
        script=script_path("write_manifest"),
        train_summary=layout.output("train_lora", "summary"),
    output:
        **layout.outputs("manifest"),
    log:
        layout.log("manifest"),
    params:
        # The recipe as validated, schema defaults included.
        recipe=lambda w: json.dumps(
            experiment(w).recipe, sort_keys=True, ensure_ascii=False
        ),
    shell:
        "python {input.script:q} --experiment {wildcards.experiment:q}"
        " --recipe-json {params.recipe:q} --model {input.model:q}"
        " --inputs {input.sources:q} --outputs {input.products:q}"
        " --benchmarks {input.timings:q} --lockfiles {input.lockfiles:q} --train-summary {input.train_summary:q}"
        " --output {output.manifest:q} --log-file {log:q}"
