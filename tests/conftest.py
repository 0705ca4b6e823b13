"""Shared fixtures: real servers on loopback (SeaweedFS, PostgreSQL, an MLflow server), a private work folder,
the tiny model, and one trained and evaluated style adapter for the tests that look it up or paint with it.

Under pytest-xdist the session fixtures are made once for the whole session and shared by the workers
(shared_fixtures.py); without it each is made and torn down here."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pytest
import session_processes
import shared_fixtures
from shared_fixtures import under_xdist

from artlora.io import service_security, services, settings, storage

# Every test's objects go under a prefix of its own in this one bucket: a SeaweedFS bucket is a collection with
# volumes of its own (about 0.2 s to set up, and a disk holds only so many).
TEST_BUCKET = "s3://artlora-tests"


def pytest_configure(config):
    """Before any fixture: end what killed sessions left running, mark what this one starts, and let SIGTERM stop
    it in order (session_processes.py); under pytest-xdist, share the CPUs between the workers."""
    session_processes.begin(os.environ)
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        # Each worker a share of the CPUs (a user's own OMP_NUM_THREADS wins, as in cpus.apply): two workers with
        # a thread per core each would wait on each other at every parallel region.
        from artlora import cpus

        share = str(max(1, cpus.usable() // workers))
        for name in cpus.THREAD_VARIABLES:
            os.environ.setdefault(name, share)


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: called in the controller, once per worker
def pytest_configure_node(node):
    """Each worker learns the controller's session mark, which the servers the workers share carry: the
    controller, the last to finish, ends them (shared_fixtures.py)."""
    node.workerinput[shared_fixtures.CONTROLLER_MARK] = session_processes.mark()


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (make test: `--dist loadfile`, each module one work unit, so that its fixtures are made
    by one worker): modules with slow tests first, so that the longest units do not start last while the other
    worker idles. Without xdist the order is the files' order."""
    if "PYTEST_XDIST_WORKER" not in os.environ:  # the workers collect; each sorts the same way
        return
    modules: dict[str, list[pytest.Item]] = {}
    for item in items:
        modules.setdefault(item.nodeid.split("::")[0], []).append(item)
    slow = {name for name, module_items in modules.items() if any(i.get_closest_marker("slow") for i in module_items)}
    items.sort(key=lambda item: item.nodeid.split("::")[0] not in slow)  # stable: each module keeps its order


def pytest_unconfigure(config):
    """Whatever this session started and did not stop ends with it."""
    session_processes.finish()


# What artlora's tracking.configure and local services set for the process (and so for its subprocesses).
CONFIGURED_VARIABLES = (
    settings.S3_ENDPOINT,
    settings.S3_ACCESS_KEY,
    settings.S3_SECRET_KEY,
    "MLFLOW_TRACKING_URI",
    "MLFLOW_REGISTRY_URI",
    "MLFLOW_S3_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
)


@pytest.fixture(autouse=True)
def mlflow_settings_end_with_the_test():
    """artlora's tracking.configure sets MLflow's process-wide tracking and registry URIs and, where unset, the S3
    variables of MLflow's artifact client: without this, a later test asks an earlier test's server, long gone, or
    an earlier store's keys (InvalidAccessKeyId)."""
    saved = {name: os.environ.get(name) for name in CONFIGURED_VARIABLES}
    yield
    if "mlflow" in sys.modules:  # nothing to reset in a test that never loaded it
        mlflow = sys.modules["mlflow"]
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
    settings.forget_boto3_keys()  # the next test's store has keys of its own
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory, pytestconfig):
    """One SeaweedFS for the whole test session (free ports, a temporary data folder), exported to the environment
    (ARTLORA_S3_*, AWS_*, MLFLOW_S3_ENDPOINT_URL), so subprocesses reach it too."""
    for key in (settings.S3_ENDPOINT, settings.TRACKING_URI):
        os.environ.pop(key, None)
    if not under_xdist(pytestconfig):
        with services.throwaway_seaweedfs(tmp_path_factory.mktemp("seaweedfs") / "data") as store:
            yield store.url
        return

    def start() -> dict:
        with shared_fixtures.as_controller(pytestconfig):
            store = services.start_seaweedfs(shared_fixtures.folder(tmp_path_factory, "seaweedfs") / "data")
        return {"url": store.url, "environment": store.environment()}

    shared = shared_fixtures.shared(tmp_path_factory, "seaweedfs", start)
    with settings.exported(shared["environment"]):
        yield shared["url"]


