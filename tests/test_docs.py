"""The documentation stays true: every command has help with an example, and the README's
commands run as shown."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

from bundler.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _commands(group: click.Group, prefix: str = "bundler") -> list[tuple[str, click.Command]]:
    found: list[tuple[str, click.Command]] = []
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None
        path = f"{prefix} {name}"
        if isinstance(command, click.Group):
            found += _commands(command, path)
        else:
            found.append((path, command))
    return found


COMMANDS = _commands(main)


def test_every_verb_of_the_design_is_there() -> None:
    names = {path for path, _ in COMMANDS}
    for expected in (
        "bundler demo",
        "bundler db init",
        "bundler db seed",
        "bundler export",
        "bundler pack",
        "bundler unpack",
        "bundler inspect summary",
        "bundler inspect verify",
        "bundler inspect query",
        "bundler inspect diff",
        "bundler load",
        "bundler migrate",
        "bundler recordings sync",
    ):
        assert expected in names


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[p for p, _ in COMMANDS])
def test_every_command_has_help_with_an_example(path: str, command: click.Command) -> None:
    assert command.help and "Example:" in command.help, f"{path} has no Example: in its help"
    example = command.help.split("Example:", 1)[1]
    assert path in example, f"the example of {path} does not show {path}"


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    start = text.index("## Using it")
    end = text.index("## How it works")
    lines = []
    for block in re.findall(r"```sh\n(.*?)```", text[start:end], flags=re.S):
        lines += [line for line in block.splitlines() if line.strip() and not line.startswith(". ")]
    return lines


@pytest.mark.slow
def test_readme_commands_run_as_shown(tmp_path: Path) -> None:
    """Build the demo in a scratch folder, then run every command of the README's usage part."""
    from bundler.demo import run_demo

    run_demo(tmp_path / "demo", customers=3, workers=1, echo=lambda _: None)
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    commands = _readme_commands()
    assert len(commands) >= 8
    for line in commands:
        done = subprocess.run(
            ["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, f"README command failed: {line}\n{done.stderr[-2000:]}"
