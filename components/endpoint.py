"""A deployment's load balancer: an ALB Ingress or an NLB Service, which the AWS Load Balancer Controller turns
into the load balancer itself. Specs in sgldeploy/builders/endpoint.py."""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

from sgldeploy.builders import endpoint
from sgldeploy.spec import DeploymentSpec


@dataclass(frozen=True)
class EndpointArgs:
    spec: DeploymentSpec
    namespace: pulumi.Input[str]
    multi_node: bool
    through_interceptor: bool
    """The deployment may be at zero: the ALB sends requests to the KEDA HTTP interceptor, which holds them."""
    tags: dict[str, str] = field(default_factory=dict)


class Endpoint(pulumi.ComponentResource):
    def __init__(self, name: str, args: EndpointArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("sgldeploy:traffic:Endpoint", name, None, opts)
        dep = args.spec
        # The object's name is fixed (operators and DNS records refer to it); a replacement must free it first.
        named = pulumi.ResourceOptions(parent=self, delete_before_replace=True)
        if dep.endpoint.load_balancer == "alb":
            # Ingress backends must be in the Ingress's namespace: via the interceptor it lives in KEDA's.
            namespace = endpoint.INTERCEPTOR_NAMESPACE if args.through_interceptor else args.namespace
            k8s.networking.v1.Ingress(
                f"{name}-ingress",
                metadata={
                    "name": dep.name,
                    "namespace": namespace,
                    "labels": endpoint.endpoint_labels(dep),
                    "annotations": endpoint.alb_annotations(dep, args.tags, args.through_interceptor),
                },
                spec=endpoint.ingress_spec(dep, args.through_interceptor),
                opts=named,
            )
        else:
            k8s.core.v1.Service(
                f"{name}-nlb",
                metadata={
                    "name": f"{dep.name}-nlb",
                    "namespace": args.namespace,
                    "labels": endpoint.endpoint_labels(dep),
                    "annotations": endpoint.nlb_annotations(dep, args.tags),
                },
                spec=endpoint.nlb_service_spec(dep, args.multi_node),
                opts=named,
            )
        self.register_outputs({})
