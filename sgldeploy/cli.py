"""`sgldeploy`: validate, plan and describe stacks offline (DESIGN.md, CLI contract).

Exit codes: 0 ok; 1 a mandatory policy is violated; 2 invalid input. Bad input is reported one line per
problem on stderr, never as a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .lock import LockError
from .problems import InvalidInput, Problem
from .stackfile import StackFile, read_stack_file, stack_path

EXIT_OK, EXIT_POLICY, EXIT_INVALID = 0, 1, 2
DEFAULT_STACK = "dev"


def _stack_args(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--stack", metavar="NAME", help=f"read stacks/Pulumi.NAME.yaml (default {DEFAULT_STACK})"
    )
    where.add_argument("--config", metavar="FILE", type=Path, help="read this stack file")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sgldeploy",
        description="Serve Hugging Face models with SGLang on AWS EKS: validate and plan stacks offline.",
        allow_abbrev=False,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    validate = commands.add_parser("validate", help="check a stack file; exit 2 when invalid")
    _stack_args(validate)
    plan = commands.add_parser("plan", help="render a stack offline with the real program")
    _stack_args(plan)
    plan.add_argument("--json", metavar="FILE", type=Path, help="write the plan JSON here")
    plan.add_argument(
        "--manifests", metavar="DIR", type=Path, help="write one YAML file per Kubernetes object"
    )
    plan.add_argument(
        "--compare",
        metavar="PREVIOUS_PLAN_JSON",
        type=Path,
        help="diff cost and resources against a plan JSON written earlier (e.g. from the base branch)",
    )
    plan.add_argument(
        "--markdown",
        metavar="FILE",
        type=Path,
        help="write the cost estimate (and diff, with --compare) as a pull-request comment",
    )
    plan.add_argument(
        "--policy-config",
        metavar="FILE",
        type=Path,
        help="policy pack config, in the format of `pulumi preview --policy-pack-config`",
    )
    plan.add_argument(
        "--usage",
        metavar="FILE",
        type=Path,
        help="YAML of usage assumptions for usage-based cost lines (see README)",
    )
    lock = commands.add_parser("lock", help="resolve every model on the Hub and write models.lock.json")
    _stack_args(lock)
    lock.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 when a locked branch or tag has moved"
    )
    commands.add_parser("schema", help="print the spec's JSON Schema")
    return parser


def _stack_file(args: argparse.Namespace, root: Path) -> StackFile:
    path = args.config if args.config else stack_path(args.stack or DEFAULT_STACK, root)
    return read_stack_file(path)


def _fail(lines: Sequence[str]) -> int:
    for line in lines:
        print(line if line.startswith("error:") else f"error: {line}", file=sys.stderr)
    return EXIT_INVALID


def main(argv: Sequence[str] | None = None, root: Path | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .plan import PROJECT_ROOT

    root = root or (Path.cwd() if (Path.cwd() / "stacks").is_dir() else PROJECT_ROOT)
    try:
        if args.command == "schema":
            from .schema import stack_file_schema

            print(json.dumps(stack_file_schema(), indent=2))
            return EXIT_OK
        stack = _stack_file(args, root)
        if args.command == "lock":
            return _lock(args, stack)
        if args.command == "validate":
            from .lock import lock_path_for
            from .stack import resolve, secrets_of

            secrets, plaintext = secrets_of(stack)
            resolved = resolve(
                stack.object("sgldeploy:platform"),
                stack.object("sgldeploy:deployments"),
                lock_path_for(stack.path),
                secrets,
                plaintext_secrets=plaintext,
            )
            for warning in resolved.warnings:  # valid all the same: the exit code stays 0
                print(warning.line(), file=sys.stderr)
            print(f"{stack.path}: valid")
            return EXIT_OK
        return _plan(args, stack)
    except InvalidInput as invalid:
        return _fail([p.line() for p in invalid.problems])
    except LockError as err:
        return _fail([f"{err}"])


def _lock(args: argparse.Namespace, stack: StackFile) -> int:
    from . import lock_stack

    token = lock_stack.stack_token(stack)
    if args.check:
        report = lock_stack.check(stack, token=token)
        for line in report.drift:
            print(f"drift: {line}", file=sys.stderr)
        print(f"{stack.path}: {len(report.drift)} moved")
        return EXIT_POLICY if report.drift else EXIT_OK
    report = lock_stack.lock(stack, token=token)
    for line in report.written:
        print(line)
    print(f"{'unchanged' if report.unchanged else 'wrote'} {stack.path.parent / 'models.lock.json'}")
    return EXIT_OK


def _previous_plan(path: Path) -> dict[str, Any]:
    from .diff import check_plan

    try:
        return check_plan(json.loads(path.read_text()), str(path))
    except (OSError, ValueError) as err:
        raise InvalidInput(
            [
                Problem(
                    str(path),
                    f"cannot be read as JSON ({err.__class__.__name__})",
                    "write it with `sgldeploy plan --json FILE`",
                    show_got=False,
                )
            ]
        ) from None


def _plan(args: argparse.Namespace, stack: StackFile) -> int:
    import atexit

    import pulumi

    from .engine import close_leftover_event_loops

    atexit.register(close_leftover_event_loops)  # a clean exit: nothing printed by interpreter shutdown
    from . import diff as diffing
    from . import plan as planning
    from . import report
    from .files import write_atomic
    from .policy import pack

    previous = _previous_plan(args.compare) if args.compare else None
    policy_settings = pack.read_settings(args.policy_config)
    try:
        plan = planning.render(stack, usage_file=args.usage, policy_settings=policy_settings)
    except pulumi.RunError as err:
        return _fail(str(err).splitlines())
    for level, message in plan.recording.log:
        if level in ("warning", "error"):
            print(f"{level}: {message}", file=sys.stderr)
    print(planning.resource_tree(plan))
    print()
    print(planning.summary(plan))
    document = planning.plan_json(plan)
    if previous is not None:
        document["diff"] = diffing.diff(previous, document)
        print()
        print(report.text(document["diff"]))
    print()
    print(planning.policy_report(plan))
    if args.json:
        write_atomic(args.json, json.dumps(document, indent=2) + "\n")
        print(f"\nplan JSON: {args.json}")
    if args.manifests:
        written = planning.write_manifests(plan, args.manifests)
        print(f"manifests: {len(written)} files in {args.manifests}")
    if args.markdown:
        against = document.get("diff") or diffing.diff(diffing.EMPTY_PLAN, document)
        write_atomic(args.markdown, report.markdown(against, document, document["policy"]["violations"]))
        print(f"markdown: {args.markdown}")
    return EXIT_POLICY if plan.mandatory_violations else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
