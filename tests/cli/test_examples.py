"""The help examples that name the demo's data run on it, as printed."""

from __future__ import annotations

import glob
import shlex
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from bundler.cli import main
from tests.test_docs import COMMANDS, ROOT

pytestmark = pytest.mark.slow  # end to end: left out of make test-fast


def demo_examples() -> dict[str, list[str]]:
    """Per top-level verb, its examples that use demo/ (continuation lines joined), in help order."""
    found: dict[str, list[str]] = {}
    for path, command in COMMANDS:
        text = (command.help or "").split("Example:", 1)[1].replace("\\\n", " ")
        for line in text.splitlines():
            line = line.strip()
            verb = path.split()[1]
            if line.startswith("bundler ") and "demo/" in line and verb != "demo":
                found.setdefault(verb, []).append(line)
    return found


def test_help_examples_run_on_the_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bundler.demo import run_demo

    built = tmp_path / "built"
    printed: list[str] = []
    run_demo(built / "demo", customers=3, workers=1, echo=printed.append)
    hints = printed[printed.index(next(p for p in printed if p.startswith("next, try"))) + 1 :]
    examples = demo_examples()
    assert {"list", "migrate", "export", "load", "reverse", "clean", "inspect"} <= set(examples)
    runner = CliRunner()
    for verb, lines in examples.items():
        work = tmp_path / verb  # each verb on its own copy: an export must not spoil a clean
        shutil.copytree(built, work, symlinks=True)
        (work / "examples").symlink_to(ROOT / "examples")
        monkeypatch.chdir(work)
        for line in lines:
            args = []
            for word in shlex.split(line)[1:]:
                args += sorted(glob.glob(word)) or [word] if "*" in word else [word]
            done = runner.invoke(main, args)
            assert done.exit_code == 0, f"help example failed: {line}\n{done.output[-2000:]}"
    # the demo's "next, try" lines run as printed (after the program, which the test cannot be)
    monkeypatch.chdir(ROOT)
    assert len(hints) >= 7
    for hint in hints:
        words = shlex.split(hint)
        args = words[words.index("bundler") + 1 :] if "bundler" in words else words[1:]
        args = [a for w in args for a in (sorted(glob.glob(w)) or [w] if "*" in w else [w])]
        done = runner.invoke(main, args)
        assert done.exit_code == 0, f"demo hint failed: {hint}\n{done.output[-2000:]}"
