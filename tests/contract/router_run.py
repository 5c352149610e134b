"""Run the SGLang Model Gateway (the Rust router inside the sglang-router wheel) with the given arguments, as
the router image runs it. Runs in the SGLang virtualenv: `python router_run.py ARG...`."""

import argparse
import sys

from sglang_router.router import Router
from sglang_router.router_args import RouterArgs


def main() -> None:
    parser = argparse.ArgumentParser(prog="sgl-model-gateway", allow_abbrev=False)
    RouterArgs.add_cli_args(parser, use_router_prefix=False)
    args = RouterArgs.from_cli_args(parser.parse_args(sys.argv[1:]), use_router_prefix=False)
    args._validate_router_args()
    Router.from_args(args).start()


if __name__ == "__main__":
    main()
