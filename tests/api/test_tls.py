"""``citadel api --ssl-certfile --ssl-keyfile``: TLS 1.2 and 1.3 only, HSTS on every response."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme

from citadel.testing.api_process import ApiProcess
from tests.api.conftest import base_env

pytestmark = pytest.mark.system  # its tests start processes of their own (see tests/conftest.py)


@pytest.fixture(scope="module")
def tls_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ApiProcess, trustme.CA]]:
    root = tmp_path_factory.mktemp("api-tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.cert_chain_pems[0].write_to_path(root / "cert.pem")
    for pem in cert.cert_chain_pems[1:]:
        pem.write_to_path(root / "cert.pem", append=True)
    cert.private_key_pem.write_to_path(root / "key.pem")
    api = ApiProcess(base_env(root / "data"), root, scheme="https",
                     args=["--ssl-certfile", str(root / "cert.pem"), "--ssl-keyfile", str(root / "key.pem")])
    ca_file = root / "ca.pem"
    ca.cert_pem.write_to_path(ca_file)
    api.start(verify=str(ca_file))
    yield api, ca
    api.stop()


def handshake(port: int, ca: trustme.CA, version: ssl.TLSVersion) -> str:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(context)
    context.minimum_version = version
    context.maximum_version = version
    if version < ssl.TLSVersion.TLSv1_2:
        context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer what the server must refuse
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        return str(tls.version())


def test_tls_below_1_2_is_refused_and_1_2_and_1_3_are_accepted(tls_api: tuple[ApiProcess, trustme.CA]) -> None:
    api, ca = tls_api
    for old in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            handshake(api.port, ca, old)
    assert handshake(api.port, ca, ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    assert handshake(api.port, ca, ssl.TLSVersion.TLSv1_3) == "TLSv1.3"


def test_only_forward_secret_aead_ciphers_on_tls_1_2(tls_api: tuple[ApiProcess, trustme.CA]) -> None:
    api, ca = tls_api
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(context)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers("AES128-SHA:AES256-SHA:AES128-GCM-SHA256")  # static RSA key exchange only
    with pytest.raises(ssl.SSLError):
        with socket.create_connection(("127.0.0.1", api.port), timeout=10) as raw:
            context.wrap_socket(raw, server_hostname="127.0.0.1").close()


def test_responses_over_tls_carry_hsts(tls_api: tuple[ApiProcess, trustme.CA], tmp_path: Path) -> None:
    api, ca = tls_api
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(ca_file)
    response = httpx.get(f"{api.url}/api/v1/health", verify=str(ca_file))
    assert response.status_code == 200
    assert response.headers["strict-transport-security"] == "max-age=63072000; includeSubDomains"
