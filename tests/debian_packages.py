"""Debian packages the tests use as real clients (Chromium, Prometheus): installed with apt-get on first use."""

from __future__ import annotations

import os
import shutil
import subprocess


def debian_binaries(package: str, *binaries: str) -> list[str]:
    """The paths of `binaries` (on PATH), apt-get installing Debian's `package` when one is missing (needs root, as
    CI has); a RuntimeError when they are still missing."""
    if not all(shutil.which(binary) for binary in binaries):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-q"], env=env, check=True, capture_output=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", package],
            env=env,
            check=True,
            capture_output=True,
        )
    found = [shutil.which(binary) for binary in binaries]
    missing = [binary for binary, path in zip(binaries, found, strict=True) if path is None]
    if missing:
        raise RuntimeError(f"{', '.join(missing)} not installed: apt-get install {package}")
    return [path for path in found if path is not None]
