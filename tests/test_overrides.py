"""The admin's link overrides (service/overrides.py): applied, saved, and read back (no root)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from wanhooks.model import Overrides
from wanhooks.service import overrides


def test_a_link_is_in_one_set_at_most_and_enable_clears_both() -> None:
    none = Overrides()
    drained = overrides.applied(none, "drain", "w1")
    assert drained == Overrides(draining=frozenset({"w1"}))
    disabled = overrides.applied(drained, "disable", "w1")
    assert disabled == Overrides(disabled=frozenset({"w1"}))
    assert overrides.applied(disabled, "enable", "w1") == none
    assert overrides.applied(none, "enable", "w9") == none  # enabling what is not overridden: nothing
    with pytest.raises(ValueError, match="disable, drain or enable"):
        overrides.applied(none, "remove", "w1")


def test_saved_overrides_come_back_and_a_hostile_file_gives_none_of_its_bad_names(tmp_path: Path) -> None:
    run_dir = str(tmp_path)
    assert overrides.load(run_dir) == Overrides()  # nothing saved yet
    saved = Overrides(disabled=frozenset({"w1"}), draining=frozenset({"wwan0"}))
    overrides.save(run_dir, saved)
    assert overrides.load(run_dir) == saved
    path = tmp_path / overrides.OVERRIDES_FILE
    path.write_text(json.dumps({"disabled": ["w1", "../etc", "x" * 40, 7], "draining": "w2"}))
    assert overrides.load(run_dir) == Overrides(disabled=frozenset({"w1"}))
    for garbage in ("[1, 2]", "{", "null"):
        path.write_text(garbage)
        assert overrides.load(run_dir) == Overrides()
    path.unlink()
    os.symlink("/etc/hostname", path)  # never followed
    assert overrides.load(run_dir) == Overrides()
