"""The elements of SGLang 0.5.23's LoRA buffers on one GPU, from its own shape code, on a CPU.

Runs in the SGLang virtualenv: `python sglang_lora_buffers.py '<json case>'`, a case being `{"config": <a lock
entry's config>, "dtype": ..., "modules": [normalized names], "rank": r, "slots": n, "tp": t, "attn_tp": a}`.
Prints `{"elements": N}`: the sum over every buffer `LoRAMemoryPool.init_buffers` allocates (one per layer for
each projection, one for embed_tokens and lm_head) of its shape's product.

`LoRAMemoryPool`'s own `get_lora_A_shape`, `get_lora_B_shape`, `get_embedding_lora_A_shape` and
`get_embedding_lora_B_shape` compute the shapes (srt/lora/mem_pool.py); what its constructor would read from a
built model is given instead: the transformers config of the lock entry, the parallel widths, no per-layer
partition sizes (a dense Llama- or Qwen-style model shards evenly, which is the fallback the methods take), and
for lm_head over several GPUs the per-rank vocabulary of SGLang's ParallelLMHead (the vocabulary padded to
DEFAULT_VOCAB_PADDING_SIZE, split evenly: layers/vocab_parallel_embedding.py).
"""

import json
import math
import sys
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from sglang_config import _import_sglang, config_json


def main() -> None:
    case = json.loads(sys.argv[1])
    out, sys.stdout = sys.stdout, sys.stderr
    _import_sglang()
    from sglang.srt.layers.vocab_parallel_embedding import DEFAULT_VOCAB_PADDING_SIZE, pad_vocab_size
    from sglang.srt.lora.mem_pool import LoRAMemoryPool
    from transformers import AutoConfig

    settings = config_json(case["config"], case["dtype"])
    config = AutoConfig.for_model(**settings)
    pool = LoRAMemoryPool.__new__(LoRAMemoryPool)
    tp, attn_tp = case["tp"], case["attn_tp"]
    pool.base_hf_config = config
    pool.tp_size, pool.attn_tp_size, pool.moe_tp_size = tp, attn_tp, tp
    pool.max_loras_per_batch = case["slots"]
    pool.lora_added_tokens_size = 0
    pool.experts_shared_outer_loras = False
    pool._dense_linears = {}  # no built layers: the even split
    padded = pad_vocab_size(config.vocab_size, DEFAULT_VOCAB_PADDING_SIZE)
    pool.lm_head_shard_indices = types.SimpleNamespace(num_org_elements=padded // tp) if tp > 1 else None
    model = types.SimpleNamespace(config=config)
    rank, elements = case["rank"], 0
    for module in case["modules"]:
        if module in ("embed_tokens", "lm_head"):
            shapes = [pool.get_embedding_lora_A_shape(module, model, rank, 0)]
            shapes.append(pool.get_embedding_lora_B_shape(module, model, rank, 0))
        else:
            shapes = [
                shape(module, model, rank, layer)
                for layer in range(config.num_hidden_layers)
                for shape in (pool.get_lora_A_shape, pool.get_lora_B_shape)
            ]
        elements += sum(math.prod(s) for s in shapes)
    print(json.dumps({"elements": elements}), file=out)


if __name__ == "__main__":
    main()
