"""The live area stays as tall as the work in flight; the ETA follows the average pace."""

from __future__ import annotations

import io

from bundler.progress import RichProgress


def test_finished_work_is_collapsed_and_only_main_tasks_stay() -> None:
    out = io.StringIO()
    with RichProgress(out, force_terminal=True, main=("lineup",)) as progress:
        progress.start("lineup", total=3)
        for i in range(3):
            progress.start(f"load b{i}", total=10)
            progress.advance(f"load b{i}", 10)
            progress.finish(f"load b{i}")
            progress.advance("lineup")
        assert progress._bar is not None
        assert [t.description for t in progress._bar.tasks] == ["lineup"]
    plain = io.StringIO()
    with RichProgress(plain, interval=0, main=("lineup",)) as progress:
        progress.start("lineup", total=1)
        progress.start("export b0")
        progress.advance("export b0", 5)
        progress.finish("export b0")
        progress.note("customer acme: done")
        progress.advance("lineup")
        progress.finish("lineup")
    lines = plain.getvalue().splitlines()
    assert lines[0] == "lineup: started (1 to do)" and "customer acme: done" in lines
    assert not any(line.startswith("export b0") for line in lines)  # shown with -v only


def test_bundle_ids_read_in_any_script_and_never_collide() -> None:
    from datetime import datetime

    from bundler.bundle import new_bundle_id

    now = datetime(2026, 12, 1)
    tokyo = new_bundle_id("customer", {"name": "東京テレコム株式会社 #17"}, now)
    assert tokyo.startswith("customer-DongJingterekomu") and len(tokyo) <= 64
    ana = [
        new_bundle_id("customer", {"name": name}, now).rsplit("-", 2)[0] for name in ("Ana's #1", "Ana_s #1")
    ]
    assert ana[0] != ana[1]  # same slug, different key: the key's hash tells them apart
