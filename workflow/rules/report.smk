rule report:
    input:
        unpack(report_inputs),
        script=script_path("make_report"),
    output:
        markdown="results/{experiment}/report/report.md",
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
    log:
        "results/logs/{experiment}/make_report.log",
    benchmark:
        "results/benchmarks/{experiment}/make_report.tsv"
    conda:
        "../../environment.yml"
    params:
        manifest="results/{experiment}/manifest.json",
    shell:
        "python {input.script:q} --experiment {wildcards.experiment:q}"
        " --recipe {input.recipe:q} --model-source {input.model:q}/source.json"
        " --convert-summary {input.convert_summary:q} --split-summary {input.split_summary:q}"
        " --history {input.history:q} --train-summary {input.train_summary:q}"
        " --base-metrics {input.base_metrics:q} --tuned-metrics {input.tuned_metrics:q}"
        " --base-generations {input.base_generations:q} --tuned-generations {input.tuned_generations:q}"
        " --markdown {output.markdown:q} --metrics-csv {output.metrics:q} --curve {output.curve:q}"
        " --generations-csv {output.generations:q} --manifest {params.manifest:q}"
        " --log-file {log:q}"
