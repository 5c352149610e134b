"""A deployment's LoRA adapters against the lock and its base model: each locked (pinned in production), a LoRA
adapter SGLang 0.5.23 loads (no DoRA, modules it serves), trained on the deployment's model, and within
`serving.lora.max_lora_rank`. Pure: the stack resolver gathers these problems with the others."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sgldeploy.models import lora
from sgldeploy.models.lock import NOT_LOCKED_FIX, LockContents, LockedAdapter, LockedModel, lock_key
from sgldeploy.spec import DeploymentSpec, is_commit
from sgldeploy.spec.problems import Problem


def locked_adapters(
    dep: DeploymentSpec,
    model: LockedModel | None,
    lock: LockContents,
    lock_file: Path,
    production: bool,
    at: Callable[..., str],
) -> tuple[list[LockedAdapter], list[Problem]]:
    """The deployment's adapters as locked, in spec order, and every problem with them."""
    found, problems = [], []
    for j, ref in enumerate(dep.model.adapters):
        key = lock_key(ref.repo, ref.revision)
        if production and not is_commit(ref.revision):
            pinned = f"; it is locked at {lock.adapters[key].sha}" if key in lock.adapters else ""
            problems.append(
                Problem(
                    at("model", "adapters", j, "revision"),
                    "must be a 40-hex commit in a production stack",
                    f"pin the commit the branch or tag resolves to{pinned}",
                    ref.revision,
                )
            )
        if key in lock.damaged_adapters:
            problems += [damage.in_lock(lock_file) for damage in lock.damaged_adapters[key]]
            continue
        adapter = lock.adapters.get(key)
        if adapter is None:
            problems.append(
                Problem(
                    at("model", "adapters", j, "revision"),
                    f"{ref.repo}@{ref.revision} is not in {lock_file.name}",
                    NOT_LOCKED_FIX,
                    ref.revision,
                )
            )
            continue
        problems += _adapter_problems(dep, model, adapter, j, at)
        found.append(adapter)
    problems += _rank_problems(dep, found, at)
    return found, problems


def _adapter_problems(
    dep: DeploymentSpec, model: LockedModel | None, adapter: LockedAdapter, j: int, at: Callable[..., str]
) -> list[Problem]:
    out = []
    repo_at = at("model", "adapters", j, "repo")
    base = adapter.base_model
    if base and _is_repo_id(base) and base.lower() != dep.model.repo.lower():
        out.append(
            Problem(
                repo_at,
                f"was trained on {base}, not on the deployment's {dep.model.repo} (its adapter_config.json's "
                "base_model_name_or_path)",
                f"serve it on a deployment of {base}, or choose an adapter trained on {dep.model.repo}",
                adapter.repo,
            )
        )
    if adapter.use_dora:
        out.append(
            Problem(
                repo_at,
                "is a DoRA adapter, which SGLang 0.5.23 refuses to load (lora_manager.py validate_new_adapter)",
                "choose a plain LoRA adapter (adapter_config.json use_dora: false)",
                adapter.repo,
            )
        )
    if lora.normalized_modules(adapter) is None:
        unknown = [m for m in adapter.target_modules if m.split(".")[-1] not in lora.NORMALIZED]
        out.append(
            Problem(
                repo_at,
                f"targets modules sgldeploy does not size LoRA for: {', '.join(unknown)}",
                "choose an adapter of the attention and MLP projections (q/k/v/o, gate/up/down), embed_tokens "
                "or lm_head",
                adapter.repo,
            )
        )
    modules = lora.normalized_modules(adapter) or set()
    if model is not None and modules & set(lora.MLP) and not model.config.get("intermediate_size"):
        out.append(
            Problem(
                repo_at,
                f"adapts the MLP, and the lock entry of {dep.model.repo} has no config.intermediate_size, which "
                "sizes its LoRA buffers",
                f"re-create the entry with `sgldeploy lock --refresh`, or add config.intermediate_size from "
                f"{dep.model.repo}'s config.json",
                adapter.repo,
            )
        )
    if model is not None and model.config.get("num_experts"):
        out.append(
            Problem(
                repo_at,
                f"is an adapter of a mixture of experts ({dep.model.repo}), whose expert LoRA buffers sgldeploy "
                "does not size yet",
                "serve adapters on a dense model, or merge this one into the weights",
                adapter.repo,
            )
        )
    return out


def _rank_problems(
    dep: DeploymentSpec, adapters: list[LockedAdapter], at: Callable[..., str]
) -> list[Problem]:
    limit = dep.serving.lora.max_lora_rank
    if limit == "auto":
        return []
    over = [a for a in adapters if a.rank > int(limit)]
    if not over:
        return []
    top = max(over, key=lambda a: a.rank)
    return [
        Problem(
            at("serving", "lora", "max_lora_rank"),
            f"is below the rank {top.rank} of {top.repo}: SGLang's LoRA buffers hold ranks up to it",
            f"raise it to {top.rank}, or set it to auto",
            limit,
        )
    ]


def _is_repo_id(name: str) -> bool:
    """A Hub repo id (`org/name`), not a local path the adapter was trained from."""
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "~"))


def load_of(dep: DeploymentSpec, adapters: list[LockedAdapter]) -> lora.LoraLoad | None:
    """What the adapters ask of every replica, or None without adapters."""
    if not adapters:
        return None
    rank = dep.serving.lora.max_lora_rank
    return lora.load(adapters, dep.serving.lora.max_loras_per_batch, None if rank == "auto" else int(rank))
