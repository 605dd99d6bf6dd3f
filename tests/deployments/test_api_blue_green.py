"""Blue-green release of the API behind Debian's nginx (deployments/bluegreen/switch), under load.

Both colours are real ``citadel api`` processes sharing the real Postgres registry and a Qdrant
REST server (the embedded store admits one process); nginx runs the production citadel.conf with
TLS in a private prefix. Eight clients call /livez and an authenticated embedding route through
nginx while the script switches: not one request may fail (a non-2xx answer or a transport error).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from citadel.testing.prefect_server import free_port
from tests.conftest import POSTGRES_URL
from tests.deployments.test_nginx import CONF, nginx_prefix
from tests.support.debian import ensure_debian_package
from tests.support.qdrant_server import QdrantTestServer

pytestmark = pytest.mark.system  # its tests start processes of their own (see tests/conftest.py)

REPO_ROOT = Path(__file__).resolve().parents[2]
SWITCH = REPO_ROOT / "deployments" / "bluegreen" / "switch"
CITADEL = Path(sys.executable).with_name("citadel")
CLIENTS = 8
PAUSE_S = 0.02  # between a client's requests: steady traffic that leaves the new instance CPU to start


@dataclass
class Services:
    """What both colours share: the registry, the vector store, an API key, the base environment."""

    env: dict[str, str]
    key: str


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    ensure_debian_package("curl", "curl")  # the script's readiness checks
    root = tmp_path_factory.mktemp("bluegreen")
    with QdrantTestServer(root / "qdrant") as qdrant:
        env = {k: v for k, v in os.environ.items() if not (k.startswith("CITADEL_") and not k.startswith("CITADEL_TEST_"))}
        env.update({
            "CITADEL_DATA_DIR": str(root / "data"), "CITADEL_DATABASE_URL": POSTGRES_URL, "CITADEL_QDRANT_URL": qdrant.url,
            "CITADEL_API_RATE_LIMITS": "100000/second", "CITADEL_API_TRUSTED_PROXIES": "127.0.0.1/32",
            "PREFECT_LOGGING_LEVEL": "WARNING",
        })
        created = subprocess.run(
            [str(CITADEL), "apikey", "create", "--name", "bluegreen-load", "--scopes", "embeddings,search", "--collections", "*", "--json"],
            env=env, cwd=root, capture_output=True, text=True, timeout=60, check=False,
        )
        assert created.returncode == 0, created.stderr
        yield Services(env, json.loads(created.stdout)["key"])


@dataclass
class Site:
    """nginx in front of the two colours, and how to run the switch script against it."""

    root: Path
    url: str
    ca: Path
    env: dict[str, str]
    ports: dict[str, int]
    nginx: subprocess.Popen[bytes] | None = None

    @property
    def upstream(self) -> Path:
        return self.root / "citadel-upstream.conf"

    @property
    def state(self) -> Path:
        return self.root / "bluegreen" / "active"

    def switch(self, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(SWITCH), *args], env={**self.env, **extra_env}, cwd=self.root,
            capture_output=True, text=True, timeout=180, check=False,
        )

    def pid(self, colour: str) -> int | None:
        """The running instance of ``colour`` (started by the script), if any."""
        pid_file = self.state.parent / f"citadel-api-{self.ports[colour]}.pid"
        try:
            pid = int(pid_file.read_text())
        except (FileNotFoundError, ValueError):
            return None
        return pid if running(pid) else None


def running(pid: int) -> bool:
    """True while ``pid`` exists and is no zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def make_site(services: Services, root: Path) -> Site:
    """nginx's private prefix in ``root`` with citadel.conf on free loopback ports, and the switch's
    settings for it: the plain manager, blue and green on free ports, everything under ``root``."""
    nginx = ensure_debian_package("nginx", "nginx")
    http_port, https_port = free_port(), free_port()
    text = CONF.read_text()
    for directive in ("listen 80;", "listen 443 ssl http2;"):
        assert text.count(directive) == 1, f"{directive} should appear once in {CONF.name}"
    text = text.replace("listen 80;", f"listen 127.0.0.1:{http_port};")
    text = text.replace("listen 443 ssl http2;", f"listen 127.0.0.1:{https_port} ssl http2;")
    main = nginx_prefix(root, text)
    ports = {"blue": free_port(), "green": free_port()}
    env = {
        **services.env, "CITADEL_BG_MANAGER": "plain", "CITADEL_BG_COMMAND": str(CITADEL),
        "CITADEL_BG_BLUE_PORT": str(ports["blue"]), "CITADEL_BG_GREEN_PORT": str(ports["green"]),
        "CITADEL_BG_STATE": str(root / "bluegreen" / "active"), "CITADEL_BG_UPSTREAM": str(root / "citadel-upstream.conf"),
        "CITADEL_BG_NGINX": nginx, "CITADEL_BG_NGINX_CONF": str(main), "CITADEL_BG_READY_TIMEOUT": "60",
    }
    return Site(root, f"https://127.0.0.1:{https_port}", root / "tls" / "ca.pem", env, ports)


