"""Checkpoint folders are replaced as a whole: a crash at any point leaves one complete checkpoint."""

import os

import pytest

from halm.checkpoint import complete_checkpoint_dir, write_checkpoint_dir

FILES = ("a.bin", "b.bin")


def _write(step):
    def write(folder):
        for name in FILES:
            (folder / name).write_text(str(step))
    return write


def test_new_checkpoint_replaces_the_old_one_as_a_whole(tmp_path):
    final = tmp_path / "state"
    assert complete_checkpoint_dir(final, FILES) is None
    write_checkpoint_dir(final, _write(1))
    write_checkpoint_dir(final, _write(2))
    assert complete_checkpoint_dir(final, FILES) == final
    assert {(final / n).read_text() for n in FILES} == {"2"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state"]


def test_a_crash_while_writing_or_between_the_renames_keeps_a_complete_step(tmp_path):
    final = tmp_path / "state"
    write_checkpoint_dir(final, _write(1))

    def dies(folder):
        (folder / "a.bin").write_text("2")
        raise KeyboardInterrupt  # killed halfway through the files of step 2

    with pytest.raises(KeyboardInterrupt):
        write_checkpoint_dir(final, dies)
    assert complete_checkpoint_dir(final, FILES) == final and (final / "a.bin").read_text() == "1"
    os.replace(final, tmp_path / "state.old")  # killed after the first rename, before the second
    found = complete_checkpoint_dir(final, FILES)
    assert found == tmp_path / "state.old" and (found / "b.bin").read_text() == "1"
    write_checkpoint_dir(final, _write(3))  # the next save cleans up
    assert complete_checkpoint_dir(final, FILES) == final
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state"]
