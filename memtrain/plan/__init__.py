"""`python -m memtrain plan`: GPU-hours, CPU-hours, wall-clock and disk of a DAG before it is submitted.

dag: the jobs and resources of snakemake's own dry run; work: what each job does, from the config;
throughputs (throughputs.yaml): the rates and sizes, each with its source; estimate: hours per job
and calibration on a finished run's benchmarks; report: the per-stage table and totals.
"""
