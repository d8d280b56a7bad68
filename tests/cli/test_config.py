"""Database URLs from the environment and bundler.toml; passwords from the drivers' conventions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from bundler.cli import main
from bundler.config import load_config, resolve_url
from bundler.db import connect, mysql_password_args
from bundler.errors import UsageError
from tests.export import fixture

SECRET = "s3cret-Pa55"


def test_named_connections_env_and_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BUNDLER_SOURCE", raising=False)
    monkeypatch.setenv("OLD_PW", SECRET)
    Path("bundler.toml").write_text(
        '[connections.old]\nurl = "postgresql+psycopg://billing@old-db/porta"\npassword_env = "OLD_PW"\n'
        '[connections.new]\nurl = "sqlite:///new.db"\n[defaults]\nsource = "old"\ntarget = "new"\n'
    )
    config = load_config()
    assert config.path == (tmp_path / "bundler.toml").resolve()
    assert resolve_url("new", "target", config, option="--target") == "sqlite:///new.db"
    assert sa.make_url(resolve_url(None, "source", config, option="--source") or "").password == SECRET
    monkeypatch.setenv("BUNDLER_SOURCE", "sqlite:///env.db")
    assert resolve_url(None, "source", config, option="--source") == "sqlite:///env.db"
    assert resolve_url("sqlite:///given.db", "source", config, option="--source") == "sqlite:///given.db"
    with pytest.raises(UsageError, match="'nope' is neither a database URL nor a connection.*new, old"):
        resolve_url("nope", "source", config, option="--source")


def test_the_cli_takes_a_connection_name_and_hides_the_password(
    new_db: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source_url = new_db("sqlite")
    fixture.build(source_url)
    config = tmp_path / "sites.toml"
    config.write_text(
        f'[connections.old]\nurl = "{source_url}"\n'
        f'[connections.gone]\nurl = "postgresql+psycopg://billing:{SECRET}@127.0.0.1:1/porta"\n'
    )
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    ok = runner.invoke(main, ["recover", "--config-file", str(config), "--source", "old", "--json"])
    assert ok.exit_code == 0, ok.output
    failed = runner.invoke(main, ["--config-file", str(config), "recover", "--source", "gone", "--json"])
    assert failed.exit_code == 1
    error = json.loads(failed.stdout)["error"]
    assert "cannot connect" in error["message"] and "127.0.0.1:1" in error["message"]
    assert SECRET not in failed.output
    missing = runner.invoke(
        main, ["migrate", "--all", "--target", "sqlite:///x.db"], env={"BUNDLER_SOURCE": ""}
    )
    assert (
        missing.exit_code == 2 and "no source given" in missing.output and "$BUNDLER_SOURCE" in missing.output
    )


def test_passwords_from_the_drivers_conventions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("MYSQL_PWD", raising=False)
    url = sa.make_url("mysql+pymysql://billing@db/porta")
    assert mysql_password_args(url) == {}
    (tmp_path / ".my.cnf").write_text(f"[client]\npassword={SECRET}\n")
    assert mysql_password_args(url) == {"read_default_file": str(tmp_path / ".my.cnf")}
    assert mysql_password_args(url.set(password="given")) == {}
    monkeypatch.setenv("MYSQL_PWD", SECRET)
    assert mysql_password_args(url) == {"password": SECRET}


def test_pgpassword_reaches_libpq(monkeypatch: pytest.MonkeyPatch, new_db: Any) -> None:
    url = new_db("postgresql")
    monkeypatch.setenv("PGPASSWORD", SECRET)
    engine = connect(sa.make_url(url).set(password=None))
    try:
        with engine.connect() as conn:
            assert conn.connection.dbapi_connection.info.password == SECRET  # type: ignore[union-attr]
    finally:
        engine.dispose()
