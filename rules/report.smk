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
    log:
        log_path("case_study", "{backbone}"),
    benchmark:
        benchmark_path("case_study", "{backbone}")
    conda:
        CONDA_ENV
    threads: JOB_THREADS
    params:
        **stage_job(downstream_params),
    shell:
        stage("case_study")


rule figures:
    input:
        evaluations=[*rules.ablations.input, *rules.scaling.input],
        trainings=[*rules.posttrain.input, *rules.memtrain.input],
    output:
        ablations=expand(f"{REPORT}/fig3_ablations_{{backbone}}.png", backbone=MEMTRAIN_BACKBONES),
        scaling=expand(f"{REPORT}/fig4_posttrain_scaling_{{backbone}}.png", backbone=MEMTRAIN_BACKBONES),
        curves=f"{REPORT}/training_curves.png",
    log:
        log_path("figures"),
    benchmark:
        benchmark_path("figures")
    conda:
        CONDA_ENV
    params:
        **stage_job("backbones", "report", "qa.long_context.lengths", "posttrain.memagent.steps"),
    shell:
        stage("figures")


rule report:
    input:
        evaluations=evaluations(),
        figures=rules.figures.output,
        case_studies=expand(rules.case_study.output.markdown, backbone=MEMTRAIN_BACKBONES),
    output:
        tables=expand(
            f"{REPORT}/{{table}}{{suffix}}",
            table=["table1_long_context_qa", "table2_search_qa"],
            suffix=[".csv", ".md", ".tex", "_provenance.csv"],
        ),
        index=f"{REPORT}/index.md",
    log:
        log_path("report"),
    benchmark:
        benchmark_path("report")
    conda:
        CONDA_ENV
    params:
        **stage_job(lambda w: config),
    shell:
        stage("report")
