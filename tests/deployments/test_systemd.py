"""The systemd units: ``systemd-analyze verify`` and ``security --offline`` on real copies, their key
directives, the install script run twice into a temporary root, and the program under the hardening
that can be reproduced without systemd as PID 1 (W^X memory, no capabilities, a read-only system).

``systemd-analyze --root`` reads the units from a temporary root holding systemd's own units and
stub ``citadel``/``prefect`` executables, so neither /etc nor /opt is touched.
"""

from __future__ import annotations

import ctypes
import hashlib
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.server import GRACEFUL_S
from citadel.testing.prefect_server import free_port
from citadel.variables import OTHER_VARIABLES, setting_variables
from tests.support.debian import ensure_debian_package

pytestmark = pytest.mark.system  # its tests start processes of their own (see tests/conftest.py)

REPO_ROOT = Path(__file__).resolve().parents[2]
SYSTEMD_DIR = REPO_ROOT / "deployments" / "systemd"
INSTALL = SYSTEMD_DIR / "install"
ENV_EXAMPLE = SYSTEMD_DIR / "citadel.env.example"
SERVICES = ["citadel-api@.service", "citadel-worker@.service", "citadel-prefect-server.service", "citadel-backup.service"]
UNIT_FILES = [*SERVICES, "citadel-backup.timer"]
# What `systemctl start` names: templates with an instance.
INSTANCES = {
    "citadel-api@.service": "citadel-api@8001.service",
    "citadel-worker@.service": "citadel-worker@1.service",
    "citadel-prefect-server.service": "citadel-prefect-server.service",
    "citadel-backup.service": "citadel-backup.service",
}
MAX_EXPOSURE = 2.0

HARDENING = {
    "CapabilityBoundingSet": "",
    "AmbientCapabilities": "",
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "DevicePolicy": "closed",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "ProtectClock": "yes",
    "ProtectHostname": "yes",
    "ProtectProc": "invisible",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "RestrictNamespaces": "yes",
    "RestrictRealtime": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "SystemCallArchitectures": "native",
    "UMask": "0077",
    "IPAddressDeny": "any",
}

PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1


def directives(path: Path) -> dict[str, dict[str, list[str]]]:
    """Section -> key -> every value given, in order (systemd keys may repeat)."""
    parsed: dict[str, dict[str, list[str]]] = {}
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            parsed.setdefault(section, {})
            continue
        key, _, value = line.partition("=")
        parsed[section].setdefault(key.strip(), []).append(value.strip())
    return parsed


def last(unit: dict[str, dict[str, list[str]]], section: str, key: str) -> str:
    values = unit.get(section, {}).get(key)
    assert values, f"{key}= missing from [{section}]"
    return values[-1]


@pytest.fixture(scope="module")
def systemd_analyze() -> str:
    return ensure_debian_package("systemd-analyze", "systemd")


def make_root(root: Path) -> Path:
    """A system image for --root: systemd's units, passwd/group, stub executables in the venv."""
    lib = Path("/usr/lib/systemd/system")
    shutil.copytree(lib, root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc").mkdir(parents=True, exist_ok=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")
    (root / "etc/group").write_text("root:x:0:\nnogroup:x:65534:\n")
    for name in ("shadow", "gshadow"):
        (root / "etc" / name).write_text("")
        (root / "etc" / name).chmod(0o640)
    bin_dir = root / "opt/citadel/venv/bin"
    bin_dir.mkdir(parents=True)
    for name in ("citadel", "prefect"):
        (bin_dir / name).write_text("#!/bin/sh\nexit 0\n")
        (bin_dir / name).chmod(0o755)
    return root


