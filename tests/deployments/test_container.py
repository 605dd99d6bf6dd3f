"""The container image and the compose stack (deployments/container/), built and run with podman.

No image registry can be reached here: the image is built on a base made from Debian's packages,
and the compose stack runs with Postgres, Redis and a Qdrant stand-in from local images
(deployments/container/test/compose.test.yaml). The static checks hold for the production files
as they are: hadolint on the Dockerfiles, the compose specification's schema, the stack's rules,
and the lock against pyproject.toml.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
import tomllib
import uuid
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from citadel.testing.prefect_server import free_port
from tests.support.container import BASE_IMAGE, CONTAINER_DIR, REPO_ROOT, ComposeProject, Podman
from tests.support.debian import ensure_debian_package

# One worker runs the podman tests, one after another (they build and run images of fixed names); the
# first builds the base image from Debian's packages on a fresh machine, which takes minutes.
pytestmark = [pytest.mark.system, pytest.mark.timeout(1800)]

DOCKERFILE = CONTAINER_DIR / "Dockerfile"
COMPOSE = CONTAINER_DIR / "compose.yaml"
TEST_DIR = CONTAINER_DIR / "test"
COMPOSE_TEST = TEST_DIR / "compose.test.yaml"
APP_IMAGE = "localhost/citadel-test:latest"
POSTGRES_IMAGE = "localhost/citadel-test-postgres:bookworm"
REDIS_IMAGE = "localhost/citadel-test-redis:bookworm"
VENV_BIN = Path(sys.executable).parent
# The environment the lock is for: the image's Python on Linux.
LOCK_ENV = {"python_version": "3.11", "python_full_version": "3.11.2", "sys_platform": "linux", "platform_system": "Linux",
            "platform_machine": "x86_64", "implementation_name": "cpython", "platform_python_implementation": "CPython", "os_name": "posix"}


def run(*argv: str | Path, timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL, env=env
    )


# static checks -------------------------------------------------------------------------------


def test_dockerfiles_pass_hadolint() -> None:
    dockerfiles = [DOCKERFILE, *sorted(TEST_DIR.glob("*.Dockerfile"))]
    assert len(dockerfiles) == 3
    result = run(VENV_BIN / "hadolint", "--no-color", *dockerfiles)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_scripts_pass_shellcheck() -> None:
    shellcheck = ensure_debian_package("shellcheck", "shellcheck")
    scripts = [CONTAINER_DIR / name for name in ("entrypoint", "lock", "build-debian-base")] + [TEST_DIR / "postgres-entrypoint"]
    result = run(shellcheck, "--shell=sh", *scripts)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_files_follow_the_compose_specification(tmp_path: Path) -> None:
    for file in (COMPOSE, COMPOSE_TEST):
        result = run(VENV_BIN / "check-jsonschema", "--builtin-schema", "vendor.compose-spec", file)
        assert result.returncode == 0, f"{file.name}: {result.stdout}{result.stderr}"
    # The validator does reject what the specification does not allow.
    broken = tmp_path / "compose.yaml"
    broken.write_text("services:\n  api:\n    image: citadel\n    depends_on:\n      setup:\n        condition: when_ready\n")
    result = run(VENV_BIN / "check-jsonschema", "--builtin-schema", "vendor.compose-spec", broken)
    assert result.returncode == 1 and "when_ready" in result.stdout


def _compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_compose_stack_services_health_and_order() -> None:
    services = _compose()["services"]
    assert set(services) == {"api", "worker", "setup", "backup", "prefect-server", "postgres", "redis", "qdrant",
                             "prometheus", "alertmanager", "grafana", "ollama"}
    assert services["qdrant"]["image"].startswith("${QDRANT_IMAGE:-qdrant/qdrant:")
    # Ollama and the backup job start only when asked for.
    assert {name: service["profiles"] for name, service in services.items() if "profiles" in service} == {
        "ollama": ["ollama"], "backup": ["backup"]}
    # Every long-running service has a health check; the one-shot jobs run once and must succeed.
    assert services["setup"]["command"] == ["setup"]
    assert services["backup"]["command"][:3] == ["citadel", "backup", "create"]
    for name, service in services.items():
        if name in ("setup", "backup"):
            assert service["restart"] == "no" and service["healthcheck"] == {"disable": True}
        else:
            assert service["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name
        for dependency, how in service.get("depends_on", {}).items():
            wanted = "service_completed_successfully" if dependency == "setup" else "service_healthy"
            assert how == {"condition": wanted}, f"{name} -> {dependency}"
    for name in ("api", "worker", "prometheus"):
        assert services[name]["depends_on"]["setup"] == {"condition": "service_completed_successfully"}
    for name in ("api", "worker", "setup"):
        assert set(services[name]["depends_on"]) >= {"postgres", "redis", "qdrant", "prefect-server"}
    # One image for the API, the worker, the setup and the Prefect server.
    images = {services[name]["image"] for name in ("api", "worker", "setup", "backup", "prefect-server")}
    assert images == {"${CITADEL_IMAGE:-citadel:latest}"}
    assert services["worker"]["command"][0] == "worker" and services["prefect-server"]["command"] == ["prefect-server"]


def test_compose_publishes_only_the_api_and_the_uis() -> None:
    services = _compose()["services"]
    published = {name: service["ports"] for name, service in services.items() if "ports" in service}
    assert set(published) == {"api", "grafana", "prefect-server", "prometheus", "alertmanager"}
    assert published["api"] == ["${CITADEL_API_BIND:-0.0.0.0}:${CITADEL_API_PORT:-8000}:8000"]
    assert published["grafana"] == ["${GRAFANA_BIND:-0.0.0.0}:${GRAFANA_PORT:-3000}:3000"]
    # The UIs without a login listen on the loopback only.
    assert published["prefect-server"] == ["${PREFECT_UI_BIND:-127.0.0.1}:${PREFECT_UI_PORT:-4200}:4200"]
    assert published["prometheus"] == ["127.0.0.1:${PROMETHEUS_PORT:-9090}:9090"]
    assert published["alertmanager"] == ["127.0.0.1:${ALERTMANAGER_PORT:-9093}:9093"]


def test_compose_volumes_are_named_and_secrets_come_from_the_env_file() -> None:
    compose = _compose()
    declared = set(compose["volumes"])
    text = COMPOSE.read_text()
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            assert source.startswith(".") or source in declared, f"{name}: {volume} is neither a named volume nor a repository file"
            if source.startswith("."):
                assert (CONTAINER_DIR / source).exists(), f"{name}: {source} does not exist"
                assert volume.endswith(":ro"), f"{name}: {volume} should be read-only"
    # No secret is written in the file: each is a variable of the env file, required where needed.
    required = set(re.findall(r"\$\{([A-Z_]+):\?", text))
    assert required == {"POSTGRES_PASSWORD", "REDIS_PASSWORD", "QDRANT_API_KEY", "GRAFANA_ADMIN_PASSWORD"}
    for name, service in compose["services"].items():
        for variable, value in (service.get("environment") or {}).items():
            if re.search(r"(PASSWORD|API_KEY|SECRET|AUTH)$", variable):
                assert re.fullmatch(r"\$\{[A-Z_]+(:[-?][^}]*)?\}", str(value)), f"{name}: {variable} is not taken from the env file"
    example = dict(line.split("=", 1) for line in (CONTAINER_DIR / ".env.example").read_text().splitlines() if re.match(r"^[A-Z_]+=", line))
    used = set(re.findall(r"\$\{([A-Z_]+)", text))
    assert required <= set(example) and set(example) <= used, sorted(set(example) - used)
    assert "deployments/container/.env" in (REPO_ROOT / ".gitignore").read_text().splitlines()
    # The build context leaves out everything but what the image is built from (checked in the image too).
    dockerignore = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in dockerignore and "**/.env" in dockerignore


def test_compose_resolves_with_the_env_example_and_refuses_a_missing_secret(tmp_path: Path, podman: Podman) -> None:
    # podman-compose asks podman for its version first: the fixture installs podman on a fresh machine.
    compose = [str(VENV_BIN / "podman-compose"), "--file", str(COMPOSE)]
    example = CONTAINER_DIR / ".env.example"
    # Only the env file speaks: none of the stack's variables comes from this process's environment.
    clean = {name: value for name, value in os.environ.items() if not name.startswith(("POSTGRES_", "REDIS_", "QDRANT_", "GRAFANA_"))}
    services = {}
    for profile in ([], ["--profile", "ollama"]):
        result = run(*compose[:1], "--env-file", example, *profile, *compose[1:], "config", env=clean)
        assert result.returncode == 0, result.stderr[-2000:]
        services[bool(profile)] = yaml.safe_load(result.stdout)["services"]
    assert "ollama" not in services[False] and "ollama" in services[True]
    assert services[False]["api"]["environment"]["CITADEL_DATABASE_URL"] == "postgresql://citadel:change-me@postgres:5432/citadel"
    incomplete = tmp_path / ".env"
    incomplete.write_text("".join(line + "\n" for line in example.read_text().splitlines() if not line.startswith("POSTGRES_PASSWORD=")))
    result = run(*compose[:1], "--env-file", incomplete, *compose[1:], "config", env=clean)
    assert result.returncode != 0
    assert "POSTGRES_PASSWORD is missing a value: set POSTGRES_PASSWORD in deployments/container/.env" in result.stderr


def test_compose_monitoring_uses_the_repository_configuration() -> None:
    services = _compose()["services"]
    prometheus_yml = yaml.safe_load((REPO_ROOT / "monitoring/prometheus/prometheus.yml").read_text())
    wanted = {file for job in prometheus_yml["scrape_configs"] for sd in job.get("file_sd_configs", []) for file in sd["files"]}
    targets = CONTAINER_DIR / "prometheus" / "targets"
    for file in wanted:
        listed = json.loads((targets / Path(file).name).read_text())
        assert isinstance(listed, list), file
    assert json.loads((targets / "citadel-api.json").read_text())[0]["targets"] == ["api:8000"]
    assert "./prometheus/targets:/etc/prometheus/targets:ro" in services["prometheus"]["volumes"]
    assert "/etc/prometheus/citadel-api-key" in services["prometheus"]["command"][0]
    assert services["setup"]["environment"]["PROMETHEUS_API_KEY_FILE"].startswith("/var/lib/citadel-keys/")
    assert "/etc/alertmanager/citadel/render /alertmanager/alertmanager.yml" in services["alertmanager"]["command"][0]
    grafana = services["grafana"]
    assert grafana["environment"]["PROMETHEUS_URL"] == "http://prometheus:9090"
    assert "../../monitoring/grafana/dashboards:/var/lib/grafana/dashboards/citadel:ro" in grafana["volumes"]
    assert "../../monitoring/grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]


def _locked(path: Path) -> dict[str, list[tuple[Version, Marker | None]]]:
    """name -> [(version, marker)] of a hash-pinned requirements file; every entry must have hashes."""
    pins: dict[str, list[tuple[Version, Marker | None]]] = {}
    for entry in re.split(r"\n(?=\S)", path.read_text()):
        if not entry.strip() or entry.startswith("#"):
            continue
        line = entry.split(" \\", 1)[0]
        requirement = Requirement(line)
        (spec,) = requirement.specifier
        assert spec.operator == "==", line
        assert "--hash=sha256:" in entry, f"{line}: no hash"
        pins.setdefault(canonicalize_name(requirement.name), []).append((Version(spec.version), requirement.marker))
    return pins


def _pin(pins: dict[str, list[tuple[Version, Marker | None]]], name: str) -> Version | None:
    for version, marker in pins.get(canonicalize_name(name), []):
        if marker is None or marker.evaluate(LOCK_ENV):
            return version
    return None


def _extra_requirements(name: str, extras: set[str]) -> list[Requirement]:
    """What ``name[extras]`` adds, from the installed distribution's metadata."""
    try:
        requires = distribution(name).requires or []
    except PackageNotFoundError:
        return []
    found = []
    for line in requires:
        requirement = Requirement(line)
        if requirement.marker and any(requirement.marker.evaluate({**LOCK_ENV, "extra": extra}) for extra in extras) \
                and not requirement.marker.evaluate({**LOCK_ENV, "extra": ""}):
            found.append(requirement)
    return found


