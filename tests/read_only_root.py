"""Run a command as a container with `readOnlyRootFilesystem: true` would: in a private mount namespace whose
root is this machine's, remounted read-only, with only the given directories writable. Needs unprivileged user
and mount namespaces (`unshare -m -r`); where they are missing, the caller skips with the reason."""

from __future__ import annotations

import shlex
import subprocess
import tempfile
from pathlib import Path

import pytest


def command(argv: list[str], writable: list[Path], env: dict[str, str]) -> list[str]:
    """The argv that runs `argv` under a read-only root, `writable` bound read-write, with exactly `env`."""
    probe = subprocess.run(["unshare", "-m", "-r", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"no user and mount namespaces here ({probe.stderr.strip() or 'unshare failed'})")
    # An empty directory to mount the new root on; each namespace's mounts are private, so one serves all.
    root = Path(tempfile.gettempdir()) / "sgldeploy-read-only-root"
    root.mkdir(exist_ok=True)
    binds = " && ".join(
        f"mount --bind {shlex.quote(str(d))} {shlex.quote(str(root))}{shlex.quote(str(d))}" for d in writable
    )
    inner = " ".join(shlex.quote(a) for a in ["env", "-i", *(f"{k}={v}" for k, v in env.items()), *argv])
    script = (
        f"mount --rbind / {root} && mount -o remount,bind,ro {root}"
        + (f" && {binds}" if binds else "")
        + f" && if touch {root}/.sgldeploy-probe 2>/dev/null; then echo 'root still writable' >&2; exit 97; fi"
        + f" && exec chroot {root} {inner}"
    )
    return ["unshare", "-m", "-r", "sh", "-c", script]
