"""`sgldeploy lock`: resolve every model of a stack on the Hub and write the lock beside the stack file.

`--check` writes nothing: it reports each branch or tag that has moved since it was locked (drift).
The Hugging Face token comes from the stack secret `sgldeploy:hfToken` (read with `pulumi config get`
when the Pulumi CLI is at hand), else from `HF_TOKEN`, else from the local token cache.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field

from . import hub
from .lock import lock_key, lock_path_for, read_lock, read_lock_entries, write_lock
from .problems import InvalidInput, Problem, config_path
from .spec import is_commit
from .stackfile import StackFile
from .validate import parse_stack

# The Hub client's default retries; a module constant so callers share one value.
DEFAULT_RETRY = hub.Retry()


@dataclass
class LockReport:
    written: list[str] = field(default_factory=list)  # repo@revision → sha lines
    unchanged: bool = True
    drift: list[str] = field(default_factory=list)


def stack_token(stack: StackFile) -> str | None:
    """The stack's secret token through the Pulumi CLI, or None to let the client use HF_TOKEN or its cache."""
    if "sgldeploy:hfToken" not in stack.secret_keys or os.environ.get("HF_TOKEN"):
        return None
    pulumi = shutil.which("pulumi")
    if pulumi is None:
        return None
    result = subprocess.run(
        [pulumi, "config", "get", "sgldeploy:hfToken", "--stack", stack.stack],
        capture_output=True,
        text=True,
        cwd=stack.path.parent.parent,
        timeout=60,
    )
    return (result.stdout.strip() or None) if result.returncode == 0 else None


def _models(stack: StackFile) -> list[tuple[int, str, str]]:
    spec = parse_stack(stack.object("sgldeploy:platform"), stack.object("sgldeploy:deployments"))
    seen, out = set(), []
    for i, dep in enumerate(spec.deployments):
        key = (dep.model.repo, dep.model.revision)
        if key not in seen:
            seen.add(key)
            out.append((i, *key))
    return out


def lock(
    stack: StackFile,
    *,
    token: str | None = None,
    endpoint: str | None = None,
    retry: hub.Retry = DEFAULT_RETRY,
) -> LockReport:
    """Resolve the stack's models and merge them into its lock (entries of other stacks are kept)."""
    path = lock_path_for(stack.path)
    existing = read_lock_entries(path)
    entries = dict(existing)
    problems: list[Problem] = []
    report = LockReport()
    for i, repo, revision in _models(stack):
        try:
            entry = hub.resolve(repo, revision, token=token, endpoint=endpoint, retry=retry)
        except hub.HubError as err:
            problems.append(
                Problem(config_path("deployments", (i, "model", "repo")), err.what, err.fix, repo)
            )
            continue
        entries[lock_key(repo, revision)] = entry
        report.written.append(f"{repo}@{revision} → {entry['sha']}")
    if problems:
        raise InvalidInput(problems)
    report.unchanged = entries == existing
    if not report.unchanged:
        write_lock(path, entries)
    return report


def check(
    stack: StackFile,
    *,
    token: str | None = None,
    endpoint: str | None = None,
    retry: hub.Retry = DEFAULT_RETRY,
) -> LockReport:
    """Compare each locked branch or tag with the commit it points to now."""
    locked = read_lock(lock_path_for(stack.path))
    report = LockReport()
    problems: list[Problem] = []
    for i, repo, revision in _models(stack):
        entry = locked.get(lock_key(repo, revision))
        if entry is None:
            problems.append(
                Problem(
                    config_path("deployments", (i, "model", "revision")),
                    f"{repo}@{revision} is not locked",
                    "run sgldeploy lock",
                    revision,
                )
            )
            continue
        if is_commit(revision):
            continue  # a commit cannot move
        try:
            now = hub.current_sha(repo, revision, token=token, endpoint=endpoint, retry=retry)
        except hub.HubError as err:
            problems.append(
                Problem(config_path("deployments", (i, "model", "repo")), err.what, err.fix, repo)
            )
            continue
        if now != entry.sha:
            report.drift.append(
                f"{repo}@{revision} moved: locked {entry.sha}, now {now}; review the change, "
                f"then run sgldeploy lock (or pin revision: {now})"
            )
    if problems:
        raise InvalidInput(problems)
    return report
