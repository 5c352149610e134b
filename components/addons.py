"""The cluster add-ons a stack installs: pinned Helm releases, each with only the AWS permissions it needs
(EKS Pod Identity), and Karpenter's interruption queue. Add-ons marked `existing` are referenced, never
reinstalled. The chart table, values and policies are data in sgldeploy/builders/addons.py."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from sgldeploy.builders import addons as catalog
from sgldeploy.spec import AddonsSpec

POD_IDENTITY_TRUST = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "pods.eks.amazonaws.com"},
                "Action": ["sts:AssumeRole", "sts:TagSession"],
            }
        ],
    }
)

INTERRUPTION_EVENTS = {  # what Karpenter drains a node ahead of (its interruption handling)
    "spot-interruption": {"source": ["aws.ec2"], "detail-type": ["EC2 Spot Instance Interruption Warning"]},
    "rebalance": {"source": ["aws.ec2"], "detail-type": ["EC2 Instance Rebalance Recommendation"]},
    "state-change": {"source": ["aws.ec2"], "detail-type": ["EC2 Instance State-change Notification"]},
    "scheduled-change": {"source": ["aws.health"], "detail-type": ["AWS Health Event"]},
}


@dataclass(frozen=True)
class ClusterAddonsArgs:
    spec: AddonsSpec
    cluster: catalog.ClusterFacts
    tags: dict[str, str]


class ClusterAddons(pulumi.ComponentResource):
    releases: dict[str, k8s.helm.v3.Release]
    """Installed add-ons by spec name; custom resources of an add-on's CRDs depend on its release."""

    def __init__(self, name: str, args: ClusterAddonsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("sgldeploy:platform:ClusterAddons", name, None, opts)
        selection = catalog.select(args.spec)
        self.releases = {}
        for chart in selection.install:
            before: list[pulumi.Resource] = []
            if chart.addon == "karpenter":
                before += self._interruption_queue(f"{name}-karpenter", args)
            if chart.service_account is not None:  # it calls AWS APIs
                before.append(self._pod_identity(f"{name}-{chart.release}", chart, args))
            self.releases[chart.addon] = k8s.helm.v3.Release(
                f"{name}-{chart.release}",
                name=chart.release,
                chart=chart.chart,
                version=chart.version,
                repository_opts={"repo": chart.repository} if chart.repository else None,
                namespace=chart.namespace,
                create_namespace=True,
                values=catalog.values(chart, args.cluster),
                atomic=True,
                cleanup_on_fail=True,
                timeout=900,
                # Its service account must have AWS credentials (and Karpenter its queue) before it starts.
                opts=pulumi.ResourceOptions(parent=self, depends_on=before),
            )
        self.existing = selection.existing
        self.register_outputs(
            {
                "installed": {a: c.version for a, c in ((c.addon, c) for c in selection.install)},
                "existing": selection.existing,
            }
        )

    def _pod_identity(
        self, name: str, chart: catalog.Chart, args: ClusterAddonsArgs
    ) -> aws.eks.PodIdentityAssociation:
        child = pulumi.ResourceOptions(parent=self)
        role = aws.iam.Role(
            f"{name}-role",
            assume_role_policy=POD_IDENTITY_TRUST,
            tags=args.tags,
            opts=child,
            description=f"{chart.release} in {args.cluster.name} (sgldeploy)",
        )
        # The VPC id is an output when this stack creates the VPC; the policy is written once it is known.
        document = pulumi.Output.from_input(args.cluster.vpc_id).apply(
            lambda vpc: json.dumps(catalog.policy(chart, dataclasses.replace(args.cluster, vpc_id=vpc)))
        )
        aws.iam.RolePolicy(f"{name}-policy", role=role.id, policy=document, opts=child)
        return aws.eks.PodIdentityAssociation(
            f"{name}-identity",
            cluster_name=args.cluster.name,
            namespace=chart.namespace,
            service_account=chart.service_account,
            role_arn=role.arn,
            tags=args.tags,
            opts=child,
        )

    def _interruption_queue(self, name: str, args: ClusterAddonsArgs) -> list[pulumi.Resource]:
        child = pulumi.ResourceOptions(parent=self)
        queue = aws.sqs.Queue(
            f"{name}-interruptions",
            name=args.cluster.interruption_queue,
            message_retention_seconds=300,
            sqs_managed_sse_enabled=True,
            tags=args.tags,
            opts=child,
        )
        policy = aws.sqs.QueuePolicy(
            f"{name}-interruptions-policy",
            queue_url=queue.id,
            policy=queue.arn.apply(lambda arn: json.dumps(catalog.interruption_queue_policy(arn))),
            opts=child,
        )
        made: list[pulumi.Resource] = [queue, policy]
        for event, pattern in INTERRUPTION_EVENTS.items():
            rule = aws.cloudwatch.EventRule(
                f"{name}-{event}", event_pattern=json.dumps(pattern), tags=args.tags, opts=child
            )
            made.append(
                aws.cloudwatch.EventTarget(
                    f"{name}-{event}-target", rule=rule.name, arn=queue.arn, opts=child
                )
            )
        return made
