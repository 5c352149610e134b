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
    """The deployment's node pool (sgldeploy.builders.node_pool.pool_id); None for any GPU node."""
    efa: int = 0
    """Elastic Fabric Adapters each pod requests, for NCCL across nodes or a role's KV transfer (0: none)."""
    autoscaled: bool = False
    """An autoscaler owns the replica count after the first apply."""
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
        multi_node = node_pool.multi_node(args.sizing)
        metadata = {"name": dep.name, "namespace": args.namespace, "labels": sglang_server.labels(dep)}
        if multi_node:
            self.workload = self._leader_worker_set(name, args, metadata)
        else:
            tracks = args.tracks or rollout.tracks(dep, args.model.sha, dep.initial_replicas)[:1]
            workloads = self._deployments(name, args, metadata, tracks)
            self.workload = workloads[0]
            if rollout.split(dep):
                self._canary_service(name, args, metadata, tracks[-1], workloads[-1])
        self.service = self._service(name, args, metadata, multi_node)
        self.service_name = pulumi.Output.concat(dep.name, ".", args.namespace, ".svc")
        self.register_outputs({"serviceName": self.service_name})

    def _named(self) -> pulumi.ResourceOptions:
        # The name is what operators type (`kubectl get deploy NAME`); a replacement must free it first.
        return pulumi.ResourceOptions(parent=self, delete_before_replace=True)

    def _autoscaled(self, args: SglangServerArgs) -> pulumi.ResourceOptions:
        """Options of a workload whose replica count an autoscaler may own."""
        if not args.autoscaled:
            return self._named()
        # The autoscaler owns the replica count; a later `pulumi up` must not reset what it chose.
        return pulumi.ResourceOptions.merge(
            self._named(), pulumi.ResourceOptions(ignore_changes=["spec.replicas"])
        )

    def _leader_worker_set(
        self, name: str, args: SglangServerArgs, metadata: dict[str, Any]
    ) -> k8s.apiextensions.CustomResource:
        """A replica spanning nodes: a leader pod and its workers, one group per replica."""
        types = node_pool.instance_types(args.sizing)
        spec = sglang_server.leader_worker_set_spec(
            args.spec, args.model, args.sizing, args.secrets, types, pool=args.pool, efa=args.efa
        )
        for role in ("leaderTemplate", "workerTemplate"):
            spec["leaderWorkerTemplate"][role]["spec"].update(args.pod_spec_overrides)
        return k8s.apiextensions.CustomResource(
            f"{name}-leader-worker-set",
            api_version="leaderworkerset.x-k8s.io/v1",
            kind="LeaderWorkerSet",
            metadata=metadata,
            spec=spec,
            opts=self._autoscaled(args),
        )

    def _deployments(
        self, name: str, args: SglangServerArgs, metadata: dict[str, Any], tracks: list[rollout.Track]
    ) -> list[k8s.apps.v1.Deployment]:
        """A Deployment per rollout track, the active one first."""
        types = node_pool.instance_types(args.sizing)
        workloads = []
        for track in tracks:
            spec = sglang_server.deployment_spec(
                args.spec,
                dataclasses.replace(args.model, sha=track.sha),
                args.sizing,
                args.secrets,
                types,
                pool=args.pool,
                track=track,
                efa=args.efa,
            )
            spec["template"]["spec"].update(args.pod_spec_overrides)
            workloads.append(
                k8s.apps.v1.Deployment(
                    # One resource per commit for blue-green and canary: a new commit is a new Deployment.
                    f"{name}-deployment" + (f"-{track.sha[:8]}" if track.keyed else ""),
                    metadata={**metadata, "name": track.name},
                    spec=spec,
                    # A track of fixed replicas (the previous commit's, a canary's) keeps them; the autoscaler
                    # owns only the active track's count.
                    opts=self._autoscaled(args) if track.replicas is None else self._named(),
                )
            )
        return workloads

    def _canary_service(
        self,
        name: str,
        args: SglangServerArgs,
        metadata: dict[str, Any],
        track: rollout.Track,
        workload: k8s.apps.v1.Deployment,
    ) -> k8s.core.v1.Service:
        """The canary's own Service, while one runs, so its share of the traffic can be sent to it."""
        return k8s.core.v1.Service(
            f"{name}-canary-service",
            metadata={**metadata, "name": f"{args.spec.name}{rollout.CANARY_SERVICE_SUFFIX}"},
            spec=sglang_server.service_spec(args.spec, track=track),
            # It selects the canary's pods once their Deployment is ready; its name is fixed, so a
            # replacement must free it first.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[workload], delete_before_replace=True),
        )

    def _service(
        self, name: str, args: SglangServerArgs, metadata: dict[str, Any], multi_node: bool
    ) -> k8s.core.v1.Service:
        active = args.tracks[0] if args.tracks else None
        return k8s.core.v1.Service(
            f"{name}-service",
            metadata=metadata,
            spec=sglang_server.service_spec(args.spec, multi_node, active),
            # Clients address the model by this DNS name, so it is fixed; a replacement must free it first.
            # It selects the active commit only once that commit's Deployment is ready (Pulumi awaits it).
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.workload], delete_before_replace=True),
        )
