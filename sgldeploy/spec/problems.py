"""Problems in user input, reported one line each in the form DESIGN.md fixes:

error: <config path>: <what is wrong> (got <value>); <how to fix>

and warnings about valid input, one line each: warning: <config path>: <what>; <how to fix>
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

NAMESPACE = "sgldeploy"
_MAX_SHOWN = 80
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_:-]+")


@dataclass(frozen=True)
class Problem:
    """One thing wrong in user input, the one shape every check reports: `error: <path>: <what> (got <got>); <fix>`.

    Arguments go in that order, but `got` last: it is optional (`show_got=False` when no value helps, or when
    the value is a secret). Code that sees only part of the input (a field's validator, sizing, the builders,
    which see one deployment) gives the path inside what it sees, and the caller that knows where that sits
    puts the full path in with `dataclasses.replace`."""

    path: str
    what: str
    fix: str
    got: Any = None
    show_got: bool = True

    LEVEL: ClassVar[str] = "error"

    def message(self) -> str:
        """The line without its level (what pulumi.log.warn is given; it adds `warning: ` itself)."""
        got = f" (got {show(self.got)})" if self.show_got else ""
        return one_line(f"{self.path}: {self.what}{got}; {self.fix}")

    def line(self) -> str:
        return f"{self.LEVEL}: {self.message()}"


@dataclass(frozen=True)
class ConfigWarning(Problem):
    """Valid input that will cost more or stop working later: reported, never fatal (the exit code stays).

    The CLI prints `line()` on stderr; the Pulumi program logs `message()` with pulumi.log.warn, which both
    `pulumi preview` and `sgldeploy plan` show as `warning: <message>`. A warning is about a setting, not a
    value gone wrong, so by default it shows no `got`."""

    show_got: bool = False

    LEVEL: ClassVar[str] = "warning"


# The path a field's validator gives its problem: it cannot know where the field sits; pydantic's error
# location says, and validate.py puts the full path in.
THIS_FIELD = ""


class ProblemError(Exception):
    """A problem raised where it is found, to the caller that can place it (see Problem)."""

    def __init__(self, problem: Problem):
        super().__init__(problem.what)
        self.problem = problem


class SpecValueError(ProblemError, ValueError):
    """Raised by spec validators (pydantic reports a ValueError as a validation error and keeps the exception in
    the error's context), with the path THIS_FIELD."""


class InvalidInput(Exception):
    """Every problem found in the input, raised once after all checks ran."""

    def __init__(self, problems: Iterable[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(p.line() for p in self.problems))


class Verbatim(str):
    """A `got` that is already phrased (e.g. "1 < 2"), shown without quotes."""


def one_line(text: str) -> str:
    """Control characters from the input (a key with a newline, say) are escaped: one problem, one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def show(value: Any) -> str:
    """A value as the user wrote it, short enough for one line."""
    if isinstance(value, Verbatim):
        text = str(value)
    elif isinstance(value, str):
        text = repr(value)
    elif value is None:
        text = "nothing"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, dict):
        text = "an object" if value else "{}"
    elif isinstance(value, list):
        text = f"a list of {len(value)}"
    else:
        text = str(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 1] + "…"


def config_path(key: str, loc: Iterable[Any] = ()) -> str:
    """`sgldeploy:deployments[1].scaling.max_replicas` from a key and a pydantic-style location."""
    path = f"{NAMESPACE}:{key}"
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(str(part)):
            path += f".{part}"
        else:  # an odd key (spaces, dots, control characters) is quoted so the path stays unambiguous
            path += f"[{json.dumps(str(part))}]"
    return path