def test_lock_satisfies_pyproject() -> None:
    """A dependency added to or narrowed in pyproject.toml without re-locking fails here."""
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    pins = _locked(CONTAINER_DIR / "requirements.lock")
    problems = []
    for line in pyproject["project"]["dependencies"]:
        requirement = Requirement(line)
        wanted = [requirement, *_extra_requirements(requirement.name, set(requirement.extras))]
        for each in wanted:
            version = _pin(pins, each.name)
            if version is None:
                problems.append(f"{each} (from {line}) is not in the lock")
            elif not each.specifier.contains(version, prereleases=True):
                problems.append(f"{each.name}=={version} in the lock does not satisfy {each} (from {line})")
    assert not problems, "re-lock with deployments/container/lock:\n" + "\n".join(problems)
    assert not set(pins) & {canonicalize_name(Requirement(t).name) for t in pyproject["project"]["optional-dependencies"]["test"]}
    build_pins = _locked(CONTAINER_DIR / "build-requirements.lock")
    for line in pyproject["build-system"]["requires"]:
        requirement = Requirement(line)
        version = _pin(build_pins, requirement.name)
        assert version is not None and requirement.specifier.contains(version), f"{line}: build-requirements.lock has {version}"
    for lock in ("requirements.lock", "build-requirements.lock"):
        header = (CONTAINER_DIR / lock).read_text().splitlines()[1]
        assert re.fullmatch(r"#\s+deployments/container/lock \d{4}-\d\d-\d\dT00:00:00Z", header), header


