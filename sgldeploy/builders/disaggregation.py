"""What the pods of a disaggregated deployment's two roles add to a plain server's: the KV transfer over EFA,
prefill and decode kept on different nodes, and the bootstrap port the PD router tells decode about. Pure.

SGLang 0.5.23 (srt/disaggregation): a prefill replica runs a bootstrap server on --disaggregation-bootstrap-port;
each rank of either role listens for the other's ZMQ messages on a port it picks at random from the ephemeral
range, and the KV cache itself moves by RDMA over EFA, which is not IP traffic (NetworkPolicies do not see it).
"""

from __future__ import annotations

from typing import Any

from sgldeploy.builders.sglang_args import BOOTSTRAP_PORT
from sgldeploy.spec import ServingRole

BOOTSTRAP_ANNOTATION = "sglang.ai/bootstrap-port"
"""The prefill pod annotation sglang-router 0.3.2's service discovery reads the bootstrap port from
(router_args.py, `bootstrap_port_annotation`); without it the router sends none and decode falls back to its own
--disaggregation-bootstrap-port."""
ZMQ_PORTS = (49152, 65535)
"""Where each rank of either role binds its ZMQ socket (SGLang's `get_free_port` in the ephemeral range)."""
TRANSFER_ENV = {
    # Mooncake's transfer engine over libfabric's EFA provider, not its default RDMA verbs.
    "mooncake": {"MOONCAKE_PROTOCOL": "efa"},
    # NIXL's libfabric plugin (the image's NIXL must be built with it); its default is UCX.
    "nixl": {"SGLANG_DISAGGREGATION_NIXL_BACKEND": "LIBFABRIC"},
}


def role_env(role: ServingRole) -> list[dict[str, str]]:
    return [{"name": k, "value": v} for k, v in sorted(TRANSFER_ENV[role.transfer_backend].items())]


def peer_anti_affinity(role: ServingRole) -> dict[str, Any]:
    """Never on a node that runs the other role: each role's node pool is sized for its own replicas, and both
    on one node would share its GPUs' memory bandwidth, which disaggregation is there to separate."""
    return {
        "podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {
                    "labelSelector": {"matchLabels": {"app.kubernetes.io/instance": role.peer}},
                    "topologyKey": "kubernetes.io/hostname",
                }
            ]
        }
    }


def pod_annotations(role: ServingRole) -> dict[str, str]:
    return {BOOTSTRAP_ANNOTATION: str(BOOTSTRAP_PORT)} if role.role == "prefill" else {}


def container_ports(role: ServingRole) -> list[dict[str, Any]]:
    if role.role != "prefill":
        return []
    return [{"name": "bootstrap", "containerPort": BOOTSTRAP_PORT, "protocol": "TCP"}]
