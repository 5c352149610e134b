"""`sgldeploy`: validate, plan and describe stacks offline (DESIGN.md, CLI contract).

Exit codes: 0 ok; 1 a mandatory policy is violated (`verify`: the SLO is missed); 2 invalid input (`verify`: or an
unreachable endpoint). Bad input is reported one line per problem on stderr, never as a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sgldeploy.models.lock import LockError
from sgldeploy.spec.problems import InvalidInput, Problem, Verbatim
from sgldeploy.spec.stackfile import StackFile, read_stack_file, stack_name, stack_path

if TYPE_CHECKING:  # for annotations only: each command imports what it uses when it runs
    from sgldeploy.offline.render import Plan

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
    lock.add_argument(
        "--from-cache",
        metavar="DIR",
        type=Path,
        help="resolve from this Hugging Face cache directory (HF_HUB_CACHE, or the HF_HOME above it), "
        "with no network",
    )
    lock.add_argument(
        "--refresh",
        action="store_true",
        help="resolve again the entries already pinned to a commit (kept by default)",
    )
    commands.add_parser("schema", help="print the spec's JSON Schema")
    _verify_args(commands.add_parser("verify", help="measure a live endpoint against the SLO and the plan"))
    return parser


def _verify_args(verify: argparse.ArgumentParser) -> None:
    _stack_args(verify)
    verify.add_argument(
        "--deployment", metavar="NAME", help="the deployment (needed when the stack has several)"
    )
    verify.add_argument("--url", required=True, help="the endpoint's base URL, e.g. https://llm.example.com")
    verify.add_argument(
        "--stable-url", metavar="URL", help="with a canary at --url: its stable commit, measured the same way"
    )
    verify.add_argument(
        "--api-key-env", metavar="VAR", help="the environment variable holding the endpoint's API key"
    )
    verify.add_argument("--concurrency", type=_positive, metavar="N", help="requests in flight")
    verify.add_argument("--requests", type=_positive, metavar="M", help="requests to send")
    verify.add_argument("--json", metavar="FILE", type=Path, help="write the measurement as JSON")
    verify.add_argument(
        "--markdown", metavar="FILE", type=Path, help="write the report as a markdown comment"
    )


def _positive(text: str) -> int:
    value = int(text) if text.isdigit() else 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number ≥ 1, got {text!r}")
    return value


def _stack_file(args: argparse.Namespace, root: Path) -> StackFile:
    if args.config:
        return read_stack_file(args.config)
    name = args.stack or DEFAULT_STACK
    path = stack_path(name, root)
    if not path.is_file():
        raise InvalidInput([_unknown_stack(name, path, root)])
    return read_stack_file(path)


def _unknown_stack(name: str, path: Path, root: Path) -> Problem:
    """A stack name without its file: the names that have one, so a typo is one look away."""
    known = sorted(stack_name(p) for p in (root / "stacks").glob("Pulumi.*.y*ml") if p.is_file())
    there = f"the stacks in {root / 'stacks'} are {', '.join(known)}" if known else "no stack files exist yet"
    return Problem(
        str(path),
        "stack file not found",
        f"{there}: pass one as --stack NAME, create stacks/Pulumi.{name}.yaml, or pass --config FILE",
        Verbatim(f"--stack {name!r}"),
    )


def _output_problem(path: Path, err: OSError) -> Problem:
    return Problem(
        str(path),
        f"cannot be written ({err.strerror or err.__class__.__name__})",
        "choose a path in a directory you can write to",
        show_got=False,
    )


def _prepare_outputs(args: argparse.Namespace) -> None:
    """Before the plan renders: each output's directory exists (or is created) and is writable, so a bad path
    is one line now, not a traceback after the plan (and never a half-written file)."""
    problems = []
    targets = [(args.json, False), (args.markdown, False), (getattr(args, "manifests", None), True)]
    for path, is_directory in (t for t in targets if t[0] is not None):
        directory = path if is_directory else path.parent
        try:  # the errors carry no file name: the problem line names the output itself
            if not is_directory and path.is_dir():
                raise IsADirectoryError(21, "is a directory")
            directory.mkdir(parents=True, exist_ok=True)
            if not os.access(directory, os.W_OK | os.X_OK):
                raise PermissionError(13, "Permission denied")
        except OSError as err:
            problems.append(_output_problem(path, err))
    if problems:
        raise InvalidInput(problems)


def _stack_token(stack: StackFile) -> str | None:
    """The stack's Hub token (lock_stack.stack_token), or one line when `pulumi config get` hangs or fails."""
    from sgldeploy.models import lock_stack

    try:
        return lock_stack.stack_token(stack)
    except (subprocess.TimeoutExpired, OSError) as err:  # a backend that does not answer, a broken CLI
        reason = f"timed out after {err.timeout:g} s" if isinstance(err, subprocess.TimeoutExpired) else err
        raise InvalidInput(
            [
                Problem(
                    "sgldeploy:hfToken",
                    f"cannot be read with `pulumi config get` ({reason})",
                    "check `pulumi login` and the stack's backend, or set HF_TOKEN for this command",
                    show_got=False,
                )
            ]
        ) from None


