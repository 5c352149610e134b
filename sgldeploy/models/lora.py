"""The GPU memory SGLang 0.5.23's LoRA serving takes, from the adapters' locked adapter_config.json facts.

SGLang allocates one A and one B buffer per layer for every module any adapter targets, for
`max_loras_per_batch` adapters at `max_lora_rank`, in the model's dtype, before it sizes the KV pool
(srt/lora/mem_pool.py `LoRAMemoryPool.init_buffers`): A is [slots, rank × stacked, input], B [slots, output,
rank], q/k/v stacked into qkv_proj and gate/up into gate_up_proj (srt/lora/utils.py
`get_normalized_target_modules`, `get_stacked_multiply`), each split over the tensor-parallel GPUs as its base
layer is (column-parallel layers by output, row-parallel ones by input). Pure: sizing adds it to every GPU's fit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from sgldeploy.models.lock import LockedAdapter, LockedModel

# PEFT's module names as SGLang normalizes them (utils.py params_mapping); "all-linear" targets every linear
# layer of the decoder, which for the dense architectures sgldeploy sizes are these four.
NORMALIZED = {
    "q_proj": "qkv_proj",
    "k_proj": "qkv_proj",
    "v_proj": "qkv_proj",
    "qkv_proj": "qkv_proj",
    "o_proj": "o_proj",
    "gate_proj": "gate_up_proj",
    "up_proj": "gate_up_proj",
    "gate_up_proj": "gate_up_proj",
    "down_proj": "down_proj",
    "embed_tokens": "embed_tokens",
    "lm_head": "lm_head",
}
ALL_LINEAR = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")
MLP = ("gate_up_proj", "down_proj")
VOCAB_PADDING = 64  # layers/vocab_parallel_embedding.py DEFAULT_VOCAB_PADDING_SIZE


@dataclass(frozen=True)
class LoraLoad:
    """What the adapters of a deployment ask of every replica."""

    rank: int  # --max-lora-rank
    modules: frozenset[str]  # normalized target modules of all adapters together
    slots: int  # --max-loras-per-batch
    adapters: tuple[LockedAdapter, ...] = ()  # as locked, in the order of model.adapters

    @property
    def target_modules(self) -> list[str]:
        """`--lora-target-modules`: the adapters' own module names together (`all` for an all-linear one)."""
        names = {m for a in self.adapters for m in a.target_modules}
        return ["all"] if names & {"all", "all-linear"} else sorted(names)


def normalized_modules(adapter: LockedAdapter) -> set[str] | None:
    """SGLang's names for the modules an adapter targets, or None when one is not a module it serves."""
    names = adapter.target_modules
    if names in (("all-linear",), ("all",)):
        return set(ALL_LINEAR)
    out = {NORMALIZED.get(name.split(".")[-1]) for name in names}
    return None if None in out else {m for m in out if m}


def load(adapters: Iterable[LockedAdapter], slots: int, rank: int | None) -> LoraLoad:
    """The union of the adapters' modules, at `rank` (the adapters' largest when None)."""
    listed = list(adapters)
    modules = set().union(*(normalized_modules(a) or set() for a in listed))
    return LoraLoad(
        rank=rank or max(a.rank for a in listed),
        modules=frozenset(modules),
        slots=slots,
        adapters=tuple(listed),
    )


def buffer_bytes_per_gpu(
    model: LockedModel, lora: LoraLoad, tp: int, element_bytes: int, attention_tp: int | None = None
) -> int:
    """The A and B buffers one GPU of a tp-way replica allocates (mem_pool.py's shapes, per module); attention's
    projections shard over the GPUs of an attention group (`attention_tp`, tp without data-parallel attention)."""
    c, r, at = model.config, lora.rank, attention_tp or tp
    hidden = int(c.get("hidden_size") or model.num_attention_heads * model.head_dim)
    heads, kv_heads, head_dim = model.num_attention_heads, model.num_kv_heads, model.head_dim
    inter = int(
        c.get("intermediate_size") or 0
    )  # adapters of the MLP are refused without it (models/adapters.py)
    vocab = int(c.get("vocab_size") or 0)
    # A KV head is copied onto each GPU of its share when the GPUs outnumber the KV heads (QKVParallelLinear).
    if kv_heads < at:
        qkv_out = heads * head_dim // at + 2 * head_dim
    else:
        qkv_out = (heads + 2 * kv_heads) * head_dim // at
    # lm_head's B follows ParallelLMHead's split: the vocabulary padded to a multiple of 64, then divided.
    vocab_per_gpu = math.ceil(vocab / VOCAB_PADDING) * VOCAB_PADDING // tp if tp > 1 else vocab
    per_layer = {
        "qkv_proj": 3 * r * hidden + r * qkv_out,
        "o_proj": r * heads * head_dim // at + hidden * r,
        "gate_up_proj": 2 * r * hidden + 2 * inter * r // tp,
        "down_proj": r * inter // tp + hidden * r,
    }
    once = {"embed_tokens": r * vocab + hidden * r, "lm_head": r * hidden + r * vocab_per_gpu}
    elements = model.num_layers * sum(per_layer[m] for m in lora.modules if m in per_layer) + sum(
        once[m] for m in lora.modules if m in once
    )
    return element_bytes * lora.slots * elements
