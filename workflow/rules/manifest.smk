rule manifest:
    input:
        unpack(manifest_inputs),
        script=script_path("write_manifest"),
    output:
        "results/{experiment}/manifest.json",
    log:
        "results/logs/{experiment}/write_manifest.log",
    conda:
        "../../environment.yml"
    params:
        recipe=resolved_recipe,
    shell:
        "python {input.script:q} --experiment {wildcards.experiment:q}"
        " --recipe-json {params.recipe:q} --model {input.model:q}"
        " --inputs {input.sources:q} --outputs {input.products:q}"
        " --benchmarks {input.timings:q}"
        " --output {output:q} --log-file {log:q}"
