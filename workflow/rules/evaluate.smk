rule evaluate:
    input:
        unpack(evaluation_inputs),
        script=script_path("evaluate"),
    output:
        metrics="results/{experiment}/eval/{which}/metrics.json",
        generations="results/{experiment}/eval/{which}/generations.jsonl",
        eval_answers="results/{experiment}/eval/{which}/eval_answers.jsonl",
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
        " --eval-answers {output.eval_answers:q}"
        " {params.settings} --log-file {log:q}"


rule score_answers:
    input:
        eval_answers="results/{experiment}/eval/{which}/eval_answers.jsonl",
        probe_answers="results/{experiment}/eval/{which}/generations.jsonl",
        probes=probes_file,
        script=script_path("score_answers"),
        sandbox=script_path("sandbox"),
    output:
        "results/{experiment}/eval/{which}/scores.json",
    log:
        "results/logs/{experiment}/score_answers.{which}.log",
    benchmark:
        "results/benchmarks/{experiment}/score_answers.{which}.tsv"
    conda:
        "../../environment.yml"
    params:
        settings=scoring_flags,
    shell:
        "python {input.script:q} --eval-answers {input.eval_answers:q}"
        " --probe-answers {input.probe_answers:q} --probes {input.probes:q}"
        " --scores {output:q} {params.settings} --log-file {log:q}"
