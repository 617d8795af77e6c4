"""`python -m memtrain.distributed <verl.yaml>`: veRL's trainer with ours, launched by memtrain.distributed.train.

A separate entry point so that memtrain.distributed.verl_trainer is never `__main__`: Ray then finds its
classes under their importable names in every worker process.
"""

import sys

from memtrain.distributed.verl_trainer import main

main(sys.argv[1])
