"""Scan the Kubernetes manifests of every committed stack with Checkov.

    python -m sgldeploy.offline.scan --checkov .venv-checkov/bin/checkov

Each stack is planned offline (as `sgldeploy plan --manifests` does) and its manifests scanned with Checkov's
Kubernetes checks. A failed check passes only when the skip list names its check and object, with the reason
it cannot apply; a skip entry that matches nothing fails too, so the list cannot go stale. Secrets a stack
needs (a gated model's token) are stood in by opaque values, as `pulumi config set --secret` would set them.

Exit 0 when every failure is justified, 1 when one is not (or a skip is stale), 2 when the scan cannot run.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from sgldeploy.spec.problems import InvalidInput
from sgldeploy.spec.stackfile import OPAQUE_SECRET, StackFile, read_stack_file

ROOT = Path(__file__).resolve().parents[2]
SKIPS = ROOT / "security" / "checkov-skips.yaml"
STAND_IN_SECRETS = ("sgldeploy:hfToken",)


@dataclasses.dataclass(frozen=True)
class Finding:
    stack: str
    check: str
    resource: str  # Checkov's id: Kind.namespace.name
    name: str  # what the check asks for


@dataclasses.dataclass(frozen=True)
class Skip:
    check: str
    objects: tuple[str, ...]  # glob patterns over Checkov resource ids
    why: str

    def covers(self, finding: Finding) -> bool:
        return finding.check == self.check and any(
            fnmatch.fnmatchcase(finding.resource, o) for o in self.objects
        )


class ScanError(Exception):
    pass


def read_skips(path: Path) -> list[Skip]:
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ScanError(f"{path}: cannot read the skip list: {exc}") from None
    if not isinstance(raw, list):
        raise ScanError(f"{path}: must be a list of {{check, objects, why}} entries")
    skips = []
    for i, entry in enumerate(raw):
        ok = (
            isinstance(entry, dict)
            and set(entry) == {"check", "objects", "why"}
            and isinstance(entry["check"], str)
            and isinstance(entry["objects"], list)
            and entry["objects"]
            and all(isinstance(o, str) for o in entry["objects"])
            and isinstance(entry["why"], str)
            and len(entry["why"].split()) >= 5
        )
        if not ok:
            raise ScanError(
                f"{path}: entry {i} must have a check id, a non-empty list of objects and a why of a sentence"
            )
        skips.append(Skip(entry["check"], tuple(entry["objects"]), entry["why"]))
    return skips


def triage(findings: Sequence[Finding], skips: Sequence[Skip]) -> tuple[list[Finding], list[Skip]]:
    """The failures no skip covers, and the skips that covered nothing."""
    unexplained = [f for f in findings if not any(s.covers(f) for s in skips)]
    stale = [s for s in skips if not any(s.covers(f) for f in findings)]
    return unexplained, stale


def with_stand_in_secrets(stack: StackFile) -> StackFile:
    missing = [k for k in STAND_IN_SECRETS if k not in stack.config]
    return dataclasses.replace(
        stack,
        config={**stack.config, **{k: OPAQUE_SECRET for k in missing}},
        secret_keys=[*stack.secret_keys, *missing],
    )


def write_stack_manifests(stack_file: Path, directory: Path) -> int:
    from sgldeploy.offline.manifests import write_manifests
    from sgldeploy.offline.render import render

    plan = render(with_stand_in_secrets(read_stack_file(stack_file)))
    return len(write_manifests(plan, directory))


def run_checkov(checkov: str, directory: Path) -> list[dict[str, Any]]:
    """Checkov's JSON report over a directory, Kubernetes checks only, with no network calls."""
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"}
    cmd = [
        checkov,
        "-d",
        str(directory),
        "--framework",
        "kubernetes",
        "-o",
        "json",
        "--quiet",
        "--skip-download",
    ]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    except OSError as exc:
        raise ScanError(f"cannot run {checkov}: {exc}; install it with `make scan`") from None
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ScanError(f"checkov exited {done.returncode} without a report: {tail[0]}") from None
    return report if isinstance(report, list) else [report]


def findings_of(stack: str, reports: list[dict[str, Any]]) -> tuple[list[Finding], int]:
    failed, passed = [], 0
    for report in reports:
        passed += int(report.get("summary", {}).get("passed", 0))  # --quiet leaves passed checks out
        for check in report.get("results", {}).get("failed_checks", []):
            failed.append(Finding(stack, check["check_id"], check["resource"], check["check_name"]))
    return failed, passed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sgldeploy.offline.scan", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--checkov", default="checkov", help="the checkov executable")
    parser.add_argument("--skips", type=Path, default=SKIPS, help="the justified skip list")
    parser.add_argument(
        "--stacks", type=Path, default=ROOT / "stacks", help="directory of Pulumi.<stack>.yaml"
    )
    args = parser.parse_args(argv)
    try:
        skips = read_skips(args.skips)
        stack_files = sorted(args.stacks.glob("Pulumi.*.yaml"))
        if not stack_files:
            raise ScanError(f"{args.stacks}: no Pulumi.<stack>.yaml files to scan")
        findings: list[Finding] = []
        with tempfile.TemporaryDirectory(prefix="sgldeploy-scan-") as tmp:
            for path in stack_files:
                stack = path.name.removeprefix("Pulumi.").removesuffix(".yaml")
                count = write_stack_manifests(path, Path(tmp) / stack)
                failed, passed = findings_of(stack, run_checkov(args.checkov, Path(tmp) / stack))
                justified = sum(1 for f in failed if any(s.covers(f) for s in skips))
                print(
                    f"scan: {stack}: {count} manifests, {passed} checks passed, {len(failed) - justified} failed, "
                    f"{justified} skipped as justified"
                )
                findings += failed
    except ScanError as exc:
        print(f"scan: error: {exc}", file=sys.stderr)
        return 2
    except (
        InvalidInput
    ) as invalid:  # a stack that cannot be planned: its lines, as `sgldeploy plan` gives them
        for problem in invalid.problems:
            print(f"scan: {problem.line()}", file=sys.stderr)
        return 2
    unexplained, stale = triage(findings, skips)
    for f in unexplained:
        print(f"scan: FAILED {f.stack}: {f.check} {f.resource}: {f.name}", file=sys.stderr)
    for s in stale:
        print(
            f"scan: stale skip {s.check} {list(s.objects)}: it matches no failure; remove it", file=sys.stderr
        )
    return 1 if unexplained or stale else 0


if __name__ == "__main__":
    sys.exit(main())
