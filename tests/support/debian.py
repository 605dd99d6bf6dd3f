"""Debian packages that tests need: found on PATH, or installed with apt-get when running as root.

A missing tool is a failure with the package to install, never a skip: in CI it means a broken setup.
"""

from __future__ import annotations

import os
import shutil
import subprocess

_SBIN_DIRS = ("/usr/sbin", "/sbin")
_apt_updated = False  # apt-get update runs at most once per process


def _find(binary: str) -> str | None:
    """Path of ``binary`` on PATH or in the sbin directories, which a non-root PATH often lacks."""
    path = os.environ.get("PATH", os.defpath)
    return shutil.which(binary) or shutil.which(binary, path=os.pathsep.join((path, *_SBIN_DIRS)))


def _apt_get(*args: str) -> None:
    """Run apt-get non-interactively; a failure raises with apt's own output."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    result = subprocess.run(["apt-get", *args], env=env, capture_output=True, text=True, check=False)
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
        if not _apt_updated:
            _apt_get("update")
            _apt_updated = True
        _apt_get("install", "-y", "--no-install-recommends", package)
        found = _find(binary)
        if found:
            return found
    raise RuntimeError(f"{binary!r} not found: install the Debian package {package!r} (apt-get install {package})")
