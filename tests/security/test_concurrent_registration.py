"""Two processes registering the same adapter at the same moment (two identical runs ending together) leave one
version: before this work both found no version with the adapter's digest and both created one (versions 2 and
3 with the same run and `adapter_digest`, issue 21)."""

from __future__ import annotations

import multiprocessing

import pytest
from registered import unique_model_name

from artlora.data import lineage
from artlora.io import model_registry

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("tracking_server")]


def register_when_released(barrier, config, name: str, adapter_uri: str, run_id: str) -> tuple[str, bool]:
    from registered import register_as

    barrier.wait(timeout=300)  # both processes start registering together
    result = register_as(config, name, adapter_uri, run_id)
    return result.version, result.reused


def register_in_a_process(results, *arguments) -> None:
    """In a process of its own (the test's environment, its tracking server and login, inherited)."""
    results.put(register_when_released(*arguments))


def test_two_processes_registering_the_same_adapter_leave_one_version(style_run):
    name = unique_model_name()
    # Two processes: this one, and one started fresh (one import of the registry's stack, not two).
    context = multiprocessing.get_context("spawn")
    barrier, queue = context.Barrier(2), context.Queue()
    arguments = (barrier, style_run.config.register, name, style_run.adapter_uri, style_run.run_id)
    other = context.Process(target=register_in_a_process, args=(queue, *arguments))
    other.start()
    try:
        results = [register_when_released(*arguments), queue.get(timeout=600)]
        other.join(timeout=60)
    finally:
        other.kill()

    versions = model_registry.model_versions(name)
    assert len(versions) == 1, [(v.version, v.tags.get(lineage.ADAPTER_DIGEST)) for v in versions]
    assert {version for version, _ in results} == {versions[0].version}
    assert sorted(reused for _, reused in results) == [False, True]
    assert "champion" in versions[0].aliases
