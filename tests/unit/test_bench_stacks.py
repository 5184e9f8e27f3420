"""Reading py-spy's raw stacks (bench.stacks): each frame's share with and without its callees."""

from __future__ import annotations

from bench.stacks import shares


def test_inclusive_counts_a_frame_once_per_sample_and_self_only_the_leaf() -> None:
    lines = [
        "main (a.py:1);poll (b.py:2);match (c.py:3) 6",
        "main (a.py:1);poll (b.py:2) 3",
        "main (a.py:1);walk (d.py:4);walk (d.py:4) 1",  # recursion: once
        "",
        "not a stack line",
    ]
    total, inclusive, alone = shares(lines)
    assert total == 10
    assert inclusive["main (a.py:1)"] == 10
    assert inclusive["poll (b.py:2)"] == 9
    assert inclusive["walk (d.py:4)"] == 1
    assert alone == {"match (c.py:3)": 6, "poll (b.py:2)": 3, "walk (d.py:4)": 1}