@pytest.fixture
def store(s3_endpoint) -> storage.Storage:
    return storage.get_storage()


@pytest.fixture
def bucket(store, request) -> str:
    """A fresh s3:// prefix per test, so tests never see each other's objects."""
    name = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower())[:40].strip("-")
    # The hash keeps parametrized tests with a long common name apart.
    return f"{TEST_BUCKET}/{name}-{hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:8]}"


@pytest.fixture(scope="session")
def postgres(tmp_path_factory, pytestconfig):
    """One PostgreSQL cluster for the session (password authentication); each user makes its own database."""
    from local_postgres import PostgresCluster, start_cluster

    if not under_xdist(pytestconfig):
        cluster = start_cluster()
        yield cluster
        cluster.stop()
        return

    def start() -> dict:
        with shared_fixtures.as_controller(pytestconfig):
            cluster = start_cluster()
        return {"root": str(cluster.root), "bin_dir": str(cluster.bin_dir), "port": cluster.port}

    shared = shared_fixtures.shared(tmp_path_factory, "postgres", start)
    yield PostgresCluster(Path(shared["root"]), Path(shared["bin_dir"]), shared["port"])


@pytest.fixture(scope="session")
def mlflow_server(s3_endpoint, postgres, tmp_path_factory, pytestconfig) -> services.MlflowServer:
    """One `mlflow server` for the session, as in production: runs and models in PostgreSQL, artifacts through
    the server into SeaweedFS (s3://mlflow-server/artifacts), every request authenticated (its admin login in
    `.admin`). Its registry is shared (by the xdist workers too): give models unique names."""

    def start(folder: Path) -> services.MlflowServer:
        backend = postgres.create_database("tracking")
        log = folder / "server.log"
        return services.start_mlflow(backend, "s3://mlflow-server/artifacts", settings.s3_settings(), log)

    if not under_xdist(pytestconfig):
        server = start(tmp_path_factory.mktemp("mlflow-server"))
        yield server
        server.kill()
        return

    def start_shared() -> dict:
        with shared_fixtures.as_controller(pytestconfig):
            server = start(shared_fixtures.folder(tmp_path_factory, "mlflow-server"))
        return {**dataclasses.asdict(server), "log_path": str(server.log_path)}

    shared = shared_fixtures.shared(tmp_path_factory, "mlflow-server", start_shared)
    admin = service_security.Login(**shared["admin"])
    yield services.MlflowServer(
        **{**shared, "log_path": Path(shared["log_path"]), "ports": tuple(shared["ports"]), "admin": admin}
    )


@pytest.fixture
def tracking_server(mlflow_server, monkeypatch) -> str:
    """This test tracks to the session's MLflow server (MLFLOW_TRACKING_URI, logged in as its admin); its URL."""
    for key, value in mlflow_server.environment().items():
        monkeypatch.setenv(key, value)
    return mlflow_server.url


@pytest.fixture(autouse=True)
def work_dir(tmp_path, monkeypatch) -> Path:
    """Each test gets its own work folder (local caches, SQLite MLflow store).

    MLflow's own registry variable goes too: MLflow's set_registry_uri exports it, so a module's fixture that
    configured tracking under a MonkeyPatch (which restores only what it set) would leave it naming that
    fixture's store, and `mlflow.pyfunc.load_model("models:/...")` in every later test of the worker would look
    there ("Registered Model ... not found"). Without it the registry is the tracking store, as artlora sets it."""
    path = tmp_path / "work"
    monkeypatch.setenv("ARTLORA_WORK_DIR", str(path))
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(key, raising=False)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, pytestconfig) -> Path:
    """The tiny Stable Diffusion saved once, in the diffusers layout, for every test that loads a base model."""
    from artlora.demo import tiny

    return shared_fixtures.made_once(
        pytestconfig, tmp_path_factory, "tiny-sd", lambda folder: tiny.save_tiny(folder / "model", seed=0)
    )


