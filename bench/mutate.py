"""Mutation testing with mutmut over the core (sgldeploy/) and the prefetch tool, then the score per module.

    .venv/bin/python bench/mutate.py [--paths sgldeploy/builders/rollout.py ...] [--tests tests/test_x.py ...]
                                     [--max-children N] [--sample N [--seed S] | --functions NAME ...]

The modules fall into two groups, and each group runs mutmut in a folder of its own (.mutate/<group>/, which
holds the group's pyproject.toml and links to the rest of the checkout; mutmut copies it all into
.mutate/<group>/mutants/):
- core: sgldeploy/, against the whole test suite less the test of `make plan`, which builds a virtualenv
  without mutmut;
- prefetch: sglang_image/prefetch.py, against tests/test_prefetch.py, less the tests that run the tool's file
  under an interpreter that has no mutmut (the image's, behind an import filter): a mutated file imports
  mutmut, so there they could only fail. They run the tool in a subprocess, where no mutant is active
  anyway. The two groups cannot share one mutants/ folder: a mutated prefetch.py changes the bytes the
  rendered ConfigMap carries, which the core's snapshot tests compare.
Both take [tool.mutmut] in pyproject.toml as their base and override what the group selects. --paths
restricts the mutated modules (files or folders); --tests restricts the tests mutmut collects coverage with
(default: the group's). mutmut keeps its results in the group folder and re-tests only functions that
changed, so a second run is quick.

`--sample N` runs N mutants drawn at random (with `--seed`) from every mutant of the selected modules, and
scores only those: an unbiased estimate of the whole run's score, printed with its 95% interval (Wilson),
for a run of all 17,000 mutants takes hours on two cores. A sample that guided new tests is no longer an
unbiased estimate of the score after them: draw another with a new seed. `--functions role_path
'Estimate.*' ...` runs only the mutants of the functions a change touched (fnmatch patterns; a method is
`Class.method`), and scores those.

The score of a module is killed / (killed + survived + timeout + suspicious + segfault + no tests): a mutant
no test reaches counts against the score, as one that survives does; one that made the tests time out or
crash is listed but not counted as killed. Mutants excluded with `# pragma: no mutate` are not generated
and count nowhere; mutants not yet checked (an interrupted run) are listed and left out.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tomllib
from collections import Counter
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".mutate"
# Build outputs and tool caches that the tests neither read nor need copied into mutants/.
NOT_LINKED = {
    ".git",
    ".mutate",
    "mutants",
    "pyproject.toml",
    ".venv",
    ".venv-sglang",
    ".venv-checkov",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    ".hypothesis",
    "build",
    "out",
    "sgldeploy.egg-info",
    "__pycache__",
}
PREFETCH = "sglang_image/prefetch.py"
# They run the tool's file under the image's interpreter, behind an import filter that admits the standard
# library and huggingface_hub only: a mutated file, which imports mutmut, can only fail there.
PREFETCH_FOREIGN_INTERPRETER_TESTS = (
    "tests/test_prefetch.py::test_the_mounted_tool_runs_on_the_image_python_under_each_hub_version",
    "tests/test_prefetch.py::test_a_corrupt_safetensors_header_is_refused_without_the_safetensors_package",
)
# It runs `make plan`, which builds a virtualenv of its own in the copy mutmut tests in: one without mutmut,
# which every mutated module imports. The same plan is rendered in-process by the rest of the suite.
CORE_OWN_VIRTUALENV_TESTS = ("tests/test_cli.py::test_make_plan_renders_the_default_stack",)
# mutmut's exit-code statuses (mutmut.stats.status_by_exit_code) as this report counts them.
DETECTED = {"killed"}
UNDETECTED = {"survived", "timeout", "suspicious", "segfault", "no tests"}
UNCOUNTED = {"skipped", "not checked", "caught by type check", "check was interrupted by user"}


@dataclass(frozen=True)
class Group:
    name: str
    source_paths: list[str]  # what mutmut copies (and may mutate) into mutants/
    only_mutate: list[str]  # globs of the files mutated
    tests: list[str]  # pytest arguments that select the tests


def groups(paths: list[str], tests: list[str] | None) -> list[Group]:
    """The groups the requested paths fall into, each with the globs of its files to mutate."""
    core: list[str] = []
    prefetch: list[str] = []
    for raw in paths:
        path = raw.rstrip("/")
        if not (ROOT / path).exists():
            raise SystemExit(f"mutate: no such path: {path}")
        if path == PREFETCH:
            prefetch.append(path)
        elif path == "sgldeploy" or path.startswith("sgldeploy/"):
            core.append(path if path.endswith(".py") else f"{path}/*")
        else:
            raise SystemExit(f"mutate: {path} is neither in sgldeploy/ nor {PREFETCH}")
    found = []
    if core:
        deselect = [arg for test in CORE_OWN_VIRTUALENV_TESTS for arg in ("--deselect", test)]
        found.append(Group("core", ["sgldeploy"], core, tests or ["tests", *deselect]))
    if prefetch:
        deselect = [arg for test in PREFETCH_FOREIGN_INTERPRETER_TESTS for arg in ("--deselect", test)]
        found.append(
            Group("prefetch", ["sglang_image"], prefetch, tests or ["tests/test_prefetch.py", *deselect])
        )
    return found


def toml_value(value: object) -> str:
    # The values here are strings, numbers, booleans and lists of strings, which JSON writes as TOML reads them.
    return json.dumps(value)


def group_pyproject(group: Group) -> str:
    """The checkout's pyproject.toml with its [tool.mutmut] replaced by the group's."""
    text = (ROOT / "pyproject.toml").read_text()
    base = tomllib.loads(text)["tool"]["mutmut"]
    config = {
        **base,
        "source_paths": group.source_paths,
        "only_mutate": group.only_mutate,
        "pytest_add_cli_args_test_selection": group.tests,
        "also_copy": sorted(linked_entries() - {p.split("/")[0] for p in group.source_paths} - {"tests"}),
    }
    kept, skipping = [], False
    for line in text.splitlines():
        if line.startswith("["):
            skipping = line.strip() == "[tool.mutmut]"
        if not skipping:
            kept.append(line)
    body = "\n".join(f"{key} = {toml_value(value)}" for key, value in config.items())
    return "\n".join(kept).rstrip() + f"\n\n[tool.mutmut]\n{body}\n"


def linked_entries() -> set[str]:
    return {entry.name for entry in ROOT.iterdir() if entry.name not in NOT_LINKED}


def prepare(group: Group) -> Path:
    """.mutate/<group>/: the group's pyproject.toml and a link to every other top-level entry of the checkout."""
    folder = WORK / group.name
    folder.mkdir(parents=True, exist_ok=True)
    for name in linked_entries():
        link = folder / name
        if not link.is_symlink():
            link.symlink_to(ROOT / name)
    (folder / "pyproject.toml").write_text(group_pyproject(group))
    return folder