def run_install(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(INSTALL), "--root", str(root), *args], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture(scope="module")
def installed_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root the install script has put the units in (no venv: stubs stand for it)."""
    root = make_root(tmp_path_factory.mktemp("systemd-root"))
    result = run_install(root, "--no-venv")
    assert result.returncode == 0, result.stdout + result.stderr
    return root


def verify(analyze: str, root: Path, *units: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [analyze, "verify", "--man=no", f"--root={root}", *units], capture_output=True, text=True, timeout=60, check=False
    )


def exposure(analyze: str, root: Path, unit: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    """The overall exposure `systemd-analyze security` gives ``unit`` (0 safest, 10 worst)."""
    result = subprocess.run(
        [analyze, "security", "--offline=true", f"--root={root}", f"--threshold={int(MAX_EXPOSURE * 10)}", unit],
        capture_output=True, text=True, timeout=60, check=False,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert found, result.stdout + result.stderr
    return float(found.group(1)), result


# --- systemd-analyze ------------------------------------------------------------------------

def test_units_pass_verify(systemd_analyze: str, installed_root: Path) -> None:
    units = [*INSTANCES.values(), "citadel-api@8002.service", "citadel-worker@2.service", "citadel-backup.timer"]
    result = verify(systemd_analyze, installed_root, *units)
    assert result.returncode == 0, result.stdout + result.stderr
    # Unknown keys and bad values are only warnings (exit 0): none is allowed.
    assert result.stdout + result.stderr == "", result.stdout + result.stderr


def test_verify_catches_a_broken_unit(systemd_analyze: str, installed_root: Path) -> None:
    """A misspelt directive and a missing program are reported, so the test above can fail."""
    unit_dir = installed_root / "etc/systemd/system"
    text = (unit_dir / "citadel-backup.service").read_text()
    (unit_dir / "broken-typo.service").write_text(text.replace("ProtectSystem=", "ProtectSytem="))
    (unit_dir / "broken-exec.service").write_text(text.replace("/opt/citadel/venv/bin/citadel", "/opt/citadel/venv/bin/missing"))
    try:
        typo = verify(systemd_analyze, installed_root, "broken-typo.service")
        assert "Unknown key 'ProtectSytem'" in typo.stderr, typo.stderr
        missing = verify(systemd_analyze, installed_root, "broken-exec.service")
        assert missing.returncode != 0 and "is not executable" in missing.stderr, missing.stderr
    finally:
        for name in ("broken-typo.service", "broken-exec.service"):
            (unit_dir / name).unlink()


@pytest.mark.parametrize("unit", list(INSTANCES.values()))
def test_security_exposure_is_ok(systemd_analyze: str, installed_root: Path, unit: str) -> None:
    score, result = exposure(systemd_analyze, installed_root, unit)
    assert score <= MAX_EXPOSURE, result.stdout
    assert result.returncode == 0, result.stdout + result.stderr


def test_weakened_unit_scores_worse(systemd_analyze: str, installed_root: Path) -> None:
    """The API unit without its hardening block is over the threshold, so the check above can fail."""
    unit_dir = installed_root / "etc/systemd/system"
    text = (unit_dir / "citadel-api@.service").read_text()
    start, end = text.index("# Hardening"), text.index("[Install]")
    (unit_dir / "weak-api@.service").write_text(text[:start] + text[end:])
    try:
        score, result = exposure(systemd_analyze, installed_root, "weak-api@8001.service")
    finally:
        (unit_dir / "weak-api@.service").unlink()
    hardened, _ = exposure(systemd_analyze, installed_root, "citadel-api@8001.service")
    assert score > MAX_EXPOSURE and score > hardened, result.stdout
    assert result.returncode != 0


# --- what the units say ---------------------------------------------------------------------

@pytest.mark.parametrize("name", SERVICES)
def test_service_directives(name: str) -> None:
    unit = directives(SYSTEMD_DIR / name)
    service = unit["Service"]
    assert last(unit, "Service", "EnvironmentFile") == "/etc/citadel/citadel.env"
    assert last(unit, "Service", "User") == "citadel" and last(unit, "Service", "Group") == "citadel"
    assert "DynamicUser" not in service
    assert last(unit, "Service", "Restart") == "on-failure"
    assert int(last(unit, "Unit", "StartLimitBurst")) >= 1 and last(unit, "Unit", "StartLimitIntervalSec")
    after = last(unit, "Unit", "After").split()
    assert {"network-online.target", "postgresql.service", "redis-server.service"} <= set(after)
    assert "network-online.target" in last(unit, "Unit", "Wants").split()
    assert last(unit, "Service", "KillSignal") == "SIGTERM" and last(unit, "Service", "TimeoutStopSec")
    assert last(unit, "Service", "StandardOutput") == "journal" and last(unit, "Service", "StandardError") == "journal"
    assert "citadel" in last(unit, "Service", "StateDirectory").split()
    assert last(unit, "Service", "WorkingDirectory") == "/var/lib/citadel"
    assert last(unit, "Service", "ExecStart").startswith("/opt/citadel/venv/bin/")
    for key, value in HARDENING.items():
        assert last(unit, "Service", key) == value, f"{name}: {key}={service.get(key)}, expected {value!r}"
    filters = service["SystemCallFilter"]
    assert filters[0] == "@system-service" and "~@privileged @resources" in filters
    # Journal only: a file log would need rotating.
    assert not any(v.startswith(("file:", "append:", "truncate:")) for k in ("StandardOutput", "StandardError") for v in service[k])


def test_api_unit_is_per_port_and_drains() -> None:
    unit = directives(SYSTEMD_DIR / "citadel-api@.service")
    assert "CITADEL_API_PORT=%i" in unit["Service"]["Environment"]
    assert last(unit, "Service", "ExecStart") == "/opt/citadel/venv/bin/citadel api --port %i"
    assert "citadel-prefect-server.service" in last(unit, "Unit", "After").split()
    # systemd must wait longer than the API takes to drain before it sends SIGKILL.
    assert int(last(unit, "Service", "TimeoutStopSec")) > GRACEFUL_S
    assert last(unit, "Service", "KillMode") == "mixed"


def test_worker_prefect_server_and_backup_commands() -> None:
    worker = directives(SYSTEMD_DIR / "citadel-worker@.service")
    assert last(worker, "Service", "ExecStart") == "/opt/citadel/venv/bin/prefect worker start --pool citadel --name citadel-worker-%i"
    assert "citadel-prefect-server.service" in last(worker, "Unit", "After").split()
    server = directives(SYSTEMD_DIR / "citadel-prefect-server.service")
    assert last(server, "Service", "ExecStart") == "/opt/citadel/venv/bin/prefect server start"
    # The UI is copied at start: it must go somewhere writable under ProtectSystem=strict.
    assert "PREFECT_UI_STATIC_DIRECTORY=/var/lib/citadel/prefect/ui" in " ".join(server["Service"]["Environment"]).split()
    backup = directives(SYSTEMD_DIR / "citadel-backup.service")
    assert last(backup, "Service", "Type") == "oneshot"
    assert last(backup, "Service", "ExecStart") == "/opt/citadel/venv/bin/citadel backup create --keep-daily 7 --keep-weekly 4"
    assert "citadel/backups" in last(backup, "Service", "StateDirectory").split()
    assert "Install" not in backup, "the timer starts the backup; the service itself is not enabled"


def test_backup_timer() -> None:
    timer = directives(SYSTEMD_DIR / "citadel-backup.timer")
    assert last(timer, "Timer", "OnCalendar")
    assert last(timer, "Timer", "Persistent") == "true"
    assert last(timer, "Timer", "RandomizedDelaySec")
    assert last(timer, "Install", "WantedBy") == "timers.target"


def test_env_example_names_every_variable_commented_out() -> None:
    lines = [line for line in ENV_EXAMPLE.read_text().splitlines() if line.strip()]
    assert all(line.startswith("#") for line in lines), "every line of the example is a comment"
    named = {m.group(1) for m in (re.match(r"# ([A-Z][A-Z0-9_]+)=", line) for line in lines) if m}
    expected = set(setting_variables()) | (OTHER_VARIABLES - {"CITADEL_VENV", "CITADEL_API_PORT"})
    assert expected <= named, f"missing from {ENV_EXAMPLE.name}: {sorted(expected - named)}"
    for unit in UNIT_FILES:
        for value in directives(SYSTEMD_DIR / unit).get("Service", {}).get("Environment", []):
            for name in re.findall(r"([A-Z][A-Z0-9_]+)=", value):
                assert name in named or name == "CITADEL_API_PORT", f"{unit} sets {name}, which the example does not show"
    # Placeholders only: every secret-looking value says CHANGE-ME (or names a file).
    for line in lines:
        m = re.match(r"# ([A-Z0-9_]+)=(.*)", line)
        if m and re.search(r"(SECRET|PASSWORD|_API_KEY|AUTH_STRING)$", m.group(1)) and not m.group(2).startswith("/"):
            assert "CHANGE-ME" in m.group(2), line
        if m and re.search(r"://[^/@\s]+:([^@\s]+)@", m.group(2)):
            assert "CHANGE-ME" in m.group(2), line


# --- the install script ---------------------------------------------------------------------

def snapshot(root: Path) -> dict[str, tuple[int, int, int, int, str]]:
    """Every path under ``root`` with its mode, owner, group, mtime and content digest."""
    found: dict[str, tuple[int, int, int, int, str]] = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() and not path.is_symlink() else ""
        found[str(path.relative_to(root))] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, digest)
    return found


def ids(root: Path, name: str) -> tuple[int, int]:
    user = next(line.split(":") for line in (root / "etc/passwd").read_text().splitlines() if line.startswith(name + ":"))
    group = next(line.split(":") for line in (root / "etc/group").read_text().splitlines() if line.startswith(name + ":"))
    assert user[5:7] == ["/var/lib/citadel", "/usr/sbin/nologin"], user
    return int(user[2]), int(group[2])


def mode_owner(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return oct(st.st_mode & 0o7777), st.st_uid, st.st_gid


def test_install_twice_is_a_no_op(tmp_path: Path) -> None:
    host_users = (Path("/etc/passwd").read_bytes(), Path("/etc/group").read_bytes())
    root = make_root(tmp_path / "root")
    first = run_install(root, "--no-venv")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "created user citadel" in first.stdout
    assert "systemctl enable --now citadel-prefect-server citadel-api@8001 citadel-worker@1 citadel-backup.timer" in first.stdout
    before = snapshot(root)

    second = run_install(root, "--no-venv")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "nothing to change" in second.stdout, second.stdout
    assert snapshot(root) == before
    # The machine's own users are untouched: the user went into the root's files only.
    assert (Path("/etc/passwd").read_bytes(), Path("/etc/group").read_bytes()) == host_users

    uid, gid = ids(root, "citadel")
    assert mode_owner(root / "etc/citadel") == ("0o750", 0, gid)
    assert mode_owner(root / "etc/citadel/citadel.env") == ("0o640", 0, gid)
    assert mode_owner(root / "var/lib/citadel") == ("0o750", uid, gid)
    assert mode_owner(root / "var/lib/citadel/backups") == ("0o750", uid, gid)
    assert mode_owner(root / "opt/citadel") == ("0o755", 0, 0)
    for unit in UNIT_FILES:
        installed = root / "etc/systemd/system" / unit
        assert installed.read_bytes() == (SYSTEMD_DIR / unit).read_bytes()
        assert mode_owner(installed) == ("0o644", 0, 0)


def test_install_keeps_the_operators_settings_and_repairs_modes(tmp_path: Path) -> None:
    root = make_root(tmp_path / "root")
    assert run_install(root, "--no-venv").returncode == 0
    env_file = root / "etc/citadel/citadel.env"
    env_file.write_text("CITADEL_EMBEDDER=ollama\n")
    (root / "var/lib/citadel").chmod(0o777)
    result = run_install(root, "--no-venv")
    assert result.returncode == 0, result.stdout + result.stderr
    assert env_file.read_text() == "CITADEL_EMBEDDER=ollama\n"
    assert "set /var/lib/citadel to 0750" in result.stdout
    assert mode_owner(root / "var/lib/citadel")[0] == "0o750"


def test_install_refuses_a_root_that_is_not_a_system(tmp_path: Path) -> None:
    result = run_install(tmp_path, "--no-venv")
    assert result.returncode != 0
    assert result.stderr.strip() == f"install: --root {tmp_path} has no etc/passwd: give the root of a system image"
    unknown = subprocess.run(["bash", str(INSTALL), "--bogus"], capture_output=True, text=True, timeout=30, check=False)
    assert unknown.returncode != 0 and "unknown option --bogus" in unknown.stderr


# --- the program under the hardening that can be reproduced here ----------------------------

def _deny_write_execute() -> None:
    """In the child before exec: what MemoryDenyWriteExecute=yes enforces (kernel MDWE, inherited by exec)."""
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_MDWE)")


def hardened(command: list[str], state: Path) -> list[str]:
    """``command`` with the system read-only but ``state``, no capabilities and no_new_privs."""
    script = (
        f'mount --bind "{state}" "{state}" && mount -o remount,bind,ro / && '
        'exec setpriv --no-new-privs --inh-caps=-all --bounding-set=-all -- "$@"'
    )
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *command]


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    ensure_debian_package("setpriv", "util-linux")
    ensure_debian_package("unshare", "util-linux")
    path = tmp_path / "state"
    (path / "tmp").mkdir(parents=True)
    yield path


def state_env(state: Path) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin", "HOME": str(state), "TMPDIR": str(state / "tmp"), "CITADEL_DATA_DIR": str(state),
        "PREFECT_HOME": str(state / "prefect"), "LANG": "C.UTF-8",
    }


IMPORTS = """
import ctypes, mmap
assert ctypes.CDLL(None).prctl(66, 0, 0, 0, 0) == 1, "MDWE is not in force"
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    raise SystemExit("a writable and executable mapping was allowed")
except PermissionError:
    pass