# the image -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Podman:
    return Podman(tmp_path_factory.mktemp("podman"))


@pytest.fixture(scope="module")
def app_image(podman: Podman) -> str:
    """Citadel's image on the Debian base (made once on this machine, then reused)."""
    podman.ensure_base_image()
    podman.build(APP_IMAGE, DOCKERFILE, REPO_ROOT, {"BASE_IMAGE": BASE_IMAGE})
    return APP_IMAGE


def _wait_ready(url: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            answer = httpx.get(url, timeout=5)
            if answer.status_code == 200:
                body: dict[str, Any] = answer.json()
                return body
            last = answer.text
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.5)
    raise AssertionError(f"{url} not ready after {timeout:.0f}s: {last}")


def _create_key(podman: Podman, container: str, scopes: str) -> str:
    name = f"test-{uuid.uuid4().hex[:6]}"
    result = podman.run("exec", container, "citadel", "apikey", "create", "--name", name, "--scopes", scopes,
                         "--collections", "*", "--sources", "*", "--json")
    key: str = json.loads(result.stdout)["key"]
    return key


def test_image_is_lean_non_root_and_keeps_no_secret(podman: Podman, app_image: str) -> None:
    image = podman.inspect("image", app_image)
    config = image["Config"]
    assert isinstance(config, dict)
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["tini", "--", "citadel-entrypoint"] and config["Cmd"] == ["api"]
    assert image["Healthcheck"] == {"Test": ["CMD", "citadel-entrypoint", "healthcheck"], "StartPeriod": 60 * 10**9,
                                    "Interval": 30 * 10**9, "Timeout": 5 * 10**9, "Retries": 3}
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["CITADEL_API_HOST"] == "0.0.0.0" and env["CITADEL_DATA_DIR"] == "/var/lib/citadel"
    assert not {"PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"} & set(env)
    assert "/var/lib/citadel" in config["Volumes"]
    script = (
        "for tool in gcc cc make; do command -v $tool && exit 1; done; "
        "test ! -e /run/secrets/ca && test ! -e /root/.cache/pip && test ! -e /var/lib/citadel/.cache/pip || exit 2; "
        "for path in /app/tests /app/.git /app/.venv /app/.env /app/bench /app/docs /app/build /app/deployments/container; do "
        "test ! -e $path || exit 3; done; "
        "test -f /app/prefect.yaml && test -f /app/flows/index_corpus.py || exit 4; "
        "test ! -w /app && test ! -w /opt/venv || exit 5; "
        "/opt/venv/bin/pip check >/dev/null || exit 6; citadel --help >/dev/null || exit 7"
    )
    result = podman.run("run", "--rm", "--entrypoint", "sh", app_image, "-c", script, check=False)
    assert result.returncode == 0, f"image check {result.returncode}: {result.stdout}{result.stderr}"


