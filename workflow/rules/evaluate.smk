rule evaluate:
    input:
        unpack(evaluation_inputs),
        script=script_path("evaluate"),
    output:
        metrics="results/{experiment}/eval/{which}/metrics.json",
        generations="results/{experiment}/eval/{which}/generations.jsonl",
    log:
        "results/logs/{experiment}/evaluate.{which}.log",
    benchmark:
        "results/benchmarks/{experiment}/evaluate.{which}.tsv"
    conda:
        "../../environment.yml"
    threads: all_cores()
    resources:
        mem_mb=8000,
    params:
        adapter=adapter_flag,
        settings=evaluation_flags,
    shell:
        "python {input.script:q} --model {input.model:q} {params.adapter}"
        " --eval {input.eval:q} --metrics {output.metrics:q} --generations {output.generations:q}"
        " {params.settings} --log-file {log:q}"
