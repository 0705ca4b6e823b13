"""kfp.local as a user reads it (`pipelines/local_terminal.py`): a real compiled pipeline run the way
`artlora pipeline run --local` runs it (`python -m artlora.pipelines.build`), its local-only warnings said once,
a task killed by a signal named with its signal, a task's own error (an ArtloraError) as the run's error."""

# No `from __future__ import annotations`: kfp reads the components' annotations as types.

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from kfp import compiler, dsl

from artlora.pipelines import local_terminal

IMAGE = "artlora:test"  # not a Python image: kfp.local warns about it

PLAIN_KFP_LOCAL = """
import json, sys
from kfp import local
from kfp.components import load_component_from_file
local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=sys.argv[2], raise_on_error=True)
load_component_from_file(sys.argv[1])(**json.loads(open(sys.argv[3]).read()))
"""


@dsl.component(base_image=IMAGE)
def add_one(x: int) -> int:
    return x + 1


@dsl.component(base_image=IMAGE)
def kill_myself(x: int) -> int:
    import os
    import signal

    os.kill(os.getpid(), signal.SIGKILL)
    return x


@dsl.component(base_image=IMAGE)
def refuse(x: int) -> int:
    from artlora.errors import ArtloraError

    raise ArtloraError(f"ingest.source={x}: no image files there (give the folder of the images)")


@dsl.component(base_image=IMAGE)
def crash(x: int) -> int:
    return {}["a bug, not the user's"]


@dsl.pipeline
def refused(x: int = 1) -> int:
    return refuse(x=add_one(x=x).output).output


@dsl.pipeline
def crashed(x: int = 1) -> int:
    return crash(x=x).output


@dsl.pipeline
def limited(x: int = 1) -> int:
    first = add_one(x=x).set_cpu_limit("2").set_memory_limit("1G")
    return add_one(x=first.output).set_cpu_limit("2").output


@dsl.pipeline
def killed(x: int = 1) -> int:
    return kill_myself(x=add_one(x=x).output).output


def _run(pipeline, tmp_path: Path, plain: bool = False) -> tuple[subprocess.CompletedProcess, dict]:
    """The compiled pipeline run through artlora's runner (or, `plain`, kfp.local alone); its outputs file."""
    tmp_path.mkdir(exist_ok=True)
    compiled, arguments, outputs = tmp_path / "pipeline.yaml", tmp_path / "arguments.json", tmp_path / "out.json"
    compiler.Compiler().compile(pipeline, str(compiled))
    arguments.write_text(json.dumps({"x": 1}))
    if plain:
        command = [sys.executable, "-c", PLAIN_KFP_LOCAL, str(compiled), str(tmp_path / "root"), str(arguments)]
    else:
        runner = [sys.executable, "-m", "artlora.pipelines.build", str(compiled), str(arguments)]
        command = [*runner, str(tmp_path / "root"), str(outputs)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    return done, json.loads(outputs.read_text()) if outputs.is_file() else {}


def test_local_only_warnings_are_one_line(tmp_path):
    plain, _ = _run(limited, tmp_path / "plain", plain=True)
    # kfp.local itself warns, per task, of the image and of the limits.
    assert plain.returncode == 0, plain.stderr
    assert plain.stderr.count("have no effect in the current local runner") == 2, plain.stderr
    assert plain.stderr.count(f'non-Python base image "{IMAGE}"') == 2, plain.stderr
    done, result = _run(limited, tmp_path / "artlora")
    assert done.returncode == 0 and result == {"outputs": {"Output": 3}}, done.stderr
    assert done.stderr.strip() == local_terminal.ONE_LINE


def test_other_warnings_still_show():
    with pytest.warns(UserWarning, match="a warning of our own"), local_terminal.quiet_local_only_warnings():
        warnings.warn("a warning of our own", UserWarning, stacklevel=1)


def test_a_task_killed_by_a_signal_is_named(tmp_path):
    done, result = _run(killed, tmp_path)
    assert done.returncode == 1
    assert result == {"error": "task 'kill-myself' was killed by SIGKILL", "killed": True, "own": False}, done.stdout[
        -2000:
    ]


@pytest.mark.parametrize(("code", "number"), [(-9, 9), (137, 9), (143, 15), (0, 0), (1, 0), (2, 0), (128, 0)])
def test_signal_of_a_return_code(code, number):
    assert local_terminal.signal_of(code) == number


def test_a_plain_failure_keeps_kfps_words_without_colours():
    error = (
        "Pipeline \x1b[95m'p'\x1b[0m finished with status \x1b[91mFAILURE\x1b[0m. "
        "Inner task failed: \x1b[96m'train'\x1b[0m."
    )
    plain = local_terminal.failure(error, local_terminal.TaskReports())
    killed = local_terminal.failure(error, local_terminal.TaskReports(signals=[9]))
    assert str(plain) == "Pipeline 'p' finished with status FAILURE. Inner task failed: 'train'."
    assert not isinstance(plain, local_terminal.TaskKilled)
    assert isinstance(killed, local_terminal.TaskKilled) and str(killed) == "task 'train' was killed by SIGKILL"


def test_the_user_reads_which_task_was_killed(tmp_path):
    """Through `artlora pipeline run --local`'s runner (a process group of its own): its one-line error."""
    from artlora.orchestration.local import PipelineFailed, run_pipeline

    compiled = tmp_path / "pipeline.yaml"
    compiler.Compiler().compile(killed, str(compiled))
    with pytest.raises(PipelineFailed, match=r"^task 'kill-myself' was killed by SIGKILL \(most often .* memory"):
        run_pipeline(compiled, {"x": 1}, tmp_path / "root")


def test_the_user_reads_the_failed_tasks_own_error_not_kfps(tmp_path):
    """A task that raises an ArtloraError: the run's error is that error's one line, without kfp's "Inner task
    failed" or the hint to read the log above."""
    from artlora.orchestration.local import PipelineFailed, run_pipeline

    compiled = tmp_path / "pipeline.yaml"
    compiler.Compiler().compile(refused, str(compiled))
    with pytest.raises(PipelineFailed) as raised:
        run_pipeline(compiled, {"x": 1}, tmp_path / "root")
    assert str(raised.value) == "ingest.source=2: no image files there (give the folder of the images)"


def test_a_bug_in_a_task_keeps_kfps_words_and_the_hint(tmp_path):
    done, result = _run(crashed, tmp_path)

    assert done.returncode == 1 and result["own"] is False, done.stdout[-2000:]
    assert "Inner task failed: 'crash'" in result["error"]


@pytest.mark.parametrize(
    ("lines", "error"),
    [
        (["Traceback (most recent call last):", "    artlora.errors.ArtloraError: bad (fix it)", ""], "bad (fix it)"),
        (["    artlora.io.storage.StorageError: first", "    artlora.errors.ArtloraError: last (fix)"], "last (fix)"),
        (["    artlora.errors.ArtloraError: bad (fix)", "During handling ...", "    KeyError: 'a bug'"], ""),
        (["    KeyError: 'a bug'"], ""),
        (["    artlora.pipelines.local_terminal.TaskKilled: not the user's"], ""),  # artlora's, not an ArtloraError
        (["    artlora.no_such_module.Error: unknown"], ""),
    ],
)
def test_a_tasks_own_error_is_the_artlora_error_its_output_ends_with(lines, error):
    assert local_terminal.own_error(lines) == error
