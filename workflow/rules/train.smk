rule train_lora:
    input:
        unpack(experiment_inputs),
        script=script_path("train_lora"),
    output:
        adapter=directory("results/{experiment}/train/adapter"),
        history="results/{experiment}/train/history.csv",
        summary="results/{experiment}/train/summary.json",
    log:
        "results/logs/{experiment}/train_lora.log",
    benchmark:
        "results/benchmarks/{experiment}/train_lora.tsv"
    conda:
        "../../environment.yml"
    threads: workflow.cores
    resources:
        mem_mb=16000,
    params:
        settings=training_flags,
        # Not an output: Snakemake deletes outputs of failed jobs, and checkpoints must survive them.
        checkpoints="results/{experiment}/train/checkpoints",
    shell:
        "python {input.script:q} --model {input.model:q} --train {input.train:q}"
        " --eval {input.eval:q} --output-dir {output.adapter:q} --history {output.history:q}"
        " --summary {output.summary:q} --checkpoint-dir {params.checkpoints:q}"
        " {params.settings} --log-file {log:q}"
