"""Database URLs from outside the command line: environment variables and ``bundler.toml``.

A command's ``--source`` / ``--target`` (and ``--db``) take a SQLAlchemy URL or the name of
a connection in the configuration file. When the option is left out, the URL comes from
``BUNDLER_SOURCE`` / ``BUNDLER_TARGET`` and then from the file's ``[defaults]``. The file
is ``--config-file PATH`` (or ``BUNDLER_CONFIG``), else ``bundler.toml`` in the working
folder, if there is one::

    [connections.old]
    url = "postgresql+psycopg://billing@old-db/porta"   # password: PGPASSWORD or ~/.pgpass
    [connections.new]
    url = "mysql+pymysql://billing@new-db/porta"        # password: ~/.my.cnf
    password_env = "NEW_DB_PASSWORD"                    # or from this variable

    [defaults]
    source = "old"
    target = "new"

Passwords can stay out of the URL altogether: psycopg (libpq) reads ``PGPASSWORD`` and
``~/.pgpass``; :func:`bundler.db.connect` has PyMySQL read ``~/.my.cnf`` (and
``MYSQL_PWD``) when the URL has no password; ``password_env`` names a variable that holds
it. Every URL shown anywhere goes through :func:`bundler.db.redact`.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bundler.errors import UsageError

CONFIG_NAME = "bundler.toml"
CONFIG_ENV = "BUNDLER_CONFIG"
SIDE_ENV = {"source": "BUNDLER_SOURCE", "target": "BUNDLER_TARGET"}

__all__ = ["CONFIG_NAME", "Config", "load_config", "resolve_url"]


@dataclass(frozen=True)
class Config:
    """The parsed configuration file (empty when there is none)."""

    path: Path | None = None
    connections: dict[str, dict[str, Any]] = field(default_factory=dict)
    defaults: dict[str, str] = field(default_factory=dict)

    def url_of(self, name: str) -> str:
        """The URL of connection ``name``, with the password of its ``password_env`` if set."""
        entry = self.connections[name]
        url = entry.get("url")
        if not isinstance(url, str) or not url:
            raise UsageError(f"connection {name!r} in {self.path} has no url")
        variable = entry.get("password_env")
        if variable:
            password = os.environ.get(str(variable))
            if password is None:
                raise UsageError(
                    f"connection {name!r} in {self.path} takes its password from ${variable}, which is not set"
                )
            from sqlalchemy.engine import make_url

            return make_url(url).set(password=password).render_as_string(hide_password=False)
        return url


def load_config(path: str | Path | None = None) -> Config:
    """Read ``path``, else ``$BUNDLER_CONFIG``, else ``./bundler.toml`` if it exists."""
    chosen = path or os.environ.get(CONFIG_ENV)
    if chosen:
        file = Path(chosen)
        if not file.is_file():
            raise UsageError(f"no configuration file at {file.resolve()}")
    else:
        file = Path(CONFIG_NAME)
        if not file.is_file():
            return Config()
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read configuration file {file.resolve()}: {exc}") from exc
    connections = data.get("connections", {})
    defaults = data.get("defaults", {})
    if not isinstance(connections, dict) or not all(isinstance(v, dict) for v in connections.values()):
        raise UsageError(f"{file}: [connections.NAME] tables with a url each are expected")
    if not isinstance(defaults, dict):
        raise UsageError(f"{file}: [defaults] must be a table (source = NAME, target = NAME)")
    return Config(file.resolve(), connections, {str(k): str(v) for k, v in defaults.items()})


def _is_url(value: str) -> bool:
    return "://" in value or value.startswith("sqlite:")


def resolve_url(value: str | None, side: str | None, config: Config, *, option: str) -> str | None:
    """The URL meant by ``value`` (a URL or a connection name), or by the environment and the
    file's defaults for ``side`` when ``value`` is None. None when nothing gives one."""
    origin = option
    if value is None and side in SIDE_ENV:
        value = os.environ.get(SIDE_ENV[side]) or None
        origin = f"${SIDE_ENV[side]}"
        if value is None and side in config.defaults:
            value = config.defaults[side]
            origin = f"[defaults] {side} in {config.path}"
    if value is None:
        return None
    if _is_url(value):
        return value
    if value in config.connections:
        return config.url_of(value)
    known = ", ".join(sorted(config.connections)) or "none"
    where = f"{config.path}" if config.path else f"no {CONFIG_NAME} in {Path.cwd()}"
    raise UsageError(
        f"{origin} {value!r} is neither a database URL nor a connection in the configuration ({where}; "
        f"connections: {known})",
        hint="give a SQLAlchemy URL such as sqlite:///x.db, or add [connections.NAME] url = ... to bundler.toml",
    )
