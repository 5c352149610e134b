"""The one problem type: every check's line, error or warning, has the form DESIGN.md fixes."""

from __future__ import annotations

from dataclasses import replace

import pytest

from sgldeploy.models.sizing import SizingError
from sgldeploy.spec.problems import THIS_FIELD, ConfigWarning, InvalidInput, Problem, SpecValueError, Verbatim
from sgldeploy.spec.validate import parse_stack


def test_an_error_line_names_path_what_got_and_fix_in_that_order():
    problem = Problem(
        "sgldeploy:deployments[1].scaling.max_replicas", "must be ≥ min_replicas", "raise it", 0
    )
    assert (
        problem.line()
        == "error: sgldeploy:deployments[1].scaling.max_replicas: must be ≥ min_replicas (got 0); raise it"
    )
    hidden = Problem("sgldeploy:hfToken", "is set in plain text", "use --secret", "hf_secret", show_got=False)
    assert hidden.line() == "error: sgldeploy:hfToken: is set in plain text; use --secret"


def test_a_warning_is_a_problem_with_the_warning_level_and_no_got_unless_asked():
    warning = ConfigWarning(
        "sgldeploy:platform.cluster.kubernetes_version", "leaves standard support", "upgrade"
    )
    assert (
        warning.line()
        == "warning: sgldeploy:platform.cluster.kubernetes_version: leaves standard support; upgrade"
    )
    assert warning.message() == warning.line().removeprefix("warning: ")  # pulumi.log.warn adds the level
    shown = ConfigWarning("sgldeploy:x", "is odd", "fix it", Verbatim("1 < 2"), show_got=True)
    assert shown.line() == "warning: sgldeploy:x: is odd (got 1 < 2); fix it"
    assert isinstance(warning, Problem) and not isinstance(Problem("p", "w", "f"), ConfigWarning)


def test_a_problem_raised_without_its_path_is_placed_where_it_was_found():
    raised = SpecValueError(Problem(THIS_FIELD, "must be odd", "pick 3", 2))
    assert isinstance(raised, ValueError) and raised.problem.path == THIS_FIELD  # pydantic needs a ValueError
    placed = replace(raised.problem, path="sgldeploy:platform.x")
    assert placed.line() == "error: sgldeploy:platform.x: must be odd (got 2); pick 3"
    assert (
        SizingError(Problem("resources.gpu", "does not fit", "use L40S", "L4")).problem.what == "does not fit"
    )


def test_a_validators_problem_gets_the_full_config_path():
    with pytest.raises(InvalidInput) as invalid:
        parse_stack({"cluster": {"vpc_cidr": "10.0.0.0/24"}}, [])
    assert [p.line() for p in invalid.value.problems] == [
        "error: sgldeploy:platform.cluster.vpc_cidr: is too small for node and load-balancer subnets in two zones "
        "(got '10.0.0.0/24'); use a /20 or larger, e.g. 10.0.0.0/16"
    ]


# ---- the production pin's line, with and without a locked commit to name (stack.py) -------------------


def production_stack(tmp_path, revision: str, locked_sha: str | None):
    """A production stack serving QWEN at `revision`, with `revision` in its lock at `locked_sha` when given."""
    import json

    from .conftest import QWEN, deployment, write_stack

    path = write_stack(
        tmp_path,
        platform={"environment": "production", "cluster": {"name": "x"}},
        deployments=[deployment(model={"repo": QWEN["repo"], "revision": revision})],
    )
    if locked_sha is not None:
        lock_file = path.parent / "models.lock.json"
        lock = json.loads(lock_file.read_text())
        entry = lock["models"][f"{QWEN['repo']}@{QWEN['revision']}"]
        lock["models"][f"{QWEN['repo']}@{revision}"] = {**entry, "revision": revision, "sha": locked_sha}
        lock_file.write_text(json.dumps(lock))
    return path


def revision_lines(path) -> list[str]:
    from .conftest import render_stack

    with pytest.raises(InvalidInput) as invalid:
        render_stack(path)
    return [p.line() for p in invalid.value.problems if p.path.endswith(".model.revision")]


def test_a_production_branch_names_the_commit_it_is_locked_at(tmp_path):
    sha = "e" * 40
    assert revision_lines(production_stack(tmp_path, "main", sha)) == [
        "error: sgldeploy:deployments[0].model.revision: must be a 40-hex commit in a production stack "
        f"(got 'main'); pin the commit the branch or tag resolves to; it is locked at {sha}"
    ]


def test_a_production_branch_not_in_the_lock_names_no_commit(tmp_path):
    assert revision_lines(production_stack(tmp_path, "v9", None)) == [
        "error: sgldeploy:deployments[0].model.revision: must be a 40-hex commit in a production stack "
        "(got 'v9'); pin the commit the branch or tag resolves to",
        "error: sgldeploy:deployments[0].model.revision: Qwen/Qwen2.5-7B-Instruct@v9 is not in models.lock.json "
        "(got 'v9'); run `sgldeploy lock` to resolve it on the Hub, or `sgldeploy lock --from-cache DIR` to "
        "resolve it from a Hugging Face cache without the Hub",
    ]
