"""What locks artlora's local servers to the user who started them: MLflow's basic-auth settings and SeaweedFS's
security.toml. Both are files in a private folder (0700, files 0600) beside the server's data.

MLflow (`mlflow server --app-name basic-auth`): every request but /health and the UI's static files needs a user
and password (401 otherwise: REST, UI data, artifacts). The admin user is created by the first start from the
password in the server's environment; users added later get READ on everything by default, and nothing more
unless granted, so a plain user is a read-only one. Clients log in through MLFLOW_TRACKING_USERNAME /
MLFLOW_TRACKING_PASSWORD, which MLflow's client reads.

SeaweedFS (`weed -config_dir=DIR server`, with HTTP off for master and filer): the filer and the volume server
accept reads and writes only with a JWT signed by keys in DIR/security.toml (the S3 gateway, in the same
process, signs its own), and every gRPC port demands a client certificate from the CA made here (mutual TLS).
What is left without keys is listed in the README's Security section.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

USERNAME = "MLFLOW_TRACKING_USERNAME"
PASSWORD = "MLFLOW_TRACKING_PASSWORD"
ADMIN = "admin"
AUTH_CONFIG = "auth.ini"
AUTH_DATABASE = "auth.db"
FLASK_SECRET = "flask-secret-key"
SECURITY_TOML = "security.toml"
SEAWEEDFS_FILES = (SECURITY_TOML, "ca.crt", "node.crt", "node.key")
# Where k8s/base/services/seaweedfs.yaml mounts the Secret artlora-seaweedfs-security (weed's -config_dir there).
CLUSTER_CONFIG_DIR = Path("/etc/seaweedfs")
# Every part of weed that serves gRPC (and its clients) presents the same certificate: one user's processes.
WEED_GRPC_SECTIONS = ("master", "volume", "filer", "s3", "admin", "worker", "msg_broker", "msg_agent", "mq", "client")


@dataclass(frozen=True)
class Login:
    """A user of the MLflow server and their password."""

    username: str
    password: str = field(repr=False)

    @classmethod
    def generate(cls, username: str = ADMIN) -> Login:
        return cls(username, secrets.token_urlsafe(24))

    def environment(self) -> dict[str, str]:
        """The variables MLflow's client logs in with."""
        return {USERNAME: self.username, PASSWORD: self.password}


def private_folder(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def write_private(path: Path, text: str | bytes) -> None:
    """Write a file only its owner can read, replacing it whole (a reader never sees half of it)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
        out.write(text.encode() if isinstance(text, str) else text)
    os.replace(tmp, path)


def _kept_secret(path: Path) -> str:
    """A random secret stored in `path` the first time and read back afterwards."""
    if not path.exists():
        write_private(path, secrets.token_hex(32))
    return path.read_text().strip()


# -- MLflow ---------------------------------------------------------------------------------------------------


def mlflow_auth_environment(folder: Path, admin: Login) -> dict[str, str]:
    """Write `folder`/auth.ini (its user database `folder`/auth.db) and return what `mlflow server --app-name
    basic-auth` needs in its environment: the config's path, the admin's name and password (used only when the
    user database is new), and the Flask secret that signs the UI's CSRF tokens (kept across restarts)."""
    private_folder(folder)
    config = (
        "[mlflow]\n"
        # READ: a user without grants of their own may read, not write (a read-only user); the admin may do all.
        "default_permission = READ\n"
        f"database_uri = sqlite:///{folder / AUTH_DATABASE}\n"
        f"admin_username = {admin.username}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        # A verified login is remembered for a minute: the password hash MLflow checks costs about 0.1 s of CPU, on
        # every request (the suite's servers spent most of their time on it). With one web worker, a changed
        # password or user takes effect at once.
        "auth_cache_ttl_seconds = 60\n"
    )
    write_private(folder / AUTH_CONFIG, config)
    return {
        "MLFLOW_AUTH_CONFIG_PATH": str(folder / AUTH_CONFIG),
        "MLFLOW_AUTH_ADMIN_USERNAME": admin.username,
        "MLFLOW_AUTH_ADMIN_PASSWORD": admin.password,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": _kept_secret(folder / FLASK_SECRET),
    }


# -- SeaweedFS ------------------------------------------------------------------------------------------------


def seaweedfs_config(folder: Path, read_at: Path | None = None) -> Path:
    """`folder` holding security.toml, its JWT keys and the gRPC certificates: made the first time, kept after (a
    restarted store and its owner's `weed shell -config_dir=...` use the same). The folder, for -config_dir.

    security.toml names the certificate files by the path weed finds them at: `read_at` (a Kubernetes Secret's
    mount path, CLUSTER_CONFIG_DIR), else `folder` itself."""
    private_folder(folder)
    if (folder / SECURITY_TOML).exists():
        return folder
    where = read_at or folder
    ca, certificate, key = _certificates()
    for name, pem in (("ca.crt", ca), ("node.crt", certificate), ("node.key", key)):
        write_private(folder / name, pem)
    jwt = "".join(
        f'[{section}]\nkey = "{secrets.token_hex(32)}"\nexpires_after_seconds = 10\n'
        for section in ("jwt.signing", "jwt.signing.read", "jwt.filer_signing", "jwt.filer_signing.read")
    )
    grpc = "".join(
        f'[grpc.{part}]\ncert = "{where / "node.crt"}"\nkey = "{where / "node.key"}"\n' for part in WEED_GRPC_SECTIONS
    )
    access = "[access]\nui = false\n[filer.expose_directory_metadata]\nenabled = false\n"
    write_private(folder / SECURITY_TOML, f'{jwt}{access}[grpc]\nca = "{where / "ca.crt"}"\n{grpc}')
    return folder


def _certificates() -> tuple[bytes, bytes, bytes]:
    """A CA of its own and one certificate it signs (server and client use, for 127.0.0.1 and localhost): PEMs of
    the CA, the certificate and its key. weed does not check host names, only that the peer's certificate is the
    CA's."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())

    def builder(subject: str, public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(name("artlora-local-ca"))
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=3650))
        )

    ca = (
        builder("artlora-local-ca", ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    hosts = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    certificate = (
        builder("artlora-seaweedfs", key.public_key())
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectAlternativeName(hosts), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return ca.public_bytes(pem), certificate.public_bytes(pem), key_pem
