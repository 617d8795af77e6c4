# The report: Tables 1-2 beside the paper's numbers (every cell traced to its MLflow runs), Figures 3-4, the
# training curves and the case study (Table 3), linked from results/report/index.md and logged on one MLflow run.
CASE_STUDY_SEED = POSTTRAIN["seeds"][0]


rule case_study:
    input:
        data=f"{QA}/long_context_eval.parquet",
        baseline_eval=f"{EVAL}/long_context/{{backbone}}/memagent/base/seed{CASE_STUDY_SEED}.parquet",
        ours_eval=f"{EVAL}/long_context/{{backbone}}/memagent/memtrain-full/seed{CASE_STUDY_SEED}.parquet",
        baseline=f"{RESULTS}/train/memagent/{{backbone}}/base/seed{CASE_STUDY_SEED}/final",
        ours=f"{RESULTS}/train/memagent/{{backbone}}/memtrain-full/seed{CASE_STUDY_SEED}/final",
    output:
        markdown=f"{REPORT}/case_study_{{backbone}}.md",
        json=f"{REPORT}/case_study_{{backbone}}.json",
    params:
        cfg=downstream_params,
        wildcards=wildcards_json,
    threads: ALL_CORES
    conda:
        CONDA_ENV
    log:
        log_path("case_study", "/{backbone}"),
    benchmark:
        benchmark_path("case_study", "/{backbone}")
    shell:
        memtrain(
            "case_study",
            "--data {input.data:q} --baseline-eval {input.baseline_eval:q} --ours-eval {input.ours_eval:q} "
            "--baseline {input.baseline:q} --ours {input.ours:q} --markdown {output.markdown:q} --json {output.json:q} "
            "--threads {threads}",
        )


rule figures:
    input:
        evaluations=[*rules.ablations.input, *rules.scaling.input],
        trainings=[*rules.posttrain.input, *rules.memtrain.input],
    output:
        ablations=expand(f"{REPORT}/fig3_ablations_{{backbone}}.png", backbone=MEMTRAIN_BACKBONES),
        scaling=expand(f"{REPORT}/fig4_posttrain_scaling_{{backbone}}.png", backbone=MEMTRAIN_BACKBONES),
        curves=f"{REPORT}/training_curves.png",
    params:
        cfg=as_json({"backbones": config["backbones"], "report": config["report"],
                     "lengths": config["qa"]["long_context"]["lengths"], "start_step": POSTTRAIN["memagent"]["steps"]}),
        wildcards=wildcards_json,
    conda:
        CONDA_ENV
    log:
        log_path("figures"),
    benchmark:
        benchmark_path("figures")
    shell:
        memtrain("figures", "--evaluations {input.evaluations:q} --ablations {output.ablations:q} "
                            "--scaling {output.scaling:q} --curves {output.curves:q}")


rule report:
    input:
        evaluations=evaluations(),
        figures=rules.figures.output,
        case_studies=expand(rules.case_study.output.markdown, backbone=MEMTRAIN_BACKBONES),
    output:
        expand(f"{REPORT}/{{table}}{{suffix}}", table=["table1_long_context_qa", "table2_search_qa"],
               suffix=[".csv", ".md", ".tex", "_provenance.csv"]),
        index=f"{REPORT}/index.md",
    params:
        cfg=as_json({"config": config}),
        wildcards=wildcards_json,
    conda:
        CONDA_ENV
    log:
        log_path("report"),
    benchmark:
        benchmark_path("report")
    shell:
        memtrain("report", "--evaluations {input.evaluations:q} "
                           f"--output-dir {REPORT!r} --figures {{input.figures:q}} "
                           f"--case-studies {{input.case_studies:q}} --index {{output.index:q}}")
