rule evaluate:
    input:
        unpack(evaluation_inputs),
        script=script_path("evaluate"),
    output:
        **layout.outputs("evaluate"),
    log:
        layout.log("evaluate"),
    benchmark:
        layout.benchmark("evaluate")
    threads: all_cores()
    resources:
        mem_mb=8000,
    params:
        adapter=lambda w, input: (
            f"--adapter {shlex.quote(input.adapter)}" if w.which == "tuned" else ""
        ),
        settings=lambda w: EXPERIMENTS.evaluation_flags(w.experiment),
    shell:
        "python {input.script:q} --model {input.model:q} {params.adapter}"
        " --eval {input.eval:q} --metrics {output.metrics:q} --generations {output.generations:q}"
        " --eval-answers {output.eval_answers:q} --humaneval-answers {output.humaneval_answers:q}"
        " {params.settings} --log-file {log:q}"


rule score_answers:
    input:
        eval_answers=layout.output("evaluate", "eval_answers"),
        probe_answers=layout.output("evaluate", "generations"),
        humaneval_answers=layout.output("evaluate", "humaneval_answers"),
        probes=lambda w: experiment(w).recipe["evaluation"]["probes"],
        script=script_path("score_answers"),
        sandbox=package_path("sandbox"),
    output:
        **layout.outputs("score_answers"),
    log:
        layout.log("score_answers"),
    benchmark:
        layout.benchmark("score_answers")
    params:
        settings=lambda w: EXPERIMENTS.scoring_flags(w.experiment),
    shell:
        "python {input.script:q} --eval-answers {input.eval_answers:q}"
        " --probe-answers {input.probe_answers:q} --probes {input.probes:q}"
        " --humaneval-answers {input.humaneval_answers:q}"
        " --scores {output.scores:q} --humaneval-results {output.humaneval:q} {params.settings} --log-file {log:q}"


rule lm_eval:
    input:
        unpack(lm_eval_inputs),
        script=script_path("run_lm_eval"),
        harness=package_path("lm_harness"),
    output:
        results=layout.output("lm_eval", "results"),
        tasks=directory(layout.output("lm_eval", "tasks")),
    log:
        layout.log("lm_eval"),
    benchmark:
        layout.benchmark("lm_eval")
    threads: all_cores()
    resources:
        mem_mb=8000,
    params:
        adapter=lambda w, input: (
            f"--adapter {shlex.quote(input.adapter)}" if w.which == "tuned" else ""
        ),
        settings=lambda w: EXPERIMENTS.lm_eval_flags(w.experiment),
    shell:
        "python {input.script:q} --model {input.model:q} {params.adapter} --eval {input.eval:q}"
        " {params.settings} --tasks-dir {output.tasks:q} --results {output.results:q} --log-file {log:q}"
