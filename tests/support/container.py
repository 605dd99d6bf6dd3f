"""Podman for the container tests: the engine set up as this machine needs it, images, a compose project.

This machine reaches Debian's archive and PyPI but no image registry, and refuses podman's
default runtime and ulimits: the engine runs with runc and lower limits (a ``CONTAINERS_CONF``
file), the base image is made from Debian's packages (``deployments/container/build-debian-base``)
once and then reused, and pip inside a build trusts the host's CA bundle through a build secret.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from tests.support.debian import ensure_debian_package

REPO_ROOT = Path(__file__).resolve().parents[2]
CONTAINER_DIR = REPO_ROOT / "deployments" / "container"
BASE_IMAGE = "localhost/debian-python:bookworm"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
ENGINE_CONF = """\
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
"""


class PodmanError(RuntimeError):
    """A podman or podman-compose command failed; the message has its command and output's end."""


def _output_tail(result: subprocess.CompletedProcess[str]) -> str:
    return f"{(result.stdout or '')[-3000:]}{(result.stderr or '')[-3000:]}"


class Podman:
    """The podman CLI with this machine's engine configuration (written under ``conf_dir``)."""

    def __init__(self, conf_dir: Path) -> None:
        for binary, package in (
            ("podman", "podman"),
            ("runc", "runc"),
            ("mmdebstrap", "mmdebstrap"),
            # Container names resolve on a compose network through aardvark-dns (not on PATH).
            ("/usr/lib/podman/aardvark-dns", "aardvark-dns"),
        ):
            ensure_debian_package(binary, package)
        conf_dir.mkdir(parents=True, exist_ok=True)
        conf = conf_dir / "containers.conf"
        conf.write_text(ENGINE_CONF)
        self.env = {**os.environ, "CONTAINERS_CONF": str(conf)}

    def run(
        self, *args: str, check: bool = True, timeout: float = 600, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``podman ARGS``; a failure (when ``check``) raises PodmanError with the output."""
        return self._run(["podman", *args], check=check, timeout=timeout, env=env)

    def _run(
        self, argv: list[str], *, check: bool, timeout: float, env: Mapping[str, str] | None = None, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            argv, env={**self.env, **(env or {})}, cwd=cwd, capture_output=True, text=True, timeout=timeout,
            stdin=subprocess.DEVNULL, check=False,
        )
        if check and result.returncode != 0:
            raise PodmanError(f"{' '.join(argv[:6])} ... exited {result.returncode}:\n{_output_tail(result)}")
        return result

    def image_id(self, image: str) -> str | None:
        """The image's id, or None when there is no such image."""
        result = self.run("image", "inspect", "--format", "{{.Id}}", image, check=False)
        return result.stdout.strip() if result.returncode == 0 else None

    def ensure_base_image(self) -> bool:
        """Make the Debian base image unless it exists; True when it was made now."""
        if self.image_id(BASE_IMAGE):
            return False
        self._run([str(CONTAINER_DIR / "build-debian-base"), BASE_IMAGE], check=True, timeout=900)
        return True

    def build(self, image: str, dockerfile: Path, context: Path, build_args: Mapping[str, str] | None = None) -> str:
        """Build ``image`` (docker format, so HEALTHCHECK is kept); returns its id.

        The host's CA bundle is a build secret (never a layer); the image this tag named before,
        when replaced, is removed so that repeated builds do not pile up.
        """
        previous = self.image_id(image)
        args = ["build", "--format", "docker", "--file", str(dockerfile), "--tag", image]
        for name, value in (build_args or {}).items():
            args += ["--build-arg", f"{name}={value}"]
        if HOST_CA_BUNDLE.is_file():
            args += ["--secret", f"id=ca,src={HOST_CA_BUNDLE}"]
        self.run(*args, str(context), timeout=1200)
        built = self.image_id(image)
        assert built, f"podman build left no image {image}"
        if previous and previous != built:
            self.run("rmi", previous, check=False)  # still used by a container: kept
        return built

    def inspect(self, kind: str, name: str) -> dict[str, object]:
        """``podman KIND inspect NAME`` as a dict."""
        found = json.loads(self.run(kind, "inspect", name).stdout)
        assert isinstance(found, list) and found, f"podman {kind} inspect {name}: nothing"
        return dict(found[0])

    def wait_healthy(self, container: str, timeout: float = 120) -> None:
        """Run the container's health check until it passes (no systemd here runs it on a timer)."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.run("inspect", "--format", "{{.State.Status}}", container, check=False).stdout.strip()
            if state not in ("running", "created", "configured", "initialized"):
                logs = self.run("logs", "--tail", "40", container, check=False)
                raise PodmanError(f"{container} is {state or 'gone'} before its health check passed:\n{_output_tail(logs)}")
            result = self.run("healthcheck", "run", container, check=False, timeout=60)
            if result.returncode == 0:
                return
            if time.monotonic() > deadline:
                logs = self.run("logs", "--tail", "40", container, check=False)
                raise PodmanError(f"{container} not healthy after {timeout:.0f}s ({_output_tail(result).strip()}):\n{_output_tail(logs)}")
            time.sleep(1)


class ComposeProject:
    """One podman-compose project: up in stages, then torn down whole (containers, volumes, network)."""

    def __init__(self, podman: Podman, name: str, files: Iterable[Path], env: Mapping[str, str]) -> None:
        self.podman = podman
        self.name = name
        self.files = list(files)
        self.env = dict(env)
        # podman-compose of this venv (the test extra), run by this interpreter.
        self.compose = [str(Path(sys.executable).with_name("podman-compose"))]

    def _compose(self, *args: str, timeout: float = 600, profiles: Iterable[str] = ()) -> subprocess.CompletedProcess[str]:
        argv = [*self.compose, "--project-name", self.name]
        for file in self.files:
            argv += ["--file", str(file)]
        for profile in profiles:
            argv += ["--profile", profile]
        return self.podman._run([*argv, *args], check=True, timeout=timeout, env=self.env, cwd=self.files[0].parent)

    def container(self, service: str) -> str:
        """The name of the service's (first) container."""
        return f"{self.name}_{service}_1"

    def up(self, *services: str, profiles: Iterable[str] = ()) -> None:
        """Start these services only (their dependencies were started and checked before)."""
        self._compose("up", "--detach", "--no-deps", *services, profiles=profiles)

    def wait_exit(self, service: str, timeout: float = 300) -> int:
        """Wait for a one-shot service's container to exit; its exit code."""
        result = self.podman.run("wait", self.container(service), timeout=timeout)
        return int(result.stdout.strip().splitlines()[-1])

    def logs(self, service: str) -> str:
        result = self.podman.run("logs", self.container(service), check=False)
        return f"{result.stdout}{result.stderr}"

    def down(self) -> list[str]:
        """Remove every container (with its anonymous volumes), named volume and network of the
        project, whatever state it is in; returns what could not be removed."""
        label = f"label=io.podman.compose.project={self.name}"
        containers = self.podman.run("ps", "--all", "--quiet", "--filter", label, check=False).stdout.split()
        if containers:
            self.podman.run("rm", "--force", "--volumes", "--time", "20", *containers, check=False, timeout=300)
        volumes = self.podman.run("volume", "ls", "--quiet", "--filter", label, check=False).stdout.split()
        if volumes:
            self.podman.run("volume", "rm", "--force", *volumes, check=False)
        networks = self._networks()
        if networks:
            self.podman.run("network", "rm", "--force", *networks, check=False)
        left = self.podman.run("ps", "--all", "--quiet", "--filter", label, check=False).stdout.split()
        left += self.podman.run("volume", "ls", "--quiet", "--filter", label, check=False).stdout.split()
        left += self._networks()
        return left

    def _networks(self) -> list[str]:
        names = self.podman.run("network", "ls", "--format", "{{.Name}}", check=False).stdout.split()
        return [name for name in names if name.startswith(f"{self.name}_")]