try:
    open("/usr/citadel-write-test", "w")
    raise SystemExit("the system is writable")
except OSError:
    pass
import asyncio, numpy, orjson, uvloop, httptools, pydantic_core, asyncpg, psutil, sqlite3
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
vectors = numpy.random.default_rng(0).standard_normal((64, 384)).astype("float32")
assert orjson.loads(orjson.dumps(vectors @ vectors.T, option=orjson.OPT_SERIALIZE_NUMPY))
ec.generate_private_key(ec.SECP256R1()).sign(b"citadel", ec.ECDSA(hashes.SHA256()))
uvloop.run(asyncio.sleep(0))
assert ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(lambda x: x + 1)(1) == 2
print("ok")
"""


def test_native_packages_survive_write_xor_execute(state: Path) -> None:
    """numpy, orjson, uvloop, httptools, asyncpg, cryptography (cffi) and ctypes callbacks run with
    W^X memory on a read-only system, without capabilities."""
    result = subprocess.run(
        hardened([sys.executable, "-c", IMPORTS], state), preexec_fn=_deny_write_execute, env=state_env(state),
        cwd=state, capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stdout + result.stderr


def test_no_dependency_needs_write_execute_memory() -> None:
    """cffi's ABI-mode ``ffi.callback`` needs writable+executable memory, which MemoryDenyWriteExecute
    refuses: no installed package may call it (the API-mode ``extern "Python"`` is fine)."""
    import cffi

    site = Path(cffi.__file__).resolve().parents[1]
    offenders = subprocess.run(
        ["grep", "-rlE", "--include=*.py", r"ffi\.callback\(", str(site)], capture_output=True, text=True, check=False
    ).stdout.split()
    assert [path for path in offenders if "/cffi/" not in path] == []


def test_api_serves_under_the_hardening(state: Path) -> None:
    port = free_port()
    citadel = Path(sys.executable).parent / "citadel"
    proc = subprocess.Popen(
        hardened([str(citadel), "api", "--port", str(port)], state), preexec_fn=_deny_write_execute,
        env=state_env(state), cwd=state, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/livez", timeout=5) as response:
                    assert response.status == 200
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"citadel api exited under the hardening:\n{proc.communicate()[0]}")
                assert time.monotonic() < deadline, "no answer on /livez within 90 s"
                time.sleep(0.3)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10) as response:
            assert response.status == 200
    finally:
        proc.terminate()
        output = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, output  # SIGTERM drained and exited cleanly
    assert (state / "registry.db").is_file() and (state / "qdrant").is_dir()
