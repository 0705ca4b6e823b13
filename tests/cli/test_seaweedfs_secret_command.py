"""`artlora services seaweedfs-secret FOLDER` in a subprocess: the files of the Kubernetes store's Secret, private,
naming the path the Deployment mounts them at, kept on a second run; a folder it cannot use is one line."""

from __future__ import annotations

import shlex
import stat
import subprocess
import sys
from pathlib import Path

from artlora.io import service_security

FILES = {"security.toml", "ca.crt", "node.crt", "node.key"}


def seaweedfs_secret(folder: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "artlora.cli", "services", "seaweedfs-secret", str(folder)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_it_writes_the_secrets_files_privately_and_keeps_them(tmp_path):
    folder = tmp_path / "overlay" / "seaweedfs-security"
    first = seaweedfs_secret(folder)
    assert first.returncode == 0, first.stderr
    assert {path.name for path in folder.iterdir()} == FILES
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert {stat.S_IMODE(path.stat().st_mode) for path in folder.iterdir()} == {0o600}
    toml = (folder / "security.toml").read_text()
    assert '"/etc/seaweedfs/node.key"' in toml and str(folder) not in toml  # where the pod reads them
    words = shlex.split(first.stdout)
    assert words[:6] == ["kubectl", "-n", "artlora", "create", "secret", "generic"]
    assert {Path(word.removeprefix("--from-file=")).name for word in words[7:]} == FILES
    before = {path.name: path.read_bytes() for path in folder.iterdir()}
    again = seaweedfs_secret(folder)
    assert again.returncode == 0, again.stderr
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == before


def test_a_folder_made_for_the_local_store_is_refused_in_one_line(tmp_path):
    service_security.seaweedfs_config(tmp_path / "local")  # names its certificates by their path here
    result = seaweedfs_secret(tmp_path / "local")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"artlora services seaweedfs-secret: error: {tmp_path / 'local'}/security.toml names its certificates "
        "elsewhere than /etc/seaweedfs (choose another folder)"
    ]


def test_a_file_in_the_way_is_one_line(tmp_path):
    (tmp_path / "taken").write_text("a file")
    result = seaweedfs_secret(tmp_path / "taken" / "security")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"artlora services seaweedfs-secret: error: cannot write into {tmp_path / 'taken'}")
