"""Two processes registering the same adapter at the same moment (two identical runs ending together) leave one
version: before this work both found no version with the adapter's digest and both created one (versions 2 and
3 with the same run and `adapter_digest`, issue 21)."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import pytest
from registered import unique_model_name

from artlora.data import lineage
from artlora.io import model_registry

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("tracking_server")]


def register_when_released(barrier, config, name: str, adapter_uri: str, run_id: str) -> tuple[str, bool]:
    """In a process of its own (the test's environment, its tracking server and login, inherited)."""
    from registered import register_as

    barrier.wait(timeout=300)  # both processes start registering together
    result = register_as(config, name, adapter_uri, run_id)
    return result.version, result.reused


def test_two_processes_registering_the_same_adapter_leave_one_version(style_run):
    name = unique_model_name()
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, ProcessPoolExecutor(2, mp_context=context) as pool:
        barrier = manager.Barrier(2)
        arguments = (barrier, style_run.config.register, name, style_run.adapter_uri, style_run.run_id)
        futures = [pool.submit(register_when_released, *arguments) for _ in range(2)]
        results = [future.result(timeout=600) for future in futures]

    versions = model_registry.model_versions(name)
    assert len(versions) == 1, [(v.version, v.tags.get(lineage.ADAPTER_DIGEST)) for v in versions]
    assert {version for version, _ in results} == {versions[0].version}
    assert sorted(reused for _, reused in results) == [False, True]
    assert "champion" in versions[0].aliases