@pytest.fixture(scope="module")
def site(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """nginx (Debian's) running, and blue live behind it after a first switch; each test leaves blue live."""
    tmp_path = tmp_path_factory.mktemp("site")
    result = make_site(services, tmp_path)
    main = result.env["CITADEL_BG_NGINX_CONF"]
    command = [result.env["CITADEL_BG_NGINX"], "-c", main, "-e", str(tmp_path / "error.log"), "-g", "daemon off;"]
    result.nginx = subprocess.Popen(command, cwd=tmp_path)
    try:
        wait_for(lambda: (tmp_path / "nginx.pid").exists(), "nginx did not start")
        first = result.switch("blue")  # the first release: nothing live yet
        assert first.returncode == 0, first.stderr
        yield result
    finally:
        stop_instances(result)
        result.nginx.send_signal(signal.SIGQUIT)
        result.nginx.wait(timeout=30)


def stop_instances(site: Site) -> None:
    """SIGTERM to each colour still running (they outlive the script that started them), then wait."""
    pids = [pid for colour in site.ports if (pid := site.pid(colour)) is not None]
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not any(running(pid) for pid in pids), "an instance did not stop on SIGTERM", timeout=40)


def wait_for(condition: Callable[[], bool], message: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.05)


@dataclass
class Load:
    """``CLIENTS`` threads calling nginx in a loop until stopped; every failure is kept."""

    site: Site
    key: str
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Load:
        self._threads = [threading.Thread(target=self._client, args=(n,), daemon=True) for n in range(CLIENTS)]
        for thread in self._threads:
            thread.start()
        wait_for(lambda: self.ok >= CLIENTS, "the load made no successful request through nginx")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    @property
    def total(self) -> int:
        return self.ok + len(self.failures)

    def _client(self, number: int) -> None:
        headers = {"X-API-Key": self.key}
        # A connection per request: a reload closes idle keep-alive connections to nginx, and a request
        # sent on one at that instant is lost before nginx reads it (any nginx reload; clients retry).
        close = {"Connection": "close"}
        with httpx.Client(base_url=self.site.url, verify=str(self.site.ca), timeout=30, headers=close) as client:
            sent = 0
            while not self._stop.is_set():
                sent += 1
                try:
                    if sent % 2:
                        response = client.get("/livez")
                    else:
                        body = {"text": f"client {number} text {sent}"}
                        response = client.post("/api/v1/embeddings/generate", headers=headers, json=body)
                    failure = None
                    if not response.is_success:
                        failure = f"{response.request.method} {response.url.path}: {response.status_code} {response.text[:200]}"
                except httpx.HTTPError as exc:
                    failure = f"{type(exc).__name__}: {exc}"
                with self._lock:
                    if failure is None:
                        self.ok += 1
                    else:
                        self.failures.append(failure)
                time.sleep(PAUSE_S)


def upstream_ports(site: Site) -> list[str]:
    """The ``server`` lines of the upstream file, without comments."""
    lines = (line.split("#", 1)[0].strip() for line in site.upstream.read_text().splitlines())
    return [line for line in lines if line]


