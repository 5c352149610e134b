"""Parse an SGLang argv with SGLang's own parser, as `sglang serve` does, but with abbreviations disallowed.

Runs in the SGLang virtualenv (CPU torch): `python sglang_parse.py '<json list of args>'`. Prints the parsed
ServerArgs fields as JSON and exits 0, or exits 2 with argparse's message on stderr.
"""

import argparse
import json
import sys

from sglang.srt.server_args import ServerArgs

FIELDS = (
    "model_path",
    "revision",
    "served_model_name",
    "host",
    "port",
    "tp_size",
    "dtype",
    "quantization",
    "kv_cache_dtype",
    "context_length",
    "max_running_requests",
    "mem_fraction_static",
    "enable_metrics",
    "api_key",
    "trust_remote_code",
    "speculative_algorithm",
    "speculative_draft_model_path",
    "speculative_draft_model_revision",
    "enable_torch_compile",
    "load_format",
    "model_loader_extra_config",
    "enable_hierarchical_cache",
    "hicache_ratio",
    "hicache_size",
    "hicache_storage_backend",
    "attn_dp_size",
    "dp_size",
    "ep_size",
    "moe_a2a_backend",
    "enable_dp_lm_head",
    "nnodes",
    "node_rank",
    "dist_init_addr",
    "bucket_time_to_first_token",
    "bucket_inter_token_latency",
)


def main() -> None:
    argv = json.loads(sys.argv[1])
    # prepare_server_args builds this parser with argparse's default allow_abbrev=True; a generator must
    # not lean on prefixes, so the check is stricter than the server.
    parser = argparse.ArgumentParser(prog="sglang serve", allow_abbrev=False)
    ServerArgs.add_cli_args(parser)
    namespace = parser.parse_args(argv)
    server_args = ServerArgs.from_cli_args(namespace)
    print(json.dumps({name: getattr(server_args, name, None) for name in FIELDS}))


if __name__ == "__main__":
    main()
