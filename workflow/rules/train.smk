rule training_settings:
    output:
        **layout.outputs("training_settings"),
    log:
        layout.log("training_settings"),
    benchmark:
        layout.benchmark("training_settings")
    localrule: True
    params:
        # The recipe's lora and training sections; a change re-runs training, a change elsewhere does not.
        settings=lambda w: EXPERIMENTS.training_settings(w.experiment),
    run:
        write_json(output.settings, params.settings)
        Path(log[0]).write_text(f"Wrote {output.settings}\n", encoding="utf-8")


rule train_lora:
    input:
        unpack(experiment_inputs),
        settings=layout.output("training_settings", "settings"),
        script=script_path("train_lora"),
    output:
        adapter=directory(layout.output("train_lora", "adapter")),
        history=layout.output("train_lora", "history"),
        summary=layout.output("train_lora", "summary"),
        tracking=directory(layout.output("train_lora", "tracking")),
    log:
        layout.log("train_lora"),
    benchmark:
        layout.benchmark("train_lora")
    threads: all_cores()
    resources:
        mem_mb=16000,
        # From the recipe's distributed section (SLURM: nodes, one task per process, GPUs; mpi: the launcher
        # runs srun itself): see src/alpaca_lora/distributed.py.
        nodes=lambda w: EXPERIMENTS.slurm_resources(w.experiment)["nodes"],
        tasks=lambda w: EXPERIMENTS.slurm_resources(w.experiment).get("tasks", 0),
        tasks_per_node=lambda w: EXPERIMENTS.slurm_resources(w.experiment).get(
            "tasks_per_node", 0
        ),
        gpu=lambda w: EXPERIMENTS.slurm_resources(w.experiment)["gpu"],
        mpi=lambda w: EXPERIMENTS.slurm_resources(w.experiment)["mpi"],
    params:
        checkpoints=layout.CHECKPOINTS,
        launch=lambda w: EXPERIMENTS.launch_flags(w.experiment),
    shell:
        "python -m alpaca_lora.distributed {params.launch} --"
        " {input.script:q} --model {input.model:q} --train {input.train:q}"
        " --eval {input.eval:q} --settings {input.settings:q} --output-dir {output.adapter:q}"
        " --history {output.history:q} --summary {output.summary:q}"
        " --checkpoint-dir {params.checkpoints:q} --tracking-dir {output.tracking:q}"
        " --log-file {log:q}"
