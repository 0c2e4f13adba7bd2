rule report:
    input:
        unpack(report_inputs),
        script=script_path("make_report"),
    output:
        markdown="results/{experiment}/report/report.md",
        html=report(
            "results/{experiment}/report/report.html",
            caption="../report/report.rst",
            category="{experiment}",
            labels={"experiment": "{experiment}", "figure": "report"},
        ),
        metrics=report(
            "results/{experiment}/report/metrics.csv",
            caption="../report/metrics.rst",
            category="{experiment}",
            labels={"experiment": "{experiment}", "figure": "base vs tuned metrics"},
        ),
        curve=report(
            "results/{experiment}/report/loss_curve.png",
            caption="../report/loss_curve.rst",
            category="{experiment}",
            labels={"experiment": "{experiment}", "figure": "training curves"},
        ),
        generations=report(
            "results/{experiment}/report/generations.csv",
            caption="../report/generations.rst",
            category="{experiment}",
            labels={"experiment": "{experiment}", "figure": "probe answers"},
        ),
        eval_answers=report(
            "results/{experiment}/report/eval_answers.csv",
            caption="../report/eval_answers.rst",
            category="{experiment}",
            labels={"experiment": "{experiment}", "figure": "eval answers"},
        ),
        experiment="results/{experiment}/report/experiment.json",
    log:
        "results/logs/{experiment}/make_report.log",
    benchmark:
        "results/benchmarks/{experiment}/make_report.tsv"
    conda:
        "../../environment.yml"
    params:
        settings=experiment_settings,
        manifest="results/{experiment}/manifest.json",
    shell:
        "python {input.script:q} --experiment {wildcards.experiment:q}"
        " --recipe {input.recipe:q} --settings {params.settings:q}"
        " --model-source {input.model:q}/source.json"
        " --convert-summary {input.convert_summary:q} --split-summary {input.split_summary:q}"
        " --history {input.history:q} --train-summary {input.train_summary:q}"
        " --base-metrics {input.base_metrics:q} --tuned-metrics {input.tuned_metrics:q}"
        " --base-scores {input.base_scores:q} --tuned-scores {input.tuned_scores:q}"
        " --base-generations {input.base_generations:q} --tuned-generations {input.tuned_generations:q}"
        " --base-eval-answers {input.base_eval_answers:q}"
        " --tuned-eval-answers {input.tuned_eval_answers:q}"
        " --markdown {output.markdown:q} --html {output.html:q} --metrics-csv {output.metrics:q}"
        " --curve {output.curve:q} --generations-csv {output.generations:q}"
        " --eval-answers-csv {output.eval_answers:q} --experiment-json {output.experiment:q}"
        " --manifest {params.manifest:q} --log-file {log:q}"


rule summary:
    input:
        unpack(summary_inputs),
        script=script_path("make_summary"),
    output:
        csv=report(
            SUMMARY["csv"],
            caption="../report/summary.rst",
            category="summary",
            labels={"table": "CSV"},
        ),
        markdown=SUMMARY["md"],
        latex=report(
            SUMMARY["tex"],
            caption="../report/summary.rst",
            category="summary",
            labels={"table": "LaTeX tabular"},
        ),
        html=report(
            SUMMARY["html"],
            caption="../report/summary.rst",
            category="summary",
            labels={"table": "table"},
        ),
    log:
        "results/logs/summary/make_summary.log",
    benchmark:
        "results/benchmarks/summary/make_summary.tsv"
    conda:
        "../../environment.yml"
    shell:
        "python {input.script:q} --experiment-json {input.experiment:q}"
        " --metrics-csv {input.metrics:q} --csv {output.csv:q} --markdown {output.markdown:q}"
        " --latex {output.latex:q} --html {output.html:q} --log-file {log:q}"
