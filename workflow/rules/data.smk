rule convert_to_messages:
    input:
        raw=dataset_path,
        script=script_path("convert_to_messages"),
    output:
        messages="results/data/{dataset}/messages.jsonl",
        rejects="results/data/{dataset}/rejects.jsonl",
        summary="results/data/{dataset}/convert_summary.json",
    log:
        "results/logs/data/{dataset}/convert_to_messages.log",
    benchmark:
        "results/benchmarks/data/{dataset}/convert_to_messages.tsv"
    conda:
        "../../environment.yml"
    params:
        settings=conversion_flags,
    shell:
        "python {input.script:q} --input {input.raw:q} --output {output.messages:q}"
        " --rejects {output.rejects:q} --summary {output.summary:q}"
        " {params.settings} --log-file {log:q}"


rule split_dataset:
    input:
        messages="results/data/{dataset}/messages.jsonl",
        script=script_path("split_dataset"),
    output:
        train="results/data/{dataset}/{split}/train.jsonl",
        eval="results/data/{dataset}/{split}/eval.jsonl",
        summary="results/data/{dataset}/{split}/split_summary.json",
    log:
        "results/logs/data/{dataset}/{split}/split_dataset.log",
    benchmark:
        "results/benchmarks/data/{dataset}/{split}/split_dataset.tsv"
    conda:
        "../../environment.yml"
    params:
        split=split_settings,
    shell:
        "python {input.script:q} --input {input.messages:q} --train {output.train:q}"
        " --eval {output.eval:q} --summary {output.summary:q}"
        " --eval-size {params.split[eval_size]} --seed {params.split[seed]} --log-file {log:q}"


rule apply_chat_template:
    input:
        script=script_path("apply_chat_template"),
        model="results/models/{model}",
        messages="results/data/{dataset}/{split}/{part}.jsonl",
    output:
        "results/data/{dataset}/{split}/{model}/{part}.templated.jsonl",
    log:
        "results/logs/data/{dataset}/{split}/{model}/apply_chat_template.{part}.log",
    benchmark:
        "results/benchmarks/data/{dataset}/{split}/{model}/apply_chat_template.{part}.tsv"
    wildcard_constraints:
        part="train|eval",
    conda:
        "../../environment.yml"
    threads: workflow.cores
    shell:
        "python {input.script:q} --model {input.model:q} --input {input.messages:q}"
        " --output {output:q} --workers {threads} --log-file {log:q}"