def _fail(lines: Sequence[str]) -> int:
    for line in lines:
        print(line if line.startswith("error:") else f"error: {line}", file=sys.stderr)
    return EXIT_INVALID


def main(argv: Sequence[str] | None = None, root: Path | None = None) -> int:
    args = build_parser().parse_args(argv)
    from sgldeploy.offline.render import PROJECT_ROOT

    root = root or (Path.cwd() if (Path.cwd() / "stacks").is_dir() else PROJECT_ROOT)
    try:
        if args.command == "schema":
            from sgldeploy.spec.json_schema import stack_file_schema

            print(json.dumps(stack_file_schema(), indent=2))
            return EXIT_OK
        stack = _stack_file(args, root)
        if args.command == "lock":
            return _lock(args, stack)
        if args.command == "validate":
            return _validate(stack)
        if args.command == "verify":
            return _verify(args, stack)
        return _plan(args, stack)
    except InvalidInput as invalid:
        return _fail([p.line() for p in invalid.problems])
    except LockError as err:
        return _fail([f"{err}"])


def _validate(stack: StackFile) -> int:
    from sgldeploy.cost import stack_usage
    from sgldeploy.offline.render import load_offline
    from sgldeploy.spec import USAGE_FILE_KEY

    loaded = load_offline(stack)
    stack_usage(stack.config.get(USAGE_FILE_KEY), stack.path.parent)  # read as `plan` reads it
    for warning in (*loaded.stand_in_secrets.values(), *loaded.warnings):  # the exit code stays 0
        print(warning.line(), file=sys.stderr)
    print(f"{stack.path}: valid")
    return EXIT_OK


def _verify(args: argparse.Namespace, stack: StackFile) -> int:
    from sgldeploy.offline.render import load_offline
    from sgldeploy.spec.region import REGION_KEY, stack_region
    from sgldeploy.verify import measure, plan_figures

    problems = _url_problems(args)
    key = os.environ.get(args.api_key_env) if args.api_key_env else None
    if args.api_key_env and not key:
        problems.append(
            Problem(
                "--api-key-env",
                "names a variable that is not set",
                "export it, or omit the flag",
                args.api_key_env,
            )
        )
    _prepare_outputs(args)
    loaded = load_offline(stack)
    dep, found = plan_figures.choose(loaded, args.deployment)
    if problems or found or dep is None:
        raise InvalidInput(problems + found)
    if dep.endpoint.auth == "api-key" and not key:
        problems.append(
            Problem(
                "--api-key-env",
                f"is needed: {dep.name} takes requests only with its API key",
                "pass the variable holding it, e.g. --api-key-env SGLDEPLOY_API_KEY",
                show_got=False,
            )
        )
        raise InvalidInput(problems)
    region = stack_region(stack.config.get(REGION_KEY))
    units = plan_figures.units_of(loaded, dep.name)
    v = plan_figures.verification(
        units, dep, loaded.spec.platform.addons, region, args.concurrency, args.requests
    )
    endpoint = measure.Endpoint(args.url.rstrip("/"), key, v.served_model, v.timeout_s)
    stable = (
        measure.Endpoint(args.stable_url.rstrip("/"), key, v.served_model, v.timeout_s)
        if args.stable_url
        else None
    )
    code, results, worse = measure.verify(
        endpoint, v.settings, v.plan, stable, dep.verify.canary_margin_percent
    )
    if results and args.json:
        measure.write_atomically(
            str(args.json), json.dumps({"results": dict(results), "canary_worse": worse}, indent=2)
        )
    if results and args.markdown:
        measure.write_atomically(str(args.markdown), measure.markdown(results, worse))
    return code


def _url_problems(args: argparse.Namespace) -> list[Problem]:
    from urllib.parse import urlsplit

    out = []
    for flag, url in (("--url", args.url), ("--stable-url", args.stable_url)):
        if url is None:
            continue
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path.strip("/"):
            out.append(
                Problem(
                    flag,
                    "must be an http(s) base URL without a path",
                    "pass e.g. https://llm.example.com",
                    url,
                )
            )
    return out


