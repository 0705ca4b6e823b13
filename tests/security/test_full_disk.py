"""A full disk ends in one line naming the file being written, and a rerun once space is freed finishes.

A small tmpfs stands for the full disk (mounting one needs root: skipped elsewhere)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from artlora.io import storage

REPO = Path(__file__).parents[2]
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@pytest.fixture
def small_disk(tmp_path):
    """A 16 KiB tmpfs; `grow()` gives it room, as freeing space would."""
    folder = tmp_path / "disk"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(folder)], check=True)

    def grow() -> None:
        subprocess.run(["mount", "-o", "remount,size=4m", str(folder)], check=True)

    yield folder, grow
    subprocess.run(["umount", str(folder)], check=True)


def compile_into(out: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "artlora.cli", "pipeline", "compile", "--config", "configs/sd15.yaml"]
    return subprocess.run([*command, "--out", str(out)], capture_output=True, text=True, cwd=REPO, timeout=300)


def test_compiling_onto_a_full_disk_names_the_file_and_a_rerun_finishes(small_disk):
    folder, grow = small_disk
    out = folder / "style_lora.yaml"

    full = compile_into(out)

    assert full.returncode == 2
    assert full.stderr.strip().splitlines()[-1] == (
        f"artlora pipeline compile: error: No space left on device: {out} (free some space there, or point "
        "ARTLORA_WORK_DIR or the output elsewhere, then run again)"
    )
    grow()
    again = compile_into(out)
    assert again.returncode == 0, again.stderr
    assert yaml.safe_load_all(out.read_text())


def test_a_download_onto_a_full_disk_names_the_file_and_leaves_nothing_behind(small_disk, store, bucket):
    folder, grow = small_disk
    uri = storage.join(bucket, "weights.bin")
    store.put_bytes(uri, os.urandom(200_000))

    with pytest.raises(OSError) as raised:
        store.get_file(uri, folder / "weights.bin")

    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(folder / "weights.bin")
    assert list(folder.iterdir()) == []  # the temporary file is gone
    grow()
    assert store.get_file(uri, folder / "weights.bin").stat().st_size == 200_000
