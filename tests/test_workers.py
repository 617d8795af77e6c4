"""Where the suite's tests run on `make test`'s two workers (tests/conftest.py): never two SLURM clusters."""

from __future__ import annotations

import pytest
from conftest import GROUP_OF_MODULE, SHARED, _scope

# The session fixtures that start, or build on, the machine's one SLURM cluster (/etc/slurm/slurm.conf): the local
# `data` run starts the SLURM rerun beside the tests that follow it.
NEEDS_THE_CLUSTER = {"slurm_cluster", "data_run", "data_rerun", "slurm_failure"}


def test_every_test_that_needs_the_slurm_cluster_runs_in_its_group(request):
    needing = {item.path.stem for item in request.session.items if NEEDS_THE_CLUSTER & set(item.fixturenames)}
    if not needing:
        pytest.skip("no test of this session needs the SLURM cluster (run the whole suite)")
    assert needing <= set(SHARED["slurm_cluster"]), needing - set(SHARED["slurm_cluster"])


def test_a_test_runs_in_its_modules_group_or_else_with_its_module():
    assert _scope("tests/test_dag.py::test_data_target_writes_documents_card_and_figure") == "slurm_cluster"
    assert _scope("tests/test_retriever.py::test_x[True]") == "smollm2_and_retriever"
    assert _scope("tests/test_io.py::test_y[a::b]") == "tests/test_io.py"
    # no module is in two groups (GROUP_OF_MODULE would keep only the last)
    assert all(GROUP_OF_MODULE[module] == group for group, modules in SHARED.items() for module in modules)