def test_the_installed_package_is_the_code_the_image_was_built_from(podman: Podman, app_image: str) -> None:
    """What `citadel` runs (the wheel in the venv) is this checkout's code, also when the image was
    built before from other code: a layer reused from the cache must not keep an older install."""
    packages = ("citadel", "cli", "api", "flows", "tasks", "orchestration", "deployments", "blocks")
    script = (
        "import hashlib, importlib, json, pathlib; out = {}\n"
        f"for name in {packages!r}:\n"
        "    root = pathlib.Path(importlib.import_module(name).__file__).parent\n"
        "    out.update({f'{name}/{p.relative_to(root)}': hashlib.sha256(p.read_bytes()).hexdigest()"
        " for p in root.rglob('*.py') if 'container' not in p.parts})\n"
        "print(json.dumps(out))"
    )
    installed = podman.run("run", "--rm", "--workdir", "/", "--entrypoint", "/opt/venv/bin/python", app_image, "-c", script)
    here = {}
    for name in packages:
        root = REPO_ROOT / name
        here.update({f"{name}/{p.relative_to(root)}": hashlib.sha256(p.read_bytes()).hexdigest()
                     for p in root.rglob("*.py") if "container" not in p.parts and "__pycache__" not in p.parts})
    digests = json.loads(installed.stdout)
    assert len(digests) > 100 and "citadel/registry/schema.py" in digests
    differ = sorted(name for name, digest in digests.items() if here.get(name) != digest)
    assert not differ, f"the image's installed code is not this checkout's: {differ[:10]}"