def run_mutmut(folder: Path, max_children: int | None, names: list[str] | None = None) -> int:
    command = [str(Path(sys.executable).parent / "mutmut"), "run"]
    if max_children:
        command += ["--max-children", str(max_children)]
    shown = " ".join(command[1:]) + (f" <{len(names)} sampled mutants>" if names else "")
    print(f"== mutmut in {folder.relative_to(ROOT)}: {shown}", flush=True)
    return subprocess.run(command + (names or []), cwd=folder, env=os.environ.copy()).returncode


def statuses(folder: Path, group: Group, only: set[str] | None = None) -> dict[str, Counter[str]]:
    """Per mutated module, how many of its mutants (those in `only`, when given) ended in each status
    (mutmut's .meta files)."""
    from mutmut.stats import status_by_exit_code

    mutants = folder / "mutants"
    found: dict[str, Counter[str]] = {}
    for meta in sorted(mutants.rglob("*.py.meta")):
        module = str(meta.relative_to(mutants))[: -len(".meta")]
        if not any(fnmatch(module, pattern) for pattern in group.only_mutate):
            continue  # left from an earlier, wider run
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        found[module] = Counter(
            status_by_exit_code[code] for key, code in codes.items() if only is None or key in only
        )
    return found


def score_line(name: str, counts: Counter[str]) -> str:
    counted = sum(counts[s] for s in DETECTED | UNDETECTED)
    killed = sum(counts[s] for s in DETECTED)
    score = f"{100 * killed / counted:5.1f}%" if counted else "   n/a"
    others = ", ".join(f"{s} {counts[s]}" for s in sorted(UNDETECTED | UNCOUNTED) if counts[s])
    return f"{score}  {killed:4d}/{counted:<4d} killed  {name}" + (f"  ({others})" if others else "")


