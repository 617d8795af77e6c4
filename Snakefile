# MemTrain reproduction: one DAG from Wikipedia to the paper's tables and figures.
# Embedded default: `snakemake -c2 all` (config/config.yaml); paper: `snakemake --profile slurm all`.
from snakemake.utils import min_version

min_version("9.27")

from memtrain import config as memtrain_config

# --configfile (tests, the slurm profile) replaces the embedded default instead of being merged into it.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


memtrain_config.validate(config, source=", ".join(map(str, workflow.overwrite_configfiles or ["config/config.yaml"])))


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/memtrain.smk"
include: "rules/downstream.smk"
include: "rules/ablations.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        rules.data.input,
        rules.memtrain.input,
        rules.posttrain.input,
        rules.evaluate.input,
        rules.ablations.input,
        rules.scaling.input,
        rules.report.output,
        rules.figures.output,


# memtrain.tracking (MLflow: ~0.8 CPU-s) is imported only where a run is recorded, not by every dry run and SLURM
# job step that parses this file.
onstart:
    from memtrain import tracking

    tracking.start_invocation(RESULTS, EXPERIMENT, targets=sys.argv[1:], config=config)


onsuccess:
    from memtrain import tracking

    tracking.end_invocation(os.environ[tracking.PARENT_RUN_ENV], "FINISHED", RESULTS)


onerror:
    from memtrain import tracking

    tracking.end_invocation(os.environ[tracking.PARENT_RUN_ENV], "FAILED", RESULTS)
