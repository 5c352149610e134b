"""The AWS region a stack runs in, read one way for the program (`pulumi preview`, `pulumi up`) and for the
offline commands, so the plan's summary, its cost and the program's outputs name the same region.

It is read as the Pulumi AWS provider reads it (pulumi_aws 7.51.1, `pulumi_aws.config.region`): the stack's
`aws:region`, else the `AWS_REGION` environment variable, else `AWS_DEFAULT_REGION`. Where none is set, the
provider would fall back to the AWS shared config's profile, which nothing offline can read; sgldeploy plans
such a stack in DEFAULT_REGION.
"""

from __future__ import annotations

import os

from sgldeploy.catalog import PRICED_REGION

REGION_KEY = "aws:region"  # the stack config key, the AWS provider's
ENVIRONMENT = ("AWS_REGION", "AWS_DEFAULT_REGION")  # in the provider's order
DEFAULT_REGION = PRICED_REGION  # the region the catalog's prices are for


def stack_region(setting: str | None) -> str:
    """The region of a stack whose `aws:region` is `setting` (None or empty when the stack sets none)."""
    if setting:
        return setting
    for name in ENVIRONMENT:
        if value := os.environ.get(name):
            return value
    return DEFAULT_REGION
