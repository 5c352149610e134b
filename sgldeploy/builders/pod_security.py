"""The security settings of every pod and container sgldeploy renders, in one place (no Pulumi).

Every container: no privilege escalation and no Linux capability but those named. Containers with nothing to
write (the prefetch tool, which writes only to its volume; the image pre-pull; the router) also get a
read-only root filesystem. Pods that run neither SGLang nor anything writing to a hostPath run as nobody;
every pod gets the runtime's default seccomp profile. The SGLang images run as root, so the server and the
prefetch pods keep their user.
"""

from __future__ import annotations

from typing import Any

NOBODY = 65534
SECCOMP_DEFAULT = {"type": "RuntimeDefault"}


def container(*add: str) -> dict[str, Any]:
    """A container's securityContext: no escalation, every capability dropped but those named in `add`."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"], **({"add": list(add)} if add else {})},
    }


def read_only_container() -> dict[str, Any]:
    """As `container()`, for a container with nothing to write: the root filesystem is mounted read-only."""
    return {**container(), "readOnlyRootFilesystem": True}


def pod() -> dict[str, Any]:
    """A pod's securityContext: the container runtime's default seccomp profile."""
    return {"seccompProfile": dict(SECCOMP_DEFAULT)}


def non_root_pod() -> dict[str, Any]:
    """As `pod()`, for pods that neither write a hostPath nor run SGLang: they run as nobody."""
    return {"runAsNonRoot": True, "runAsUser": NOBODY, "runAsGroup": NOBODY, **pod()}


def without_api_token(security_context: dict[str, Any] | None = None) -> dict[str, Any]:
    """Pod spec fields of a pod that never calls the Kubernetes API (the server, the prefetch Job, the image
    pre-pull): its securityContext (`pod()` unless given) and no service account token mounted. The router
    does call the API (it discovers replicas by watching pods) and mounts its own token."""
    return {"securityContext": security_context or pod(), "automountServiceAccountToken": False}
