"""The Checkov scan's bookkeeping: which failures the skip list justifies, stale skips, bad skip files.
(`make scan`, part of `make test`, runs Checkov itself over every committed stack.)"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
import yaml

from sgldeploy.offline.scan import (
    SKIPS,
    Finding,
    ScanError,
    Skip,
    findings_of,
    read_skips,
    triage,
    with_stand_in_secrets,
)
from sgldeploy.offline.scan import main as scan_main
from sgldeploy.spec.stackfile import OPAQUE_SECRET, read_stack_file

from .conftest import ROOT, with_secret

SERVER = Finding("dev", "CKV_K8S_11", "Deployment.llm-dev.qwen-7b", "CPU limits should be set")
PREPULL = Finding("dev", "CKV_K8S_11", "DaemonSet.llm-dev.qwen-7b-image-prepull", "CPU limits should be set")


def test_a_skip_covers_only_its_check_and_objects():
    skip = Skip("CKV_K8S_11", ("Deployment.*",), "serving pods have no CPU limit on purpose")
    other_check = Finding("dev", "CKV_K8S_22", SERVER.resource, "read-only root")
    unexplained, stale = triage([SERVER, PREPULL, other_check], [skip])
    assert unexplained == [PREPULL, other_check]
    assert stale == []


def test_a_skip_that_matches_nothing_is_stale():
    used = Skip("CKV_K8S_11", ("Deployment.*",), "serving pods have no CPU limit on purpose")
    unused = Skip("CKV_K8S_8", ("DaemonSet.*",), "nothing to probe in a pause container")
    assert triage([SERVER], [used, unused]) == ([], [unused])


def test_checkov_reports_are_read_with_their_summary():
    report = {
        "check_type": "kubernetes",
        "summary": {"passed": 40, "failed": 1},
        "results": {
            "failed_checks": [
                {
                    "check_id": "CKV_K8S_11",
                    "resource": SERVER.resource,
                    "check_name": "CPU limits should be set",
                }
            ]
        },
    }
    assert findings_of("dev", [report, {"check_type": "kubernetes", "summary": {"passed": 2}}]) == (
        [SERVER],
        42,
    )


@pytest.mark.parametrize(
    "text",
    [
        "check: CKV_K8S_11",  # not a list
        "- {check: CKV_K8S_11, objects: ['Deployment.*']}",  # no why
        "- {check: CKV_K8S_11, objects: [], why: 'serving pods have no CPU limit on purpose'}",
        "- {check: CKV_K8S_11, objects: ['Deployment.*'], why: 'because'}",  # not a reason
        "- {check: CKV_K8S_11, objects: ['D.*'], why: 'a b c d e', extra: 1}",
        "- [unclosed",
    ],
)
def test_a_bad_skip_list_is_refused(tmp_path, text):
    path = tmp_path / "skips.yaml"
    path.write_text(text)
    with pytest.raises(ScanError, match="skips.yaml"):
        read_skips(path)


def test_the_committed_skip_list_is_justified_and_specific():
    skips = read_skips(SKIPS)
    assert len(skips) <= 12
    assert len({s.check for s in skips}) == len(skips)  # one entry per check
    for skip in skips:
        assert "*" != skip.objects[0] and all(
            o.split(".")[0] in ("Deployment", "DaemonSet", "Job") for o in skip.objects
        )


def test_stacks_are_scanned_with_their_secrets_stood_in():
    prod = read_stack_file(ROOT / "stacks" / "Pulumi.prod.yaml")
    assert "sgldeploy:hfToken" not in prod.config
    scanned = with_stand_in_secrets(prod)
    assert scanned.config["sgldeploy:hfToken"] == OPAQUE_SECRET
    assert "sgldeploy:hfToken" in scanned.secret_keys


# ---- the scan itself: scan.main in-process over a stack, with the real Checkov ------------------------

CHECKOV = os.environ.get("SGLDEPLOY_CHECKOV", str(ROOT / ".venv-checkov" / "bin" / "checkov"))
SCAN_LINE = re.compile(
    r"scan: (?P<stack>[a-z-]+): (?P<manifests>\d+) manifests, (?P<passed>\d+) checks passed, "
    r"(?P<failed>\d+) failed, (?P<skipped>\d+) skipped as justified"
)
COMMITTED = sorted(p.name.split(".")[1] for p in (ROOT / "stacks").glob("Pulumi.*.yaml"))


@pytest.fixture(scope="module")
def committed_stacks(tmp_path_factory) -> Path:
    """The committed stacks as committed (prod has no token: the scan stands one in), with their lock."""
    stacks = tmp_path_factory.mktemp("stacks")
    for path in (ROOT / "stacks").iterdir():
        shutil.copy(path, stacks)
    return stacks


@pytest.fixture(scope="module")
def prod_only(tmp_path_factory) -> Path:
    stacks = tmp_path_factory.mktemp("prod-only")
    shutil.copy(ROOT / "stacks" / "Pulumi.prod.yaml", stacks)
    shutil.copy(ROOT / "stacks" / "models.lock.json", stacks)
    return stacks


def manifest_count(stack: str, directory: Path) -> int:
    """How many manifests `sgldeploy plan --manifests` writes for a committed stack, with a token set."""
    from .test_cli import run_cli

    directory.mkdir()
    config = with_secret(ROOT / "stacks" / f"Pulumi.{stack}.yaml", directory)
    out = directory / "manifests"
    assert run_cli("plan", "--config", str(config), "--manifests", str(out)).returncode == 0
    return len(list(out.iterdir()))


def scan(capsys, *args: str) -> tuple[int, str, str]:
    if not Path(CHECKOV).exists():
        pytest.fail(f"Checkov is not installed at {CHECKOV}; run the tests with `make test`")
    code = scan_main(["--checkov", CHECKOV, *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_scan_passes_on_justified_failures_and_names_a_stale_skip(committed_stacks, tmp_path, capsys):
    stale = {
        "check": "CKV_K8S_999",
        "objects": ["Deployment.nothing"],
        "why": "a skip that no failure matches",
    }
    skips = tmp_path / "skips.yaml"
    skips.write_text(yaml.safe_dump([*yaml.safe_load(SKIPS.read_text()), stale]))

    code, out, err = scan(capsys, "--stacks", str(committed_stacks), "--skips", str(skips))

    lines = [SCAN_LINE.fullmatch(line) for line in out.splitlines()]
    assert all(lines) and [m["stack"] for m in lines] == COMMITTED, out
    for m in lines:
        assert int(m["manifests"]) == manifest_count(m["stack"], tmp_path / m["stack"])
        assert int(m["passed"]) > 0 and m["failed"] == "0" and int(m["skipped"]) > 0
    assert (code, err) == (
        1,
        "scan: stale skip CKV_K8S_999 ['Deployment.nothing']: it matches no failure; remove it\n",
    )


def test_without_skips_every_justified_failure_fails_by_name(prod_only, tmp_path, capsys):
    skips = tmp_path / "skips.yaml"
    skips.write_text("[]")
    code, out, err = scan(capsys, "--stacks", str(prod_only), "--skips", str(skips))
    line = SCAN_LINE.fullmatch(out.strip())
    assert code == 1 and line and line["skipped"] == "0", out
    failures = err.splitlines()
    assert len(failures) == int(line["failed"]) > 0
    failure = re.compile(
        r"scan: FAILED prod: CKV_K8S_\d+ (Deployment|DaemonSet|Job)\.llm-prod\.[a-z0-9-]+: .+"
    )
    assert [f for f in failures if not failure.fullmatch(f)] == []
    # Each committed skip is needed by this stack or another: every check it names fails somewhere here.
    assert {f.split()[3] for f in failures} <= {s.check for s in read_skips(SKIPS)}


def test_a_scan_that_cannot_run_exits_2_with_one_line_per_problem(tmp_path, capsys):
    assert scan(capsys, "--stacks", str(tmp_path)) == (
        2,
        "",
        f"scan: error: {tmp_path}: no Pulumi.<stack>.yaml files to scan\n",
    )
    (tmp_path / "Pulumi.x.yaml").write_text("config: {}\n")
    assert scan(capsys, "--stacks", str(tmp_path)) == (
        2,
        "",
        f"scan: error: {tmp_path}/Pulumi.x.yaml: config: is missing or empty; set sgldeploy:platform and "
        "sgldeploy:deployments under `config:` (see stacks/Pulumi.dev.yaml)\n",
    )
    shutil.copy(ROOT / "stacks" / "Pulumi.dev.yaml", tmp_path / "Pulumi.x.yaml")
    shutil.copy(ROOT / "stacks" / "models.lock.json", tmp_path)
    missing = tmp_path / "no-checkov"
    code = scan_main(["--checkov", str(missing), "--stacks", str(tmp_path), "--skips", str(SKIPS)])
    out, err = capsys.readouterr()
    assert (code, out) == (2, "") and err.startswith(f"scan: error: cannot run {missing}: ")
    assert err.endswith("; install it with `make scan`\n") and err.count("\n") == 1


def test_a_why_of_five_words_is_a_reason_and_four_are_not(tmp_path):
    path = tmp_path / "skips.yaml"
    path.write_text(
        "- {check: CKV_K8S_11, objects: ['Deployment.*'], why: 'serving pods throttle under limits'}"
    )
    assert read_skips(path) == [Skip("CKV_K8S_11", ("Deployment.*",), "serving pods throttle under limits")]
    path.write_text("- {check: CKV_K8S_11, objects: ['Deployment.*'], why: 'pods throttle under limits'}")
    with pytest.raises(ScanError, match="a why of a sentence"):
        read_skips(path)
