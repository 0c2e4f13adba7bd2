rule convert_to_messages:
    input:
        raw=dataset_files,
        script=script_path("convert_to_messages"),
        readers=package_path("data_sources"),
    output:
        **layout.outputs("convert_to_messages"),
    log:
        layout.log("convert_to_messages"),
    benchmark:
        layout.benchmark("convert_to_messages")
    params:
        settings=lambda w: EXPERIMENTS.conversion_flags(w.dataset),
    shell:
        "python {input.script:q} {params.settings} --output {output.messages:q}"
        " --rejects {output.rejects:q} --summary {output.summary:q} --log-file {log:q}"


rule split_dataset:
    input:
        messages=layout.output("convert_to_messages", "messages"),
        script=script_path("split_dataset"),
    output:
        **layout.outputs("split_dataset"),
    log:
        layout.log("split_dataset"),
    benchmark:
        layout.benchmark("split_dataset")
    params:
        split=lambda w: EXPERIMENTS.split_settings(w.dataset, w.split),
    shell:
        "python {input.script:q} --input {input.messages:q} --train {output.train:q}"
        " --eval {output.eval:q} --summary {output.summary:q}"
        " --eval-size {params.split[eval_size]} --seed {params.split[seed]} --log-file {log:q}"


rule apply_chat_template:
    input:
        script=script_path("apply_chat_template"),
        model=layout.MODEL,
        messages=lambda w: files("split_dataset", **w)[w.part],
    output:
        **layout.outputs("apply_chat_template"),
    log:
        layout.log("apply_chat_template"),
    benchmark:
        layout.benchmark("apply_chat_template")
    threads: all_cores()
    shell:
        "python {input.script:q} --model {input.model:q} --input {input.messages:q}"
        " --output {output.templated:q} --workers {threads} --log-file {log:q}"