def wilson_interval(killed: int, counted: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% interval of a proportion estimated from a sample (Wilson's score interval)."""
    if counted == 0:
        return (0.0, 1.0)
    p = killed / counted
    centre = (p + z * z / (2 * counted)) / (1 + z * z / counted)
    half = z * math.sqrt(p * (1 - p) / counted + z * z / (4 * counted * counted)) / (1 + z * z / counted)
    return (centre - half, centre + half)


def report(results: dict[str, Counter[str]], sampled: bool = False) -> None:
    print("\nmutation score: killed / (killed + survived + timeout + suspicious + segfault + no tests)")
    for module, counts in sorted(results.items()):
        print(score_line(module, counts))
    core, total = Counter[str](), Counter[str]()
    for module, counts in results.items():
        total += counts
        if module.startswith("sgldeploy/"):
            core += counts
    summaries = [("sgldeploy/ (core)", core)] if core and core != total else []
    for name, counts in [*summaries, ("total", total)]:
        line = score_line(name, counts)
        if sampled:
            counted = sum(counts[s] for s in DETECTED | UNDETECTED)
            low, high = wilson_interval(sum(counts[s] for s in DETECTED), counted)
            line += f"  [95% interval {100 * low:.1f}–{100 * high:.1f}%]"
        print(line)


def mutant_names(group: Group) -> dict[str, list[str]]:
    """Every mutant of the group's selected modules, by module, named as mutmut names them."""
    from mutmut.mutation.file_mutation import mutate_file_contents
    from mutmut.utils.format_utils import get_mutant_name

    found = {}
    for source in group.source_paths:
        for path in sorted((ROOT / source).rglob("*.py")):
            module = str(path.relative_to(ROOT))
            if any(fnmatch(module, pattern) for pattern in group.only_mutate):
                names = mutate_file_contents(module, path.read_text()).mutant_names
                found[module] = [get_mutant_name(Path(module), name) for name in names]
    return found


def draw(groups_: list[Group], size: int, seed: int) -> dict[str, list[str]]:
    """`size` mutants drawn uniformly from all the groups' mutants together, by group."""
    every = sorted((g.name, n) for g in groups_ for names in mutant_names(g).values() for n in names)
    chosen = random.Random(seed).sample(every, min(size, len(every)))
    by_group: dict[str, list[str]] = {g.name: [] for g in groups_}
    for group_name, name in sorted(chosen):
        by_group[group_name].append(name)
    return by_group


def of_functions(groups_: list[Group], patterns: list[str]) -> dict[str, list[str]]:
    """The mutants of the functions (or methods, `Class.method`) whose names match a pattern, by group: what a
    change touched, without every other mutant of its modules."""
    by_group: dict[str, list[str]] = {}
    for g in groups_:
        by_group[g.name] = [
            name
            for names in mutant_names(g).values()
            for name in names
            if any(fnmatch(function_of(name), pattern) for pattern in patterns)
        ]
    return by_group


def function_of(mutant: str) -> str:
    """`sgldeploy.stack.x_role_path__mutmut_3` → `role_path`; a method's `xǁClassǁm__mutmut_1` → `Class.m`."""
    name = mutant.rsplit(".", 1)[1].split("__mutmut_")[0]
    return name.removeprefix("x").strip("ǁ").replace("ǁ", ".") if "ǁ" in name else name.removeprefix("x_")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--paths", nargs="+", default=["sgldeploy", PREFETCH], help="modules or folders to mutate"
    )
    parser.add_argument(
        "--tests", nargs="+", help="pytest arguments selecting the tests (default: the group's)"
    )
    parser.add_argument("--max-children", type=int, help="parallel mutants (mutmut's default: one per core)")
    parser.add_argument("--report-only", action="store_true", help="print the scores of the last run")
    parser.add_argument("--sample", type=int, help="run this many mutants drawn at random, and score those")
    parser.add_argument("--seed", type=int, default=1, help="the sample's seed")
    parser.add_argument(
        "--functions",
        nargs="+",
        help="run only the mutants of these functions (fnmatch patterns, Class.method)",
    )
    parser.add_argument(
        "--count", action="store_true", help="print how many mutants each module has; run none"
    )
    args = parser.parse_args(argv)
    if args.count:
        counts = {m: len(names) for g in groups(args.paths, None) for m, names in mutant_names(g).items()}
        for module, n in counts.items():
            print(f"{n:6d}  {module}")
        print(f"{sum(counts.values()):6d}  total")
        return 0
    if not shutil.which("mutmut", path=str(Path(sys.executable).parent)):
        raise SystemExit("mutate: mutmut is not installed beside this Python; pip install -e '.[mutate]'")
    results: dict[str, Counter[str]] = {}
    failed = []
    selected = groups(args.paths, args.tests)
    sample = (
        draw(selected, args.sample, args.seed)
        if args.sample
        else of_functions(selected, args.functions)
        if args.functions
        else None
    )
    for group in selected:
        folder = prepare(group)
        names = sample[group.name] if sample is not None else None
        if names == []:
            continue  # the draw took none of this group's mutants
        if not args.report_only and run_mutmut(folder, args.max_children, names) != 0:
            failed.append(group.name)
        results.update(statuses(folder, group, set(names) if names is not None else None))
    if args.sample:
        print(f"\nsample: {sum(map(len, sample.values()))} mutants, seed {args.seed}")
    report(results, sampled=bool(args.sample))
    if failed:
        print(f"mutate: mutmut failed for {', '.join(failed)} (its output is above)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
