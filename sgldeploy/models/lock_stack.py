"""`sgldeploy lock`: resolve every model of a stack on the Hub and write the lock beside the stack file.

An entry already pinned to a commit is kept (a commit cannot move) unless `--refresh` asks for it again, so
a model the Hub cannot give now does not stop the rest; the entries that resolved are written even when
another failed. `--from-cache DIR` resolves from a local Hugging Face cache instead, with no network.
`--check` writes nothing: it reports each branch or tag that has moved since it was locked (drift).
The Hugging Face token comes from the stack secret `sgldeploy:hfToken` (read with `pulumi config get`
when the Pulumi CLI is at hand), else from `HF_TOKEN`, else from the local token cache.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from huggingface_hub.constants import ENV_VARS_TRUE_VALUES

from sgldeploy.models import hf_cache, hub
from sgldeploy.models.lock import (
    LockedAdapter,
    LockedModel,
    lock_key,
    lock_path_for,
    read_lock_contents,
    write_lock,
)
from sgldeploy.spec import is_commit
from sgldeploy.spec.problems import ConfigWarning, InvalidInput, Problem, config_path
from sgldeploy.spec.stackfile import StackFile
from sgldeploy.spec.validate import parse_stack

# The Hub client's default retries; a module constant so callers share one value.
DEFAULT_RETRY = hub.Retry()


# The variables huggingface_hub reads as offline mode (constants.py HF_HUB_OFFLINE), read at call time.
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


@dataclass
class LockReport:
    written: list[str] = field(default_factory=list)  # repo@revision → sha lines
    kept: list[str] = field(default_factory=list)  # entries pinned to a commit, left as they are
    warnings: list[ConfigWarning] = field(default_factory=list)  # e.g. gating unknown offline
    unchanged: bool = True
    drift: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)  # models not locked; the others were written


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


class ServedRevision(NamedTuple):
    """A revision a deployment serves, and the field of the stack that names it."""

    deployment: int  # its index in sgldeploy:deployments
    field: str  # model.revision, rollout.previous_revision or rollout.canary_revision
    repo: str
    revision: str

    @property
    def at(self) -> str:
        """The config path of the field that names this revision, where a problem with it is reported."""
        return self._path(self.field.split("."))

    def beside(self, name: str) -> str:
        """The config path of a field next to the revision (an adapter's `repo`)."""
        return self._path([*self.field.split(".")[:-1], name])

    def _path(self, parts: list[str]) -> str:
        """An adapter's index (`model.adapters.0.revision`) is a list index in the path."""
        return config_path("deployments", (self.deployment, *(int(p) if p.isdigit() else p for p in parts)))


def _models(stack: StackFile) -> list[ServedRevision]:
    """Each (repo, revision) the stack serves, once, named by the first field that gives it."""
    spec = parse_stack(stack.object("sgldeploy:platform"), stack.object("sgldeploy:deployments"))
    seen, out = set(), []
    for i, dep in enumerate(spec.deployments):
        # A previous or canary commit is served too, so it is locked like model.revision.
        for field_path, revision in [("model.revision", dep.model.revision), *dep.extra_revisions]:
            if (dep.model.repo, revision) not in seen:
                seen.add((dep.model.repo, revision))
                out.append(ServedRevision(i, field_path, dep.model.repo, revision))
    return out


def _adapters(stack: StackFile) -> list[ServedRevision]:
    """Each LoRA adapter (repo, revision) the stack serves, once, named by the first field that gives it."""
    spec = parse_stack(stack.object("sgldeploy:platform"), stack.object("sgldeploy:deployments"))
    seen, out = set(), []
    for i, dep in enumerate(spec.deployments):
        for j, adapter in enumerate(dep.model.adapters):
            if (adapter.repo, adapter.revision) not in seen:
                seen.add((adapter.repo, adapter.revision))
                out.append(ServedRevision(i, f"model.adapters.{j}.revision", adapter.repo, adapter.revision))
    return out


def offline_variable() -> str | None:
    """The variable that puts huggingface_hub in offline mode, if one is set."""
    return next((v for v in OFFLINE_VARIABLES if os.environ.get(v, "").upper() in ENV_VARS_TRUE_VALUES), None)


def offline_problem(models: list[str]) -> Problem | None:
    """One line for offline mode, instead of one network failure per model after its retries."""
    variable = offline_variable()
    if variable is None or not models:
        return None
    return Problem(
        variable,
        f"is set, so the Hub cannot be reached to resolve {', '.join(models)}",
        hub.OFFLINE_FIX.replace("HF_HUB_OFFLINE", variable),
        os.environ[variable],
    )


Resolver = Callable[[str, str], dict[str, Any]]


def lock(
    stack: StackFile,
    *,
    token: str | None = None,
    endpoint: str | None = None,
    retry: hub.Retry = DEFAULT_RETRY,
    from_cache: Path | None = None,
    refresh: bool = False,
) -> LockReport:
    """Resolve the stack's models and merge them into its lock (entries of other stacks are kept).

    Entries pinned to a commit are kept unless `refresh`; a damaged entry is resolved again. The models that
    resolved are written even when others failed (those are `report.problems`)."""
    path = lock_path_for(stack.path)
    contents = read_lock_contents(path)
    entries = dict(contents.entries)
    report = LockReport()
    todo = []
    for i, _, repo, revision in _models(stack):
        key = lock_key(repo, revision)
        if not refresh and is_commit(revision) and key in contents.models:
            report.kept.append(f"{key} (pinned; --refresh resolves it again)")
        else:
            todo.append((i, repo, revision))
    adapters = dict(contents.adapter_entries)
    todo_adapters = []
    for served in _adapters(stack):
        key = lock_key(served.repo, served.revision)
        if not refresh and is_commit(served.revision) and key in contents.adapters:
            report.kept.append(f"{key} (pinned; --refresh resolves it again)")
        else:
            todo_adapters.append(served)
    wanted = [lock_key(r, rev) for _, r, rev in todo] + [lock_key(a.repo, a.revision) for a in todo_adapters]
    offline = None if from_cache else offline_problem(wanted)
    if offline is not None:
        raise InvalidInput([offline])
    resolver: Resolver
    adapter_resolver: Resolver
    if from_cache is not None:
        cache = hf_cache.hub_cache(from_cache)
        resolver = lambda repo, revision: hf_cache.resolve(cache, repo, revision)  # noqa: E731
        adapter_resolver = lambda repo, revision: hf_cache.resolve_adapter(cache, repo, revision)  # noqa: E731
    else:
        resolver = lambda repo, revision: hub.resolve(  # noqa: E731
            repo, revision, token=token, endpoint=endpoint, retry=retry
        )
        adapter_resolver = lambda repo, revision: hub.resolve_adapter(  # noqa: E731
            repo, revision, token=token, endpoint=endpoint, retry=retry
        )
    for i, repo, revision in todo:
        entry = _resolve_one(resolver, i, repo, revision, report)
        if entry is None:
            continue
        entries[lock_key(repo, revision)] = entry
        report.written.append(f"{repo}@{revision} → {entry['sha']} ({entry['source']})")
        if entry["gated"] is None:
            report.warnings.append(
                ConfigWarning(
                    config_path("deployments", (i, "model", "repo")),
                    f"whether {repo} is gated is unknown offline (a local cache does not record it; the entry "
                    'says "gated": null)',
                    "if it is gated, set the token with `pulumi config set --secret sgldeploy:hfToken hf_…` "
                    "before `pulumi up`, or run `sgldeploy lock --refresh` where the Hub is reachable",
                )
            )
    for served in todo_adapters:
        entry = _resolve_at(adapter_resolver, served.beside("repo"), served.repo, served.revision, report)
        if entry is not None:
            adapters[lock_key(served.repo, served.revision)] = entry
            report.written.append(
                f"{served.repo}@{served.revision} → {entry['sha']} ({entry['source']}, adapter)"
            )
    report.unchanged = entries == contents.entries and adapters == contents.adapter_entries
    if not report.unchanged:
        write_lock(path, entries, adapters)
    return report


def _resolve_one(
    resolver: Resolver, i: int, repo: str, revision: str, report: LockReport
) -> dict[str, Any] | None:
    return _resolve_at(resolver, config_path("deployments", (i, "model", "repo")), repo, revision, report)


def _resolve_at(
    resolver: Resolver, at: str, repo: str, revision: str, report: LockReport
) -> dict[str, Any] | None:
    try:
        return resolver(repo, revision)
    except hf_cache.MissingFiles as missing:
        report.problems += [err.at(at, repo) for err in missing.errors]
    except hub.HubError as err:
        report.problems.append(err.at(at, repo))
    return None


def check(
    stack: StackFile,
    *,
    token: str | None = None,
    endpoint: str | None = None,
    retry: hub.Retry = DEFAULT_RETRY,
) -> LockReport:
    """Compare each locked branch or tag (of models and adapters) with the commit it points to now."""
    lock_file = lock_path_for(stack.path)
    contents = read_lock_contents(lock_file)
    report = LockReport()
    problems: list[Problem] = []
    served_revisions: list[
        tuple[ServedRevision, Mapping[str, LockedModel | LockedAdapter], Mapping[str, Any]]
    ] = [
        *((m, contents.models, contents.damaged) for m in _models(stack)),
        *((a, contents.adapters, contents.damaged_adapters) for a in _adapters(stack)),
    ]
    offline = offline_problem(
        [lock_key(s.repo, s.revision) for s, _, _ in served_revisions if not is_commit(s.revision)]
    )
    if offline is not None:
        raise InvalidInput([offline])
    for served, locked, damaged in served_revisions:
        repo, revision = served.repo, served.revision
        key = lock_key(repo, revision)
        if key in damaged:
            problems += [damage.in_lock(lock_file) for damage in damaged[key]]
            continue
        entry = locked.get(key)
        if entry is None:
            problems.append(
                Problem(served.at, f"{repo}@{revision} is not locked", "run sgldeploy lock", revision)
            )
            continue
        if is_commit(revision):
            continue  # a commit cannot move
        try:
            now = hub.current_sha(repo, revision, token=token, endpoint=endpoint, retry=retry)
        except hub.HubError as err:
            problems.append(err.at(served.beside("repo"), repo))
            continue
        if now != entry.sha:
            report.drift.append(
                f"{served.at}: {repo}@{revision} moved: locked {entry.sha}, now {now}; review the change, "
                f"then run sgldeploy lock (or pin revision: {now})"
            )
    if problems:
        raise InvalidInput(problems)
    return report