def test_api_container_serves_as_non_root_and_stops_gracefully(podman: Podman, app_image: str) -> None:
    name = f"citadel-test-api-{uuid.uuid4().hex[:8]}"
    port = free_port()
    podman.run("run", "--detach", "--name", name, "--publish", f"127.0.0.1:{port}:8000", app_image)
    try:
        ready = _wait_ready(f"http://127.0.0.1:{port}/readyz")
        assert ready["status"] == "healthy"
        podman.wait_healthy(name)  # the image's own HEALTHCHECK (/livez) passes
        key = _create_key(podman, name, "embeddings")
        url = f"http://127.0.0.1:{port}/api/v1/embeddings/generate"
        answer = httpx.post(url, headers={"X-API-Key": key}, json={"text": "hello"}, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["dimensions"] == len(answer.json()["embedding"]) > 0
        assert httpx.post(url, json={"text": "x"}, timeout=30).status_code == 401
        assert podman.run("exec", name, "id", "-u").stdout.strip() == "10001"
        users = podman.run("top", name, "user", "pid", "args").stdout.splitlines()[1:]
        assert users and all(line.split()[0] == "citadel" for line in users), users
        assert any("tini" in line.split(None, 2)[2] and line.split()[1] == "1" for line in users), users

        started = time.monotonic()
        podman.run("stop", "--time", "30", name, timeout=60)
        stopped_in = time.monotonic() - started
        state = podman.inspect("container", name)["State"]
        assert isinstance(state, dict)
        # SIGTERM reached the API through tini: it drained and exited 0, long before the 30 s
        # after which podman would have killed it (exit 137).
        assert state["ExitCode"] == 0, podman.run("logs", name, check=False).stderr[-2000:]
        logs = podman.run("logs", name, check=False)
        assert "Application shutdown complete" in logs.stdout + logs.stderr
        assert key not in logs.stdout + logs.stderr
        print(f"\npodman stop took {stopped_in:.1f}s")
    finally:
        podman.run("rm", "--force", "--volumes", name, check=False)


# the compose stack ---------------------------------------------------------------------------


@pytest.fixture
def compose_project(podman: Podman, app_image: str) -> Iterator[tuple[ComposeProject, int]]:
    """The stack's services that this machine can run, torn down whole at the end, even on failure."""
    podman.build(POSTGRES_IMAGE, TEST_DIR / "postgres.Dockerfile", TEST_DIR, {"BASE_IMAGE": BASE_IMAGE})
    podman.build(REDIS_IMAGE, TEST_DIR / "redis.Dockerfile", TEST_DIR, {"BASE_IMAGE": BASE_IMAGE})
    api_port = free_port()
    env = {
        "CITADEL_IMAGE": app_image, "TEST_POSTGRES_IMAGE": POSTGRES_IMAGE, "TEST_REDIS_IMAGE": REDIS_IMAGE,
        "POSTGRES_PASSWORD": uuid.uuid4().hex, "REDIS_PASSWORD": uuid.uuid4().hex, "QDRANT_API_KEY": uuid.uuid4().hex,
        "GRAFANA_ADMIN_PASSWORD": uuid.uuid4().hex, "CITADEL_API_BIND": "127.0.0.1", "CITADEL_API_PORT": str(api_port),
        "PREFECT_UI_PORT": str(free_port()), "CITADEL_API_WORKERS": "2",
    }
    project = ComposeProject(podman, f"citadeltest{uuid.uuid4().hex[:8]}", [COMPOSE, COMPOSE_TEST], env)
    try:
        yield project, api_port
    finally:
        left = project.down()
        assert not left, f"compose teardown left {left}"


def test_compose_stack_runs_a_workflow_on_the_worker(podman: Podman, compose_project: tuple[ComposeProject, int]) -> None:
    project, api_port = compose_project
    # The order of depends_on, each condition checked here: podman 4.3's compose cannot wait for health.
    project.up("postgres", "redis", "qdrant")
    for service in ("postgres", "redis", "qdrant"):
        podman.wait_healthy(project.container(service))
    project.up("prefect-server")
    podman.wait_healthy(project.container("prefect-server"), timeout=180)
    project.up("setup")
    assert project.wait_exit("setup") == 0, project.logs("setup")[-3000:]
    assert "created the metrics API key for Prometheus" in project.logs("setup")
    project.up("api", "worker")
    for service in ("api", "worker"):
        podman.wait_healthy(project.container(service), timeout=180)

    base = f"http://127.0.0.1:{api_port}"
    ready = _wait_ready(f"{base}/readyz")
    assert {name: check["status"] for name, check in ready["dependencies"].items()} == {
        "redis": "up", "qdrant": "up", "postgres": "up", "prefect": "up", "embedder": "embedded"}
    key = _create_key(podman, project.container("api"), "embeddings,search,workflows")
    headers = {"X-API-Key": key}
    workflow = {
        "workflow_id": "compose-check",
        "steps": [
            {"step_id": "index", "type": "index", "parameters": {"collection": "compose_check", "source": [
                {"id": "podman", "text": "Citadel runs its API and workers in containers."},
                {"id": "cache", "text": "Redis keeps the embeddings that were already computed."}]}},
            {"step_id": "search", "type": "search", "depends_on": ["index"],
             "parameters": {"query": "API and workers in containers", "collection": "compose_check", "limit": 1}},
        ],
    }
    answer = httpx.post(f"{base}/api/v1/orchestration/workflow", headers=headers, json=workflow, timeout=30)
    assert answer.status_code in (200, 202), answer.text
    assert answer.json()["runs_in"] == "workers"
    status_url = f"{base}{answer.json()['status_url']}"
    deadline = time.monotonic() + 180
    while True:
        polled = httpx.get(status_url, headers=headers, timeout=30)
        if polled.status_code == 503 and time.monotonic() < deadline:  # "try again later", as a client does
            time.sleep(float(polled.headers.get("Retry-After", "1")))
            continue
        assert polled.status_code == 200, f"{polled.status_code} {polled.text}\n{project.logs('api')[-3000:]}"
        status = polled.json()
        if status["status"] in ("Completed", "Failed", "Crashed", "Cancelled") or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert status["status"] == "Completed", f"{status}\n{project.logs('worker')[-3000:]}"
    assert "compose-check" in project.logs("worker")  # the worker, not the API, ran it

    query = {"query": "API and workers in containers", "collection": "compose_check", "limit": 1}
    hits = httpx.post(f"{base}/api/v1/search", headers=headers, json=query, timeout=30)
    assert hits.status_code == 200, hits.text
    assert hits.json()["hits"][0]["document_id"] == "podman"

    # The key that setup made for Prometheus scrapes /metrics; it is in no log.
    volume = f"{project.name}_prometheus-key"
    scrape_key = podman.run("run", "--rm", "--volume", f"{volume}:/keys:ro", "--entrypoint", "cat", project.env["CITADEL_IMAGE"],
                            "/keys/prometheus-api-key").stdout.strip()
    assert httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {scrape_key}"}, timeout=30).status_code == 200
    assert httpx.get(f"{base}/metrics", timeout=30).status_code == 401
    for service in ("setup", "api", "worker", "prefect-server"):
        assert scrape_key not in project.logs(service)
        assert project.env["POSTGRES_PASSWORD"] not in project.logs(service)

    # A backup of the running stack: pg_dump of the image against Postgres, Qdrant snapshots.
    project.up("backup", profiles=["backup"])
    assert project.wait_exit("backup") == 0, project.logs("backup")[-3000:]
    backups = f"{project.name}_backups:/backups:ro"
    shown = podman.run("run", "--rm", "--volume", backups, "--entrypoint", "sh", project.env["CITADEL_IMAGE"],
                       "-c", "cat /backups/citadel-backup-*Z/manifest.json")
    manifest = json.loads(shown.stdout)
    assert manifest["registry"]["kind"] == "postgres" and manifest["vectors"]["kind"] == "server"
    assert manifest["registry"]["version"].startswith("pg_dump (PostgreSQL) 15.")
    assert project.env["POSTGRES_PASSWORD"] not in shown.stdout
    assert {c["name"]: c["documents"] for c in manifest["collections"]}.get("compose_check") == 2

    # Stopped as compose stops them: each process gets SIGTERM and exits by itself.
    for service in ("api", "worker"):
        podman.run("stop", "--time", "30", project.container(service), timeout=60)
        state = podman.inspect("container", project.container(service))["State"]
        assert isinstance(state, dict)
        assert state["ExitCode"] == 0, f"{service} exited {state['ExitCode']}:\n{project.logs(service)[-2000:]}"
