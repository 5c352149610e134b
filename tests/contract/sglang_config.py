"""Run SGLang's own start-up checks on generated launch commands, on a CPU, without weights or a tokenizer.

Runs in the SGLang virtualenv: `python sglang_config.py`, reading one JSON list of cases a line on stdin and
answering each with one line on stdout. A case is
`{"args": [...], "env": {...}, "config": <a lock entry's config>, "dtype": <the lock entry's dtype>}`, with two
optional keys: `quantization_config`, the checkpoint's whole `quantization_config` (config.json's own, where the
lock keeps only its `quant_method`), and `gpu_capability`, `[major, minor]` of the GPU the server runs on (see
below). The answer is a JSON list with one result per case, in order: `{"stage": ..., "error": ..., ...}`, `error`
null when every stage passed, `raised_in` the functions the error passed through (innermost last),
`quantization_verified` whether `ModelConfig._verify_quantization` returned for the server's flags (so a later
error is not the quantization's), and `derived_context_len`, the context length SGLang derives from the config
alone.

What runs, as `sglang.launch_server` runs it (sglang 0.5.23):

1. `server_args`: argparse (abbreviations disallowed, as sglang_parse.py), `ServerArgs.from_cli_args`, then
   `ServerArgs.resolve_once()`: the resolution pipeline (srt/arg_groups/pipeline.py), which builds the
   `ModelConfig` too (model_config_of) and so checks the context length, the quantization against the
   checkpoint's and the dtype; then `check_server_args()`, which the launcher runs after it (entrypoints/
   engine.py): nodes against the tensor size, LoRA's sizes against its adapters, and the rest of its checks.
2. `model_config`: `ModelConfig.from_server_args`, as the scheduler builds it: `_derive_context_length`
   (context length against the model's, unless SGLANG_ALLOW_OVERWRITE_LONGER_CONTEXT_LEN), `_verify_quantization`
   (`--quantization` against the checkpoint's `quantization_config.quant_method`), `_get_and_verify_dtype`.
3. `attention`: the architecture's attention module, built on the meta device with the tensor-parallel size of
   the command: its constructor asserts that tp divides the attention heads and that the KV heads divide tp
   or tp divides them (models/qwen2.py, models/llama.py: `assert self.total_num_heads % tp_size == 0` ...).

What is adjusted to run on a CPU, and why none of it touches the checks above:

- `--model-path` points at a temporary directory holding the lock entry's config as config.json (model_type
  from transformers' own architecture table, `quantization_config` the case's, else `quant_method` alone from
  `quantization_method`).
- `--device cpu` is appended: without it `handle_missing_default_values` calls `get_device()`, which raises
  "No accelerator" on a machine without a GPU. The device-specific handlers (attention backend, CUDA graphs,
  GPU memory) then take their CPU branch: they are not checked here.
- torchvision is not importable with a CPU torch from PyPI (its CUDA build's ops need libtorch_cuda), and
  SGLang imports it, at import time only, for image preprocessing constants (srt/multimodal/internvl_utils.py):
  a stub module stands in, after transformers has recorded torchvision as absent.
- The attention module's rotary embedding picks a CUDA (or sgl-kernel CPU) kernel, absent here: the module's
  `get_rope` (`get_rope_wrapper` in DeepSeek's) returns None. It runs after the head checks and checks nothing about them.
- The process group is not built: the attention module is built in a scheduler's context of the resolved
  arguments (`create_context(server_args, role="scheduler")`), with `get_parallel().override` stating this rank's
  place (rank 0 of the tensor-parallel group and of its attention group), which is all its constructor reads.
- SGLANG_IS_IN_CI is cleared: `_derive_context_length` lets a longer context pass in CI too.
- With `gpu_capability`, the reads of the device that `_verify_quantization` makes through the methods'
  `override_quantization_method` (which checkpoints convert to Marlin kernels or to moe_wna16) answer as on a CUDA
  GPU of that capability: `get_device_capability` in layers/quantization/marlin_utils.py and moe_wna16.py, and
  awq.py's `_is_cuda`; and the method registry holds `mxfp4`, which layers/quantization/__init__.py registers on
  CUDA. The rest of the registry is CUDA's already: this machine is neither CUDA nor SGLang's CPU platform, so,
  as on CUDA, it registers no plain `gptq`. Without `gpu_capability` those checks see no GPU: no checkpoint
  converts to Marlin.

What does not run here (it needs a GPU, the weights or the process group): the quantization method's minimum
compute capability and activation dtypes (model_loader/loader.py `_get_quantization_config`, against the GPU's
own capability), the GPU branches of the resolution (attention backend and CUDA-graph choices, the memory pool
from the GPU's free memory), the rest of the model (embeddings, MLP, MoE), weight loading, and NCCL across nodes.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.abc
import importlib.machinery
import inspect
import json
import os
import sys
import tempfile
import traceback
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

OVERRIDE_ENV = "SGLANG_ALLOW_OVERWRITE_LONGER_CONTEXT_LEN"
# srt/environ.py: is_in_ci() lets a longer context pass too; the pod does not set it, nor may the test's env.
CLEARED_ENV = (OVERRIDE_ENV, "SGLANG_IS_IN_CI")


class _StubModule(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return type(name, (), {})


class _TorchvisionStub(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname == "torchvision" or fullname.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec: Any) -> types.ModuleType:
        module = _StubModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        pass


def _import_sglang() -> None:
    from transformers.utils import import_utils

    if not import_utils.is_torchvision_available():  # cached: transformers keeps seeing it as absent
        sys.meta_path.insert(0, _TorchvisionStub())


def config_json(
    config: dict[str, Any], dtype: str, quantization_config: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A config.json for the lock entry's config: the fields it recorded, as the Hub's file names them, and the
    checkpoint's own quantization_config where the case gives it."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES,
    )

    architecture = config["architectures"][0]
    names = {**MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES, **MODEL_FOR_CAUSAL_LM_MAPPING_NAMES}
    model_type = next(t for t, cls in names.items() if cls == architecture)
    out = {
        k: v for k, v in config.items() if v is not None and k not in ("quantization_method", "num_experts")
    }
    out.update(model_type=model_type, torch_dtype=dtype)
    if quantization_config is not None:
        out["quantization_config"] = quantization_config
    elif config.get("quantization_method"):
        out["quantization_config"] = {"quant_method": config["quantization_method"]}
    return out


@contextlib.contextmanager
def _gpu_of_capability(capability: list[int] | None) -> Iterator[None]:
    """The device reads of the quantization overrides answer as on a CUDA GPU of this capability (docstring)."""
    if capability is None:
        yield
        return
    from sglang.srt.layers.quantization import QUANTIZATION_METHODS, marlin_utils, moe_wna16
    from sglang.srt.layers.quantization.awq import awq
    from sglang.srt.layers.quantization.mxfp4 import Mxfp4Config

    device = (int(capability[0]), int(capability[1]))
    saved = (marlin_utils.get_device_capability, moe_wna16.get_device_capability, awq._is_cuda)
    registered = "mxfp4" in QUANTIZATION_METHODS
    marlin_utils.get_device_capability = moe_wna16.get_device_capability = lambda *_: device
    awq._is_cuda = True
    QUANTIZATION_METHODS.setdefault("mxfp4", Mxfp4Config)
    try:
        yield
    finally:
        marlin_utils.get_device_capability, moe_wna16.get_device_capability, awq._is_cuda = saved
        if not registered:
            del QUANTIZATION_METHODS["mxfp4"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # the message in the result, not on stderr
        raise ValueError(f"{self.prog}: {message}")


def _with_model_dir(args: list[str], model_dir: str) -> list[str]:
    out = list(args)
    out[out.index("--model-path") + 1] = model_dir
    return [*out, "--device", "cpu"]


def _attention(model_config: Any, server_args: Any) -> dict[str, int | None]:
    """Build the architecture's attention module at this tp size, as its decoder layer does: over the
    tp / attn_dp_size GPUs of one attention group (all tp without data-parallel attention). An MLA module
    (DeepSeek's) takes the latent's sizes instead of KV heads, and holds no KV heads to count."""
    import torch
    from sglang.srt.model_loader.utils import get_model_architecture
    from sglang.srt.runtime_context import create_context, get_parallel, use_context
    from torch import nn

    model_class, _ = get_model_architecture(model_config)
    module = sys.modules[model_class.__module__]
    attention = next(
        obj
        for name, obj in vars(module).items()
        if isinstance(obj, type)
        and issubclass(obj, nn.Module)
        and (name.endswith("Attention") or name.endswith("AttentionMLA"))
        and obj.__module__ == module.__name__
        and "num_heads" in inspect.signature(obj).parameters
        and ({"num_kv_heads", "kv_lora_rank"} & set(inspect.signature(obj).parameters))
    )
    text = model_config.hf_text_config
    offered = {
        "config": text,
        "hidden_size": text.hidden_size,
        "num_heads": text.num_attention_heads,
        "num_kv_heads": getattr(text, "num_key_value_heads", None) or text.num_attention_heads,
        "head_dim": getattr(text, "head_dim", None),
        "layer_id": 0,
        "max_position_embeddings": text.max_position_embeddings,
        "quant_config": None,
        **{
            name: getattr(text, name, None)
            for name in ("qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "q_lora_rank", "kv_lora_rank")
        },
    }
    wanted = inspect.signature(attention).parameters
    for name in ("get_rope", "get_rope_wrapper"):  # the rotary kernel: see the module docstring
        if hasattr(module, name):
            setattr(module, name, lambda *a, **k: None)
    # The scheduler's view of the resolved arguments (its config bags), and this rank's place: rank 0 of the
    # tensor-parallel group and of its attention group. The process groups themselves are not built.
    ranks = {"tp_rank": 0, "attn_tp_rank": 0, "attn_dp_rank": 0, "attn_cp_rank": 0, "moe_ep_rank": 0}
    ranks = {k: v for k, v in ranks.items() if k in _parallel_field_names()}
    with (
        use_context(create_context(server_args, role="scheduler")),
        torch.device("meta"),
        get_parallel().override(**ranks),
    ):
        built = attention(**{k: v for k, v in offered.items() if k in wanted})
    heads = getattr(built, "num_local_heads", None) or built.num_heads
    return {"attention_heads_per_rank": heads, "kv_heads_per_rank": getattr(built, "num_kv_heads", None)}


def _parallel_field_names() -> frozenset[str]:
    from sglang.srt.runtime_context import _parallel_fields

    return _parallel_fields()


@contextlib.contextmanager
def _quantization_checks() -> Iterator[list[str | None]]:
    """The quantization each `_verify_quantization` call settled on, for every call that returned."""
    from sglang.srt.configs.model_config import ModelConfig

    settled: list[str | None] = []
    verify = ModelConfig._verify_quantization

    def recording(self: Any) -> None:
        verify(self)
        settled.append(self.quantization)

    ModelConfig._verify_quantization = recording
    try:
        yield settled
    finally:
        ModelConfig._verify_quantization = verify


def _error(exc: BaseException) -> str:
    """The message, or for a bare assert the source line that failed."""
    if str(exc):
        return f"{type(exc).__name__}: {exc}"
    frame = traceback.extract_tb(exc.__traceback__)[-1]
    return f"{type(exc).__name__}: {frame.filename.split('site-packages/')[-1]}:{frame.lineno}: {frame.line}"


def run_case(case: dict[str, Any]) -> dict[str, Any]:
    from sglang.srt.configs.model_config import ModelConfig
    from sglang.srt.server_args import ServerArgs
    from sglang.srt.utils.hf_transformers.common import get_context_length

    saved = dict(os.environ)  # the pipeline sets variables too: each case starts from the same environment
    for name in CLEARED_ENV:
        os.environ.pop(name, None)
    os.environ.update(case.get("env") or {})
    result: dict[str, Any] = {"stage": "config", "error": None}
    with _gpu_of_capability(case.get("gpu_capability")):
        try:
            model_dir = tempfile.mkdtemp(prefix="sgldeploy-config-")
            config = config_json(case["config"], case["dtype"], case.get("quantization_config"))
            (Path(model_dir) / "config.json").write_text(json.dumps(config))
            # What _derive_context_length compares --context-length with, from the config alone.
            derived = ModelConfig(model_dir, dtype=case["dtype"])
            result["derived_context_len"] = get_context_length(derived.hf_text_config)
            result["stage"] = "server_args"
            parser = _Parser(prog="sglang serve", allow_abbrev=False)
            ServerArgs.add_cli_args(parser)
            server_args = ServerArgs.from_cli_args(
                parser.parse_args(_with_model_dir(case["args"], model_dir))
            )
            with _quantization_checks() as settled:
                try:
                    server_args.resolve_once()
                    server_args.check_server_args()  # the launcher's checks after resolution (engine.py)
                    result["stage"] = "model_config"
                    model_config = ModelConfig.from_server_args(server_args)
                finally:
                    result["quantization_verified"] = bool(settled)
            result.update(
                context_len=model_config.context_len,
                quantization=model_config.quantization,
                dtype=str(model_config.dtype).removeprefix("torch."),
                tp_size=server_args.tp_size,
                attn_dp_size=server_args.attn_dp_size,
                ep_size=server_args.ep_size,
                moe_a2a_backend=server_args.moe_a2a_backend,
            )
            result["stage"] = "attention"
            result.update(_attention(model_config, server_args))
            result["stage"] = "done"
        except Exception as exc:  # the checks raise ValueError or assert
            result["error"] = _error(exc)
            result["raised_in"] = [frame.name for frame in traceback.extract_tb(exc.__traceback__)]
        finally:
            os.environ.clear()
            os.environ.update(saved)
    return result


def main() -> None:
    # SGLang's and transformers' logs go to stderr, the results alone to stdout.
    out, sys.stdout = sys.stdout, sys.stderr
    _import_sglang()
    for line in sys.stdin:  # one JSON list of cases a line, answered by one line: SGLang is imported once
        print(json.dumps([run_case(case) for case in json.loads(line)]), file=out, flush=True)


if __name__ == "__main__":
    main()