def _lock(args: argparse.Namespace, stack: StackFile) -> int:
    from sgldeploy.models import lock_stack

    if args.check and (args.from_cache or args.refresh):
        return _fail(
            [
                "--check: compares the lock with the Hub and writes nothing, so it takes neither "
                "--from-cache nor --refresh; drop them, or drop --check"
            ]
        )
    if args.from_cache is not None and not args.from_cache.is_dir():
        return _fail(
            [
                f"--from-cache: is not a directory (got {str(args.from_cache)!r}); pass the Hugging "
                "Face cache (HF_HUB_CACHE, e.g. ~/.cache/huggingface/hub)"
            ]
        )
    token = None if args.from_cache else _stack_token(stack)
    if args.check:
        report = lock_stack.check(stack, token=token)
        for line in report.drift:
            print(f"drift: {line}", file=sys.stderr)
        print(f"{stack.path}: {len(report.drift)} moved")
        return EXIT_POLICY if report.drift else EXIT_OK
    report = lock_stack.lock(stack, token=token, from_cache=args.from_cache, refresh=args.refresh)
    for line in report.written:
        print(line)
    for line in report.kept:
        print(f"kept {line}")
    for warning in report.warnings:
        print(warning.line(), file=sys.stderr)
    print(f"{'unchanged' if report.unchanged else 'wrote'} {stack.path.parent / 'models.lock.json'}")
    return _fail([p.line() for p in report.problems]) if report.problems else EXIT_OK


def _previous_plan(path: Path) -> dict[str, Any]:
    from sgldeploy.offline.diff import check_plan

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

    from sgldeploy.offline import diff as diffing
    from sgldeploy.offline.plan_json import plan_json
    from sgldeploy.offline.render import render
    from sgldeploy.offline.sdk_internals import close_leftover_event_loops
    from sgldeploy.policy import pack

    atexit.register(close_leftover_event_loops)  # a clean exit: nothing printed by interpreter shutdown
    previous = _previous_plan(args.compare) if args.compare else None
    _prepare_outputs(args)
    policy_settings = pack.read_settings(args.policy_config)
    try:
        plan = render(stack, usage_file=args.usage, policy_settings=policy_settings)
    except pulumi.RunError as err:
        return _fail(str(err).splitlines())
    document = plan_json(plan)
    if previous is not None:
        document["diff"] = diffing.diff(previous, document)
    _print_plan(plan, document)
    _write_outputs(args, plan, document)
    return EXIT_POLICY if plan.mandatory_violations else EXIT_OK


def _print_plan(plan: Plan, document: dict[str, Any]) -> None:
    """Warnings on stderr; the resource tree, the summary, the cost diff (with --compare) and the policy
    report on stdout."""
    from sgldeploy.offline import plan_text, report

    for warning in plan.loaded.stand_in_secrets.values():  # the program saw them set: the CLI says so
        print(warning.line(), file=sys.stderr)
    for warning in plan.warnings:  # e.g. --usage over the stack's sgldeploy:usageFile
        print(warning.line(), file=sys.stderr)
    for level, message in plan.recording.log:
        if level in ("warning", "error"):
            print(f"{level}: {message}", file=sys.stderr)
    print(plan_text.resource_tree(plan))
    print()
    print(plan_text.summary(plan))
    if "diff" in document:
        print()
        print(report.text(document["diff"]))
    print()
    print(plan_text.policy_report(plan))


def _write_outputs(args: argparse.Namespace, plan: Plan, document: dict[str, Any]) -> None:
    """The files asked for (--json, --manifests, --markdown), each named on stdout once written."""
    from sgldeploy.files import write_atomic
    from sgldeploy.offline import diff as diffing
    from sgldeploy.offline import report
    from sgldeploy.offline.manifests import write_manifests

    writing = args.json
    try:  # prepared before the plan rendered; what the file system still refuses is one line
        if args.json:
            write_atomic(args.json, json.dumps(document, indent=2) + "\n")
            print(f"\nplan JSON: {args.json}")
        if args.manifests:
            writing = args.manifests
            written = write_manifests(plan, args.manifests)
            print(f"manifests: {len(written)} files in {args.manifests}")
        if args.markdown:
            writing = args.markdown
            against = document.get("diff") or diffing.diff(diffing.EMPTY_PLAN, document)
            write_atomic(args.markdown, report.markdown(against, document, document["policy"]["violations"]))
            print(f"markdown: {args.markdown}")
    except OSError as err:
        raise InvalidInput([_output_problem(writing, err)]) from None


if __name__ == "__main__":
    sys.exit(main())