@pytest.fixture(scope="session")
def sample_folder(tmp_path_factory, pytestconfig) -> Path:
    """A few generated artworks in every sample style, with captions (64 px: the tiny model's size)."""
    from artlora.demo import sample_data

    def generate(folder: Path) -> Path:
        sample_data.generate(folder / "styles", count=20, size=64, seed=0)
        return folder / "styles"

    return shared_fixtures.made_once(pytestconfig, tmp_path_factory, "raw", generate)


@pytest.fixture
def small_config(bucket, tiny_model_dir, sample_folder):
    """The demo config shrunk to test size, pointed at this test's bucket, the tiny model and the samples."""
    from small_configs import small_config_for

    return small_config_for(bucket, tiny_model_dir, sample_folder)


@pytest.fixture
def latent_cache(small_config) -> str:
    """Ingest and augment the samples; the latent cache index URI."""
    from artlora.config import with_inputs
    from artlora.stages.augment import run as augment
    from artlora.stages.ingest import run as ingest

    dataset = ingest.run(small_config.ingest)
    return augment.run(with_inputs(small_config.augment, dataset_uri=dataset.dataset_uri)).cache_uri


@pytest.fixture(scope="session")
def _mlflow_db_template(tmp_path_factory, pytestconfig) -> Path:
    """An empty MLflow SQLite store with its schema migrations already run (they take seconds per database)."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    def migrated(folder: Path) -> Path:
        store = SqlAlchemyStore(f"sqlite:///{folder / 'mlflow.db'}", default_artifact_root=str(folder / "artifacts"))
        store.engine.dispose()
        return folder / "mlflow.db"

    return shared_fixtures.made_once(pytestconfig, tmp_path_factory, "mlflow-template", migrated)


@pytest.fixture
def mlflow_db(work_dir, _mlflow_db_template) -> Path:
    """Opt-in speed-up: this test's private MLflow store starts as a copy of the migrated template.

    Same isolation as `work_dir` alone (the copy is this test's own file), without the schema migration.
    Use it with `pytestmark = pytest.mark.usefixtures("mlflow_db")`.
    """
    import shutil

    work_dir.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copyfile(_mlflow_db_template, work_dir / "mlflow.db"))


@dataclass(frozen=True)
class StyleRun:
    """A style adapter trained and evaluated on the sample data, tracked to the session's MLflow server."""

    config: object  # the PipelineConfig it was trained with
    adapter_uri: str
    run_id: str
    cache_uri: str


@pytest.fixture(scope="session")
def style_run(mlflow_server, tiny_model_dir, sample_folder, tmp_path_factory, pytestconfig) -> StyleRun:
    """Trained once per session (a few steps at a high LoRA scale, so that its images differ visibly from the
    base model's) and evaluated; register it under a model name of your own. Shared by the xdist workers (whose
    tests may register it at once, under their own names): a test that evaluates it again, or reads back the gate
    page a registration writes, uses a copy of its run (registered.run_copy)."""
    from small_configs import small_config_for

    from artlora.config import with_inputs
    from artlora.stages.augment import run as augment
    from artlora.stages.evaluate import run as evaluate
    from artlora.stages.ingest import run as ingest
    from artlora.stages.train import run as train

    with mock.patch.dict(os.environ, mlflow_server.environment()):
        config = small_config_for(f"{TEST_BUCKET}/style-run", tiny_model_dir, sample_folder, "train.alpha=32")

    def train_and_evaluate(work: Path) -> dict:
        with mock.patch.dict(os.environ, {**mlflow_server.environment(), settings.WORK_DIR: str(work)}):
            dataset = ingest.run(config.ingest)
            cache_uri = augment.run(with_inputs(config.augment, dataset_uri=dataset.dataset_uri)).cache_uri
            trained = train.run(with_inputs(config.train, cache_uri=cache_uri, learning_rate=0.01))
            inputs = {"adapter_uri": trained.adapter_uri, "cache_uri": cache_uri, "run_id": trained.run_id}
            evaluate.run(with_inputs(config.evaluate, **inputs))
        return {"adapter_uri": trained.adapter_uri, "run_id": trained.run_id, "cache_uri": cache_uri}

    if under_xdist(pytestconfig):
        work = shared_fixtures.folder(tmp_path_factory, "style-run")
        made = shared_fixtures.shared(tmp_path_factory, "style-run", lambda: train_and_evaluate(work))
    else:
        made = train_and_evaluate(tmp_path_factory.mktemp("style-run"))
    return StyleRun(config, **made)
