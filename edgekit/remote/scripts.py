"""The shell scripts edgekit runs on the hosts (`sh -c`), rendered from templates/remote/.

Every value a template puts into shell goes through the `q` filter (shlex.quote); an
integer inside a quoted string goes through `int`, which refuses anything else; a whole
script handed to another one (the restore script inside the firewall's rollback) goes
through `shell`. tests/unit/test_shell_scripts.py holds every template to that and runs
shellcheck on each.
"""

from __future__ import annotations

import functools
import shlex

import jinja2

from edgekit.render import template_environment

DIRECTORY = "remote"


def _defined(value: object) -> None:
    if isinstance(value, jinja2.Undefined):
        str(value)  # StrictUndefined: raises UndefinedError, naming the missing value


def _quote(value: str | int) -> str:
    _defined(value)
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise TypeError(f"cannot quote {value!r} for the shell")
    return shlex.quote(str(value))


def _integer(value: int) -> int:
    # Jinja's own `int` turns anything it cannot read into 0; here that is a bug.
    _defined(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"not an integer: {value!r}")
    return value


def _shell(code: str) -> str:
    _defined(code)
    if not isinstance(code, str):
        raise TypeError(f"not a shell script: {code!r}")
    return code


@functools.cache
def _env() -> jinja2.Environment:
    env = template_environment()
    env.filters.update(q=_quote, int=_integer, shell=_shell)
    return env


def template_name(name: str) -> str:
    """`gather-facts` -> `remote/gather-facts.sh.j2`."""
    return f"{DIRECTORY}/{name}.sh.j2"


def script(name: str, **values: object) -> str:
    """Render templates/remote/<name>.sh.j2 with `values`."""
    return _env().get_template(template_name(name)).render(values)
