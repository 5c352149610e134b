"""A shared weight cache for one deployment: an EFS file system (with a mount target in each of the cluster's
subnets) or an FSx for Lustre one, behind a security group open to the cluster's nodes only, its PersistentVolume
and claim, and a prefetch Job per (model, commit) that fills it before pods roll.

The pod side (init container that waits for `.complete`, read-only mount) is in sgldeploy/builders/weight_cache.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from components.platform import ClusterNetwork
from sgldeploy.builders import weight_cache
from sgldeploy.models.lock import LockedAdapter, LockedModel
from sgldeploy.spec import DeploymentSpec

NFS_PORT = 2049
LUSTRE_PORTS = ((988, 988), (1018, 1023))


@dataclass(frozen=True)
class SharedWeightCacheArgs:
    spec: DeploymentSpec
    model: LockedModel
    weights_gib: float
    namespace: pulumi.Input[str]
    network: ClusterNetwork
    token_env: dict[str, Any] | None
    """HF_TOKEN as a Secret reference for the Job, or None."""
    tags: dict[str, str]
    volume_name: str
    """Name of the (cluster-wide) PersistentVolume: unique per stack namespace and deployment."""
    adapters: tuple[LockedAdapter, ...] = ()
    """LoRA adapters the prefetch Job fills beside the model."""


class SharedWeightCache(pulumi.ComponentResource):
    claim: k8s.core.v1.PersistentVolumeClaim
    job: k8s.batch.v1.Job
    """Completes when the commit is in the cache; the serving workload depends on it."""

    def __init__(self, name: str, args: SharedWeightCacheArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("sgldeploy:cache:SharedWeightCache", name, None, opts)
        _validate(args)
        size = weight_cache.shared_size_gib(args.spec, args.weights_gib)
        tags = {**args.tags, "sgldeploy.io/deployment": args.spec.name}
        child = pulumi.ResourceOptions(parent=self)
        group = self._security_group(name, args, tags)
        if args.spec.cache_storage == "efs":
            source = self._efs(name, args, group, tags, child)
        else:
            source = self._fsx(name, args, group, size, tags, child)
        volume = self._volume(name, args, size, source)
        self.claim = self._claim(name, args, size, volume)
        self.job = self._prefetch_job(name, args)
        self.register_outputs({"claimName": self.claim.metadata.name, "sizeGib": size})

    def _security_group(
        self, name: str, args: SharedWeightCacheArgs, tags: dict[str, Any]
    ) -> aws.ec2.SecurityGroup:
        """The file system's ports, open to the cluster's nodes only."""
        dep, storage = args.spec, args.spec.cache_storage
        ports = [(NFS_PORT, NFS_PORT)] if storage == "efs" else list(LUSTRE_PORTS)
        from_nodes = [
            {
                "protocol": "tcp",
                "from_port": lo,
                "to_port": hi,
                "security_groups": [args.network.security_group_id],
            }
            for lo, hi in ports
        ]
        # Lustre servers also talk to each other on the same ports.
        between_servers = (
            [{"protocol": "tcp", "from_port": lo, "to_port": hi, "self": True} for lo, hi in ports]
            if storage == "fsx-lustre"
            else []
        )
        return aws.ec2.SecurityGroup(
            f"{name}-security-group",
            vpc_id=args.network.vpc_id,
            # EC2 takes only a-z A-Z 0-9, spaces and ._-:/()#,@[]+=&;{}!$* here (CreateSecurityGroup).
            description=f"{storage} weight cache of {dep.name}, reachable from cluster nodes only",
            ingress=from_nodes + between_servers,
            egress=[{"protocol": "-1", "from_port": 0, "to_port": 0, "cidr_blocks": ["0.0.0.0/0"]}],
            tags={**tags, "Name": f"{name}-weights"},
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _volume(
        self, name: str, args: SharedWeightCacheArgs, size: int, source: dict[str, Any]
    ) -> k8s.core.v1.PersistentVolume:
        """The file system as a cluster-wide PersistentVolume (`source`: its CSI driver and handle)."""
        return k8s.core.v1.PersistentVolume(
            f"{name}-volume",
            metadata={"name": args.volume_name, "labels": {"app.kubernetes.io/instance": args.spec.name}},
            spec={
                "capacity": {"storage": f"{size}Gi"},
                "accessModes": ["ReadWriteMany"],
                # Weights outlive a deleted claim: a recreated deployment finds them still there.
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "",
                "csi": source,
            },
            # The claim binds to this name; a replacement must free it first.
            opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True),
        )

    def _claim(
        self, name: str, args: SharedWeightCacheArgs, size: int, volume: k8s.core.v1.PersistentVolume
    ) -> k8s.core.v1.PersistentVolumeClaim:
        """The claim pods and the prefetch Job mount, bound to the volume by name."""
        dep = args.spec
        return k8s.core.v1.PersistentVolumeClaim(
            f"{name}-claim",
            metadata={
                "name": weight_cache.claim_name(dep),
                "namespace": args.namespace,
                "labels": {"app.kubernetes.io/instance": dep.name},
            },
            spec={
                "accessModes": ["ReadWriteMany"],
                "storageClassName": "",
                "volumeName": args.volume_name,
                "resources": {"requests": {"storage": f"{size}Gi"}},
            },
            # Pods mount the claim by this name, and it binds only once the volume exists.
            opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True, depends_on=[volume]),
        )

    def _prefetch_job(self, name: str, args: SharedWeightCacheArgs) -> k8s.batch.v1.Job:
        dep = args.spec
        return k8s.batch.v1.Job(
            # One Job per commit: a new revision fills a new directory while the old one keeps serving.
            f"{name}-prefetch-{args.model.sha[:12]}",
            metadata={"namespace": args.namespace, "labels": {"app.kubernetes.io/instance": dep.name}},
            spec=weight_cache.prefetch_job_spec(dep, args.model, args.token_env, args.adapters),
            # The Job writes through the claim, which must be bound first.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.claim]),
        )

    @staticmethod
    def _efs(
        name: str,
        args: SharedWeightCacheArgs,
        group: aws.ec2.SecurityGroup,
        tags: dict[str, Any],
        child: pulumi.ResourceOptions,
    ) -> dict[str, Any]:
        fs = aws.efs.FileSystem(
            f"{name}-efs",
            encrypted=True,
            performance_mode="generalPurpose",
            throughput_mode="elastic",
            tags={**tags, "Name": f"{name}-weights"},
            opts=child,
        )
        for i, subnet in enumerate(args.network.subnet_ids):
            aws.efs.MountTarget(
                f"{name}-mount-{i}",
                file_system_id=fs.id,
                subnet_id=subnet,
                security_groups=[group.id],
                opts=child,
            )
        return {"driver": "efs.csi.aws.com", "volumeHandle": fs.id}

    @staticmethod
    def _fsx(
        name: str,
        args: SharedWeightCacheArgs,
        group: aws.ec2.SecurityGroup,
        size: int,
        tags: dict[str, Any],
        child: pulumi.ResourceOptions,
    ) -> dict[str, Any]:
        fs = aws.fsx.LustreFileSystem(
            f"{name}-fsx",
            storage_capacity=size,
            deployment_type=weight_cache.FSX_DEPLOYMENT_TYPE,
            per_unit_storage_throughput=weight_cache.FSX_PER_UNIT_THROUGHPUT_MB_S_TIB,
            data_compression_type="LZ4",
            subnet_ids=args.network.subnet_ids[0],
            security_group_ids=[group.id],
            tags={**tags, "Name": f"{name}-weights"},
            opts=child,
        )
        return {
            "driver": "fsx.csi.aws.com",
            "volumeHandle": fs.id,
            "volumeAttributes": {"dnsname": fs.dns_name, "mountname": fs.mount_name},
        }


def _validate(args: SharedWeightCacheArgs) -> None:
    if not args.network.subnet_ids:
        raise pulumi.RunError(
            f"error: sgldeploy:deployments.{args.spec.name}.cache.storage: the cluster reports no "
            f"subnets to reach {args.spec.cache_storage} from (got none); check the EKS cluster's VPC"
        )
