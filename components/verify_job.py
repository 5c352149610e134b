"""The in-cluster verification of one deployment: the measurement's ConfigMap and the Job that runs it once an
update has reached the endpoint (specs in sgldeploy/builders/verify_job.py)."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from sgldeploy.builders import verify_job
from sgldeploy.builders.verify_job import Verification

AWAIT_MARGIN_SECONDS = (
    300  # past the Job's own deadline: Kubernetes marks it failed before Pulumi stops waiting
)


@dataclass(frozen=True)
class VerifyJobArgs:
    verification: Verification
    sha: str
    """The locked commit served: a new commit is a new Job."""
    namespace: pulumi.Input[str]
    namespace_name: str
    through_interceptor: bool
    """The deployment may be at zero: the Job comes in through the KEDA HTTP add-on's interceptor."""
    api_key_secret: str | None
    """The Secret holding the API key (key API_KEY); None with auth none."""
    after: list[pulumi.Resource]
    """What serves the update (the workload, the router, the autoscaler waking it, the Secret): Pulumi waits for
    their rollouts, so the Job measures the update, not the replicas it replaced."""


class VerifyJob(pulumi.ComponentResource):
    job: k8s.batch.v1.Job

    def __init__(self, name: str, args: VerifyJobArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("sgldeploy:verify:VerifyJob", name, None, opts)
        v = args.verification
        dep = v.spec
        url, stable = verify_job.urls(dep, args.namespace_name, args.through_interceptor)
        argv = verify_job.argv(v, url, stable, api_key=args.api_key_secret is not None)
        tool = verify_job.tool_config_map(dep)
        config_map = k8s.core.v1.ConfigMap(
            f"{name}-tool",
            metadata={**tool["metadata"], "namespace": args.namespace},
            data=tool["data"],
            # Named by the tool's sha256: a changed tool is a new ConfigMap (created first), and a new Job with it.
            immutable=True,
            opts=pulumi.ResourceOptions(parent=self),
        )
        deadline = verify_job.deadline_seconds(v)
        self.job = k8s.batch.v1.Job(
            f"{name}-job",
            metadata={
                "name": verify_job.job_name(dep, args.sha, argv),
                "namespace": args.namespace,
                "labels": verify_job.labels(dep),
            },
            spec=verify_job.job_spec(dep, argv, args.api_key_secret, tool["metadata"]["name"], deadline),
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[config_map, *args.after],
                # pulumi-kubernetes waits for the Job to complete and fails the update when it fails; its
                # default 10 minutes would cut a cold start from zero short.
                custom_timeouts=pulumi.CustomTimeouts(create=f"{deadline + AWAIT_MARGIN_SECONDS}s"),
            ),
        )
        self.register_outputs({"jobName": self.job.metadata["name"]})
