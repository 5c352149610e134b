"""One region per stack: `aws:region`, else AWS_REGION, else AWS_DEFAULT_REGION (the order pulumi_aws 7.51.1's
`config.region` reads them in), else us-east-1; the plan's summary, its cost and what the program declares and
outputs all name it."""

from __future__ import annotations

import re

import pytest
import yaml

from sgldeploy.offline.plan_json import plan_json
from sgldeploy.offline.plan_text import summary
from sgldeploy.spec.region import stack_region

from .conftest import render_stack, write_stack

# A region name, or an Availability Zone's (the region and a letter): the region is what is captured.
REGION_NAME = re.compile(
    r"\b((?:us|eu|ap|sa|ca|me|af)-(?:east|west|north|south|central|northeast|southeast)-\d)[a-z]?\b"
)


@pytest.fixture
def environment(monkeypatch):
    """Sets AWS_REGION and AWS_DEFAULT_REGION as given (None: unset)."""

    def set_to(aws_region: str | None, aws_default_region: str | None) -> None:
        for name, value in (("AWS_REGION", aws_region), ("AWS_DEFAULT_REGION", aws_default_region)):
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)

    return set_to


@pytest.mark.parametrize(
    "setting, aws_region, aws_default_region, expected",
    [
        ("eu-west-1", "us-west-2", "ap-south-1", "eu-west-1"),  # the stack's setting wins
        (None, "us-west-2", "ap-south-1", "us-west-2"),  # then AWS_REGION
        (None, None, "ap-south-1", "ap-south-1"),  # then AWS_DEFAULT_REGION
        ("", None, "ap-south-1", "ap-south-1"),  # an empty setting is no setting
        (None, "", "ap-south-1", "ap-south-1"),  # nor is an empty variable
        (None, None, None, "us-east-1"),  # then the region the catalog is priced in
    ],
)
def test_the_region_is_read_as_the_aws_provider_reads_it(
    environment, setting, aws_region, aws_default_region, expected
):
    environment(aws_region, aws_default_region)
    assert stack_region(setting) == expected


def stack_without_region(tmp_path, region: str | None):
    """A stack that creates its VPC and cluster (so zones are looked up), with `aws:region` only if given."""
    path = write_stack(tmp_path, platform={"cluster": {"name": "test", "create": True}, "namespace": "llm"})
    data = yaml.safe_load(path.read_text())
    del data["config"]["aws:region"]
    if region is not None:
        data["config"]["aws:region"] = region
    path.write_text(yaml.safe_dump(data))
    return path


def regions_declared(plan) -> set[str]:
    """The region of every region or zone name in what the program registered (ARNs, subnets' zones, chart
    values)."""
    return set(REGION_NAME.findall(repr([r.inputs for r in plan.recording.resources])))


@pytest.mark.parametrize(
    "setting, aws_region, expected",
    [(None, "eu-west-1", "eu-west-1"), ("us-east-1", "eu-west-1", "us-east-1")],
    ids=["only AWS_REGION", "aws:region wins"],
)
def test_summary_plan_json_and_program_agree_on_the_region(
    tmp_path, environment, setting, aws_region, expected
):
    environment(aws_region, None)
    plan = render_stack(stack_without_region(tmp_path, setting))
    rendered = plan_json(plan)
    assert rendered["cost"]["region"] == expected
    assert summary(plan).splitlines()[-1].endswith(f"; {expected} prices, default usage assumptions")
    assert regions_declared(plan) == {expected}
    # The program priced in the same region: its cost outputs are the plan's (absent where unpriced).
    outputs = plan.recording.outputs
    for key, field in (
        ("estimatedMonthlyCostMax", "monthly_usd_max"),
        ("estimatedHourlyCostMin", "hourly_usd_min"),
    ):
        assert outputs.get(key) == rendered["cost"][field]
    assert (expected == "us-east-1") == (rendered["cost"]["monthly_usd_max"] is not None)
