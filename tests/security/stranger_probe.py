"""What another local user can do to a port without any key: run as that user (stranger.py), standard library only.

Reads a JSON request on stdin: {"ports": [...], "http": [[method, path, body], ...], "unix_sockets": [...]}.
For each TCP port it sends every HTTP request (a body that is a JSON object as JSON, the way MLflow's REST API
takes it, any other as a multipart upload, the way SeaweedFS's filer takes one) and tries a TLS handshake without
a client certificate; for each Unix socket, whether it may connect. Prints JSON: per port, the status and the
first 2000 bytes of each answer, and what the TLS attempt got."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import sys

BOUNDARY = "strangerboundary"


def http_request(port: int, method: str, path: str, body: str | None) -> dict:
    headers = {}
    payload = None
    if body and body.startswith("{"):
        payload, headers["Content-Type"] = body.encode(), "application/json"
    elif body is not None:
        part = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="planted.txt"\r\n\r\n'
        payload = f"{part}{body}\r\n--{BOUNDARY}--\r\n".encode()
        headers["Content-Type"] = f"multipart/form-data; boundary={BOUNDARY}"
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request(method, path, body=payload, headers=headers)
        response = connection.getresponse()
        return {"status": response.status, "body": response.read(2000).decode(errors="replace")}
    except (OSError, http.client.HTTPException) as error:
        return {"status": None, "error": type(error).__name__}


def tls_without_certificate(port: int) -> str:
    """`refused`: the handshake or the first read fails for want of a client certificate (TLS 1.3 says so after the
    handshake); `open`: TLS that lets an anonymous client talk; `no-tls`: not TLS at all."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, context.wrap_socket(raw) as tls:
            tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            answer = tls.recv(64)
            return "open" if answer else "refused"
    except ssl.SSLError as error:
        return "refused" if "CERTIFICATE" in str(error).upper() or "ALERT" in str(error).upper() else "no-tls"
    except OSError:
        return "refused"


def unix_socket(path: str) -> str:
    try:
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(path)
        return "connected"
    except PermissionError:
        return "permission denied"
    except OSError as error:
        return type(error).__name__


def main() -> None:
    request = json.load(sys.stdin)
    report: dict = {"ports": {}, "unix_sockets": {}}
    for port in request["ports"]:
        answers = [
            {"method": method, "path": path, **http_request(port, method, path, body)}
            for method, path, body in request["http"]
        ]
        report["ports"][str(port)] = {"http": answers, "tls": tls_without_certificate(port)}
    for path in request.get("unix_sockets", []):
        report["unix_sockets"][path] = unix_socket(path)
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    main()
