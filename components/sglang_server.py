"""The SGLang server of one deployment: a Deployment of GPU pods and the ClusterIP Service in front."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import pulumi
import pulumi_kubernetes as k8s

from sgldeploy import serving
from sgldeploy.lock import LockedModel
from sgldeploy.sizing import Sizing
from sgldeploy.spec import DeploymentSpec


@dataclass(frozen=True)
class SglangServerArgs:
    spec: DeploymentSpec
    model: LockedModel
    sizing: Sizing
    namespace: pulumi.Input[str]
    secrets: serving.SecretRefs
    pod_spec_overrides: dict[str, Any] = field(default_factory=dict)
    """Extra pod spec fields merged over the generated ones (wrap, don't hide), e.g. priorityClassName."""


class SglangServer(pulumi.ComponentResource):
    deployment: k8s.apps.v1.Deployment
    service: k8s.core.v1.Service
    service_name: pulumi.Output[str]
    """In-cluster DNS name clients use: `<name>.<namespace>.svc`."""

    def __init__(self, name: str, args: SglangServerArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("sgldeploy:serving:SglangServer", name, None, opts)
        dep = args.spec
        types = [args.sizing.placement.instance_type, *args.sizing.placement.alternatives]
        spec = serving.deployment_spec(dep, args.model, args.sizing, args.secrets, types)
        spec["template"]["spec"].update(args.pod_spec_overrides)
        metadata = {"name": dep.name, "namespace": args.namespace, "labels": serving.labels(dep)}
        child = pulumi.ResourceOptions(parent=self)
        self.deployment = k8s.apps.v1.Deployment(
            f"{name}-deployment", metadata=metadata, spec=spec,
            # The name is what operators type (`kubectl get deploy NAME`); a replacement must free it first.
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(delete_before_replace=True)),
        )
        self.service = k8s.core.v1.Service(
            f"{name}-service", metadata=metadata, spec=serving.service_spec(dep),
            # Clients address the model by this DNS name, so it is fixed; a replacement must free it first.
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(delete_before_replace=True)),
        )
        self.service_name = pulumi.Output.concat(dep.name, ".", args.namespace, ".svc")
        self.register_outputs({"serviceName": self.service_name})
