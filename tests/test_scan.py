"""The Checkov scan's bookkeeping: which failures the skip list justifies, stale skips, bad skip files.
(`make scan`, part of `make test`, runs Checkov itself over every committed stack.)"""

from __future__ import annotations

import pytest

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
from sgldeploy.spec.stackfile import OPAQUE_SECRET, read_stack_file

from .conftest import ROOT

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
            o.split(".")[0] in ("Deployment", "DaemonSet") for o in skip.objects
        )


def test_stacks_are_scanned_with_their_secrets_stood_in():
    prod = read_stack_file(ROOT / "stacks" / "Pulumi.prod.yaml")
    assert "sgldeploy:hfToken" not in prod.config
    scanned = with_stand_in_secrets(prod)
    assert scanned.config["sgldeploy:hfToken"] == OPAQUE_SECRET
    assert "sgldeploy:hfToken" in scanned.secret_keys