def switch_under_load(site: Site, load: Load, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the switch while ``load`` runs, then one more second of load; report the numbers."""
    before = load.total
    started = time.monotonic()
    result = site.switch(*args)
    took = time.monotonic() - started
    during = load.total - before
    time.sleep(1)  # the old colour is stopped: every request from here on is the new one's
    after = load.total - before - during
    print(f"\nswitch {' '.join(args) or '(to the idle colour)'}: {took:.1f}s, {during} requests during it, "
          f"{after} in the second after, {len(load.failures)} failed so far\n{result.stderr}", end="")
    assert result.returncode == 0, result.stderr
    assert during > CLIENTS and after > 0
    return result


def test_switch_and_rollback_under_load_fail_no_request(site: Site, services: Services) -> None:
    blue = site.pid("blue")
    assert blue is not None and upstream_ports(site) == [f"server 127.0.0.1:{site.ports['blue']};"]
    with Load(site, services.key) as load:
        switch_under_load(site, load)
        green = site.pid("green")
        assert not running(blue), "blue still runs after the switch"
        assert green is not None
        assert upstream_ports(site) == [f"server 127.0.0.1:{site.ports['green']};"]
        assert site.state.read_text().strip() == "green"
        status = site.switch("status")
        assert status.returncode == 0, status.stderr
        assert "live: green" in status.stdout and f"blue (127.0.0.1:{site.ports['blue']}): stopped" in status.stdout, status.stdout
        again = site.switch("green")
        assert again.returncode == 2 and "green is already live" in again.stderr, again.stderr

        back = switch_under_load(site, load, "--rollback")
        assert "rolling back to blue" in back.stderr, back.stderr
    assert not load.failures, f"{len(load.failures)} of {load.total} requests failed: {load.failures[:5]}"
    print(f"{load.total} requests in all, none failed")
    assert not running(green), "green still runs after the rollback"
    assert site.pid("blue") not in (None, blue), "blue was not started afresh"
    assert upstream_ports(site) == [f"server 127.0.0.1:{site.ports['blue']};"]
    assert site.state.read_text().strip() == "blue"


def test_new_instance_not_ready_keeps_old_live(site: Site, services: Services) -> None:
    """Green exits at start (a bad setting), then is not ready in time: each time the script stops
    it, exits 1 and leaves blue live, and blue serves on."""
    blue = site.pid("blue")
    assert blue is not None
    with Load(site, services.key) as load:
        exited = site.switch(CITADEL_API_RATE_LIMITS="fast")
        # Green starts, but its Qdrant is unreachable: /readyz answers 503 for as long as it is waited for.
        slow = site.switch(CITADEL_BG_READY_TIMEOUT="3", CITADEL_QDRANT_URL="http://127.0.0.1:9")
        time.sleep(0.5)
    print(f"\nrefused switches: {load.total} requests, {len(load.failures)} failed\n{exited.stderr}{slow.stderr}")
    assert exited.returncode == 1, exited.stderr
    assert "green" in exited.stderr and "exited while starting" in exited.stderr, exited.stderr
    green_log = site.state.parent / f"citadel-api-{site.ports['green']}.log"
    assert "CITADEL_API_RATE_LIMITS: 'fast' is not a limit" in green_log.read_text(), green_log.read_text()[-2000:]
    assert slow.returncode == 1, slow.stderr
    assert "not ready within 3s" in slow.stderr and "stopping green" in slow.stderr, slow.stderr
    for result in (exited, slow):
        assert "blue stays live" in result.stderr, result.stderr
    assert not load.failures, f"{len(load.failures)} of {load.total} requests failed: {load.failures[:5]}"
    assert site.pid("green") is None, "green was left running"
    assert site.pid("blue") == blue
    assert upstream_ports(site) == [f"server 127.0.0.1:{site.ports['blue']};"]
    assert site.state.read_text().strip() == "blue"


def test_refuses_without_nginx_or_with_bad_usage(services: Services, tmp_path: Path) -> None:
    """Nothing is started when nginx is not running, and bad arguments are named (exit 2)."""
    site = make_site(services, tmp_path)
    result = site.switch()
    assert result.returncode == 1 and "nginx is not running" in result.stderr, result.stderr
    assert site.pid("blue") is None and not site.state.exists()
    for args, message, code in [
        (["purple"], "unknown argument 'purple'", 2),
        (["--green-port", "x"], "--green-port must be a port number", 2),
        (["--manager", "docker"], "--manager must be systemd or plain", 2),
        (["--rollback"], "nothing is live yet", 1),
    ]:
        refused = site.switch(*args)
        assert (refused.returncode, message in refused.stderr) == (code, True), (args, refused.returncode, refused.stderr)
