"""The folders say the architecture, and imports flow one way (README, Layout).

Each area of `sgldeploy/` may import only the areas below it; `spec.problems` (the one problem type) and
`files` are leaves every area may use. The core never imports `components/`, and only the offline engine and
the CLI touch the Pulumi SDK: everything else is pure, fast to test and reuse.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "sgldeploy"

# Lowest first: an area may import itself and any area listed before it.
LAYERS = ["catalog", "spec", "models", "builders", "stack", "cost", "verify", "policy", "offline", "cli"]
# verify.measure runs alone in the serving image (the verify Job): the standard library only.
LEAVES = {"sgldeploy.spec.problems", "sgldeploy.files", "sgldeploy.verify.measure"}
MAY_USE_PULUMI = {"offline", "cli"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def area(module: str) -> str:
    return module.split(".")[1]


def imports(path: Path) -> set[str]:
    """Every module a file imports, `from x import y` counted as x.y when y is a module of sgldeploy."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                if (ROOT / Path(*candidate.split("."))).with_suffix(".py").exists():
                    found.add(candidate)
    return found


def core_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(CORE.rglob("*.py")) if module_name(p) != "sgldeploy"}


def test_every_core_module_sits_in_a_known_area():
    assert {area(m) for m in core_modules()} <= set(LAYERS) | {"files"}


def upward(module: str, targets: set[str]) -> list[str]:
    """The imports of `module` that reach an area above its own."""
    if module in LEAVES:
        return []
    level = LAYERS.index(area(module))
    return sorted(
        f"{module} imports {t} ({area(t)} is above {area(module)})"
        for t in targets
        if t.startswith("sgldeploy.") and t not in LEAVES and LAYERS.index(area(t)) > level
    )


def test_imports_flow_one_way():
    assert [line for m, p in core_modules().items() for line in upward(m, imports(p))] == []


def test_leaves_import_nothing_of_sgldeploy():
    for leaf in LEAVES:
        path = ROOT / Path(*leaf.split(".")).with_suffix(".py")
        assert not [t for t in imports(path) if t.startswith("sgldeploy")], leaf


def test_the_core_never_imports_components_and_only_the_engine_and_cli_import_pulumi():
    wrong = []
    for module, path in core_modules().items():
        for target in imports(path):
            top = target.split(".")[0]
            if top == "components":
                wrong.append(f"{module} imports {target}")
            if top.startswith("pulumi") and area(module) not in MAY_USE_PULUMI:
                wrong.append(f"{module} imports {target}")
    assert wrong == []


def test_the_checks_see_a_wrong_import(tmp_path):
    """The checks themselves: an import upward, and one of a component, are found."""
    fake = tmp_path / "x.py"
    fake.write_text("from sgldeploy.offline import engine\nimport components.platform\n")
    found = imports(fake)
    assert {"sgldeploy.offline", "sgldeploy.offline.engine", "components.platform"} <= found
    assert upward("sgldeploy.builders.router", found) == [
        "sgldeploy.builders.router imports sgldeploy.offline (offline is above builders)",
        "sgldeploy.builders.router imports sgldeploy.offline.engine (offline is above builders)",
    ]
    assert upward("sgldeploy.cli", found) == []
    assert upward("sgldeploy.builders.router", {"sgldeploy.spec.problems", "sgldeploy.models.lock"}) == []


def test_the_benchmarks_import_what_exists():
    """bench/ runs outside the tests (make bench); a module or name it imports that a move took away would
    only show there. Read, not imported: a benchmark's import sets up its scratch environment."""
    import importlib.util

    missing = []
    for path in sorted((ROOT / "bench").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "sgldeploy":
                module = importlib.import_module(node.module)
                missing += [
                    f"{path.name}: {node.module}.{a.name}"
                    for a in node.names
                    if not hasattr(module, a.name)
                    and importlib.util.find_spec(f"{node.module}.{a.name}") is None
                ]
    assert missing == []
