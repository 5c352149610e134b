"""The SGLang server of one deployment: its GPU pods (a Deployment per rollout track, or a LeaderWorkerSet across
nodes) and the ClusterIP Service in front (plus the canary's own Service while one runs)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from sgldeploy.builders import node_pool, rollout, sglang_server
from sgldeploy.models.lock import LockedModel
from sgldeploy.models.sizing import Sizing
from sgldeploy.spec import DeploymentSpec


@dataclass(frozen=True)
class SglangServerArgs:
    spec: DeploymentSpec
    model: LockedModel
    sizing: Sizing
    namespace: pulumi.Input[str]
    secrets: sglang_server.SecretRefs
    pool: str | None = None
    efa: int = 0
    """Elastic Fabric Adapters each pod of a replica spanning nodes requests (0: none)."""
    autoscaled: bool = False
    """An autoscaler owns the replica count after the first apply."""
    """The deployment's node pool (sgldeploy.builders.node_pool.pool_id); None for any GPU node."""
    pod_spec_overrides: dict[str, Any] = field(default_factory=dict)
    """Extra pod spec fields merged over the generated ones (wrap, don't hide), e.g. priorityClassName."""
    tracks: list[rollout.Track] = field(default_factory=list)
    """The rollout's Deployments, the active one first (sgldeploy.builders.rollout.tracks); empty for one plain Deployment."""


class SglangServer(pulumi.ComponentResource):
    """A Deployment when a replica fits one node; a LeaderWorkerSet when it spans several."""

    workload: pulumi.CustomResource
    service: k8s.core.v1.Service
    service_name: pulumi.Output[str]
    """In-cluster DNS name clients use: `<name>.<namespace>.svc`."""

    def __init__(self, name: str, args: SglangServerArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("sgldeploy:serving:SglangServer", name, None, opts)
        dep = args.spec
        types = node_pool.instance_types(args.sizing)
        multi_node = args.sizing.placement.nodes_per_replica > 1
        metadata = {"name": dep.name, "namespace": args.namespace, "labels": sglang_server.labels(dep)}
        child = pulumi.ResourceOptions(parent=self)
        # The name is what operators type (`kubectl get deploy NAME`); a replacement must free it first.
        named = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(delete_before_replace=True))
        # The autoscaler owns the replica count; a later `pulumi up` must not reset what it chose.
        workload_opts = (
            pulumi.ResourceOptions.merge(named, pulumi.ResourceOptions(ignore_changes=["spec.replicas"]))
            if args.autoscaled
            else named
        )
        if multi_node:
            spec = sglang_server.leader_worker_set_spec(
                dep, args.model, args.sizing, args.secrets, types, pool=args.pool, efa=args.efa
            )
            for role in ("leaderTemplate", "workerTemplate"):
                spec["leaderWorkerTemplate"][role]["spec"].update(args.pod_spec_overrides)
            self.workload = k8s.apiextensions.CustomResource(
                f"{name}-leader-worker-set",
                api_version="leaderworkerset.x-k8s.io/v1",
                kind="LeaderWorkerSet",
                metadata=metadata,
                spec=spec,
                opts=workload_opts,
            )
        else:
            tracks = args.tracks or rollout.tracks(dep, args.model.sha, dep.initial_replicas)[:1]
            workloads = []
            for track in tracks:
                spec = sglang_server.deployment_spec(
                    dep,
                    dataclasses.replace(args.model, sha=track.sha),
                    args.sizing,
                    args.secrets,
                    types,
                    pool=args.pool,
                    track=track,
                )
                spec["template"]["spec"].update(args.pod_spec_overrides)
                workloads.append(
                    k8s.apps.v1.Deployment(
                        # One resource per commit for blue-green and canary: a new commit is a new Deployment.
                        f"{name}-deployment" + (f"-{track.sha[:8]}" if track.keyed else ""),
                        metadata={**metadata, "name": track.name},
                        spec=spec,
                        opts=workload_opts if track.replicas is None else named,
                    )
                )
            self.workload = workloads[0]
            if rollout.split(dep):
                k8s.core.v1.Service(
                    f"{name}-canary-service",
                    metadata={**metadata, "name": f"{dep.name}{rollout.CANARY_SERVICE_SUFFIX}"},
                    spec=sglang_server.service_spec(dep, multi_node, tracks[-1]),
                    opts=pulumi.ResourceOptions(
                        parent=self, depends_on=[workloads[-1]], delete_before_replace=True
                    ),
                )
        active = args.tracks[0] if args.tracks else None
        self.service = k8s.core.v1.Service(
            f"{name}-service",
            metadata=metadata,
            spec=sglang_server.service_spec(dep, multi_node, active),
            # Clients address the model by this DNS name, so it is fixed; a replacement must free it first.
            # It selects the active commit only once that commit's Deployment is ready (Pulumi awaits it).
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.workload], delete_before_replace=True),
        )
        self.service_name = pulumi.Output.concat(dep.name, ".", args.namespace, ".svc")
        self.register_outputs({"serviceName": self.service_name})
