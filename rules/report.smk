# The report (paper Tables 1-2): the reproduction beside the paper's numbers, every cell traced to its MLflow runs.


rule report:
    input:
        evaluations(),
    output:
        expand(f"{REPORT}/{{table}}{{suffix}}", table=["table1_long_context_qa", "table2_search_qa"],
               suffix=[".csv", ".md", ".tex", "_provenance.csv"]),
    params:
        cfg=as_json({"backbones": config["backbones"]}),
        wildcards=wildcards_json,
    conda:
        CONDA_ENV
    log:
        log_path("report"),
    benchmark:
        benchmark_path("report")
    shell:
        memtrain("report", f"--eval-dir {EVAL!r} --output-dir {REPORT!r}")


rule figures:
    input:
        rules.ablations.input,
        rules.posttrain.input,
        rules.memtrain.input,
    output:
        ablations=expand(f"{REPORT}/fig3_ablations_{{backbone}}.png", backbone=MEMTRAIN_BACKBONES),
        curves=f"{REPORT}/training_curves.png",
    params:
        cfg=as_json({"backbones": config["backbones"]}),
        wildcards=wildcards_json,
    conda:
        CONDA_ENV
    log:
        log_path("figures"),
    benchmark:
        benchmark_path("figures")
    shell:
        memtrain("figures", f"--eval-dir {EVAL!r} --ablations {{output.ablations:q}} --curves {{output.curves:q}}")
