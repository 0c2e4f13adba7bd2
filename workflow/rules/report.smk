rule report:
    input:
        unpack(report_inputs),
        script=script_path("make_report"),
        renderer=package_path("document"),
    output:
        markdown=layout.output("report", "markdown"),
        html=report(
            layout.output("report", "html"),
            caption="../report/report.rst",
            category="{experiment}",
            labels={"experiment": "{experiment}", "figure": "report"},
        ),
        metrics=report(
            layout.output("report", "metrics"),
            caption="../report/metrics.rst",
            category="{experiment}",
            labels={"experiment": "{experiment}", "figure": "base vs tuned metrics"},
        ),
        curve=report(
            layout.output("report", "curve"),
            caption="../report/loss_curve.rst",
            category="{experiment}",
            labels={"experiment": "{experiment}", "figure": "training curves"},
        ),
        generations=report(
            layout.output("report", "generations"),
            caption="../report/generations.rst",
            category="{experiment}",
            labels={"experiment": "{experiment}", "figure": "probe answers"},
        ),
        eval_answers=report(
            layout.output("report", "eval_answers"),
            caption="../report/eval_answers.rst",
            category="{experiment}",
            labels={"experiment": "{experiment}", "figure": "eval answers"},
        ),
        metrics_json=layout.output("report", "metrics_json"),
        experiment=layout.output("report", "experiment"),
    log:
        layout.log("report"),
    benchmark:
        layout.benchmark("report")
    params:
        settings=lambda w: EXPERIMENTS.settings_json(w.experiment),
        manifest=layout.output("manifest", "manifest"),
        lm_eval=lambda w, input: (
            f"--base-lm-eval {shlex.quote(input.base_lm_eval)}"
            f" --tuned-lm-eval {shlex.quote(input.tuned_lm_eval)}"
            if "base_lm_eval" in input.keys()
            else ""
        ),
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
        " --base-humaneval {input.base_humaneval:q} --tuned-humaneval {input.tuned_humaneval:q}"
        " --markdown {output.markdown:q} --html {output.html:q} --metrics-csv {output.metrics:q}"
        " --metrics-json {output.metrics_json:q}"
        " --curve {output.curve:q} --generations-csv {output.generations:q}"
        " --eval-answers-csv {output.eval_answers:q} --experiment-json {output.experiment:q}"
        " --manifest {params.manifest:q} {params.lm_eval} --log-file {log:q}"


rule summary:
    input:
        unpack(summary_inputs),
        script=script_path("make_summary"),
        renderer=package_path("document"),
    output:
        csv=report(
            layout.output("summary", "csv"),
            caption="../report/summary.rst",
            category="summary",
            labels={"table": "CSV"},
        ),
        markdown=layout.output("summary", "markdown"),
        latex=report(
            layout.output("summary", "latex"),
            caption="../report/summary.rst",
            category="summary",
            labels={"table": "LaTeX tabular"},
        ),
        html=report(
            layout.output("summary", "html"),
            caption="../report/summary.rst",
            category="summary",
            labels={"table": "table"},
        ),
        seeds=layout.output("summary", "seeds"),
        plots=directory(layout.output("summary", "plots")),
    log:
        layout.log("summary"),
    benchmark:
        layout.benchmark("summary")
    shell:
        "python {input.script:q} --experiment-json {input.experiment:q}"
        " --metrics-csv {input.metrics:q} --keep-finished --csv {output.csv:q} --markdown {output.markdown:q}"
        " --latex {output.latex:q} --html {output.html:q} --seeds-csv {output.seeds:q}"
        " --plots {output.plots:q} --log-file {log:q}"
