"""The production nginx configuration: real ``nginx -t`` on a copy, and its security directives.

The copy runs in a private prefix under tmp_path with certificates from trustme, so neither root's
directories nor /etc/citadel are needed. ``nginx -t`` binds no ports.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import trustme

from tests.support.debian import ensure_debian_package

pytestmark = pytest.mark.system  # its tests start processes of their own (see tests/conftest.py)

REPO_ROOT = Path(__file__).resolve().parents[2]
CONF = REPO_ROOT / "deployments" / "nginx" / "citadel.conf"
UPSTREAM_EXAMPLE = REPO_ROOT / "deployments" / "nginx" / "citadel-upstream.conf"
CERT_PATH = "/etc/citadel/tls/fullchain.pem"
KEY_PATH = "/etc/citadel/tls/privkey.pem"
UPSTREAM_PATH = "/etc/nginx/citadel-upstream.conf"


@pytest.fixture(scope="module")
def nginx() -> str:
    """Path of the nginx binary, installed from Debian when missing."""
    return ensure_debian_package("nginx", "nginx")


def nginx_prefix(root: Path, site: str) -> Path:
    """A private nginx prefix in ``root`` serving ``site`` from conf.d; returns its main nginx.conf.

    The certificate is for localhost and 127.0.0.1, its CA in ``tls/ca.pem``; the upstream include
    is ``citadel-upstream.conf`` of the prefix, a copy of the shipped example.
    """
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    tls = root / "tls"
    tls.mkdir()
    ca.cert_pem.write_to_path(str(tls / "ca.pem"))
    (tls / "fullchain.pem").write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(tls / "privkey.pem"))
    for path in (CERT_PATH, KEY_PATH, UPSTREAM_PATH):
        assert site.count(path) == 1, f"{path} should appear once in {CONF.name}"
    site = site.replace(CERT_PATH, str(tls / "fullchain.pem")).replace(KEY_PATH, str(tls / "privkey.pem"))
    (root / "citadel-upstream.conf").write_text(UPSTREAM_EXAMPLE.read_text())
    site = site.replace(UPSTREAM_PATH, str(root / "citadel-upstream.conf"))

    (root / "conf.d").mkdir()
    (root / "temp").mkdir()  # nginx makes only the last level of a temp path
    (root / "conf.d" / "citadel.conf").write_text(site)
    temp_paths = "\n".join(f"    {kind}_temp_path {root / 'temp' / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    main = root / "nginx.conf"
    main.write_text(
        f"pid {root / 'nginx.pid'};\n"
        f"error_log {root / 'error.log'};\n"
        "events {}\n"
        "http {\n"
        f"    access_log off;\n{temp_paths}\n"
        f"    include {root / 'conf.d'}/*.conf;\n"
        "}\n"
    )
    return main


def nginx_test(nginx: str, main: Path) -> subprocess.CompletedProcess[str]:
    """``nginx -t`` on ``main``, with every path (even the early error log) inside its prefix."""
    root = main.parent
    command = [nginx, "-t", "-c", str(main), "-p", f"{root}/", "-e", str(root / "error.log")]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def test_config_passes_nginx_t(nginx: str, tmp_path: Path) -> None:
    result = nginx_test(nginx, nginx_prefix(tmp_path, CONF.read_text()))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "syntax is ok" in output, output
    assert "test is successful" in output, output


def test_broken_config_fails_nginx_t(nginx: str, tmp_path: Path) -> None:
    """An unterminated block must fail, so the test above can fail too."""
    text = CONF.read_text().rstrip()
    assert text.endswith("}")
    result = nginx_test(nginx, nginx_prefix(tmp_path, text[:-1]))
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "unexpected end of file" in output, output
    assert "test failed" in output, output


def test_security_directives_present() -> None:
    lines = {re.sub(r"\s+", " ", line.split("#", 1)[0]).strip() for line in CONF.read_text().splitlines()}
    expected = [
        "ssl_protocols TLSv1.2 TLSv1.3;",
        "ssl_prefer_server_ciphers off;",
        "ssl_session_tickets off;",
        "client_max_body_size 1m;",
        "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "proxy_set_header X-Forwarded-Proto $scheme;",
        "proxy_set_header X-Request-ID $citadel_request_id;",
        "server_tokens off;",
        f"include {UPSTREAM_PATH};",
        "proxy_next_upstream error timeout;",
        'add_header Strict-Transport-Security "max-age=63072000; includeSubDomains" always;',
        "return 301 https://$host$request_uri;",
    ]
    missing = [directive for directive in expected if directive not in lines]
    assert not missing, f"{CONF.name} lacks: {missing}"
