"""Parse SGLang Model Gateway arguments with sglang-router's own parser (the launcher's, of the version the router
image pins), with abbreviations disallowed.

Runs in the SGLang virtualenv: `python router_parse.py '<json list of args>'`. Prints the parsed RouterArgs as
JSON and exits 0, or exits 2 with argparse's message on stderr.
"""

import argparse
import dataclasses
import json
import sys

from sglang_router.router_args import RouterArgs


def main() -> None:
    parser = argparse.ArgumentParser(prog="sgl-model-gateway", allow_abbrev=False)
    RouterArgs.add_cli_args(parser, use_router_prefix=False)
    args = RouterArgs.from_cli_args(parser.parse_args(json.loads(sys.argv[1])), use_router_prefix=False)
    args._validate_router_args()
    print(json.dumps(dataclasses.asdict(args), default=str))


if __name__ == "__main__":
    main()
