"""Debian packages that tests need: found on PATH, or installed with apt-get when running as root.

A missing tool is a failure with the package to install, never a skip: in CI it means a broken setup.
Parallel test workers install one at a time (dpkg takes one installer; a second one fails at once
on its lock), and each waits for an apt run of the machine's own to finish.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess

_SBIN_DIRS = ("/usr/sbin", "/sbin")
_apt_updated = False  # apt-get update runs at most once per process
_LOCK = "/tmp/citadel-tests-apt.lock"
_DPKG_WAIT_S = 900  # for another apt run of the machine (unattended upgrades, a person)


def _find(binary: str) -> str | None:
    """Path of ``binary`` on PATH or in the sbin directories, which a non-root PATH often lacks."""
    path = os.environ.get("PATH", os.defpath)
    return shutil.which(binary) or shutil.which(binary, path=os.pathsep.join((path, *_SBIN_DIRS)))


def _apt_get(*args: str) -> None:
    """Run apt-get non-interactively; a failure raises with apt's own output."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command = ["apt-get", "-o", f"DPkg::Lock::Timeout={_DPKG_WAIT_S}", *args]
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"apt-get {' '.join(args)} failed ({result.returncode}):\n{result.stdout[-2000:]}{result.stderr[-2000:]}")


def ensure_debian_package(binary: str, package: str) -> str:
    """Path of ``binary``; when missing and running as root, install Debian's ``package`` first.

    Raises RuntimeError naming the package when the binary still cannot be found.
    """
    global _apt_updated
    found = _find(binary)
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        with open(_LOCK, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            found = _find(binary)  # another worker may have installed it meanwhile
            if found:
                return found
            if not _apt_updated:
                _apt_get("update")
                _apt_updated = True
            _apt_get("install", "-y", "--no-install-recommends", package)
        found = _find(binary)
        if found:
            return found
    raise RuntimeError(f"{binary!r} not found: install the Debian package {package!r} (apt-get install {package})")
