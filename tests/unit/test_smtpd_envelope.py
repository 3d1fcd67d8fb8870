"""Queue space at MAIL: Postfix's arithmetic (postpy.smtpd.envelope)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from postpy.smtpd.envelope import enough_space, storage_refused

MB = 1_000_000

# (free, queue_minfree, message_size_limit, declared SIZE, refused)
CASES = [
    (0, 0, 0, 0, True),                     # a full disk refuses even with no limits set
    (0, 0, 10 * MB, 0, True),
    (1, 0, 0, 0, False),
    (15 * MB, 0, 10 * MB, 0, False),        # exactly 1.5 x the limit
    (15 * MB - 1, 0, 10 * MB, 0, True),     # just under
    (100 * MB, 100 * MB, 10 * MB, 0, True), # at queue_minfree
    (100 * MB + 1, 100 * MB, 10 * MB, 0, False),
    (100 * MB, 0, 0, 50 * MB, True),        # SIZE takes half of what is free
    (100 * MB, 0, 0, 50 * MB - 1, False),
    (100 * MB, 60 * MB, 0, 40 * MB, False), # SIZE fits above queue_minfree
    (100 * MB, 60 * MB, 0, 40 * MB + 1, True),
    (100 * MB, 0, 10 * MB, 10 * MB, False),
]


@pytest.mark.parametrize(("free", "minfree", "limit", "size", "refused"), CASES)
def test_storage_rule(free: int, minfree: int, limit: int, size: int, refused: bool) -> None:
    assert storage_refused(free, minfree, limit, size) == refused


def test_enough_space_measures_the_file_system(tmp_path: Path) -> None:
    st = os.statvfs(tmp_path)
    free = st.f_bavail * st.f_frsize
    assert enough_space(str(tmp_path), 0, 0, 0) == (free > 0)
    assert not enough_space(str(tmp_path), 0, free, 0)          # 1.5 x the limit is more than free
    assert not enough_space(str(tmp_path), free, 0, 0)
    assert enough_space(str(tmp_path / "missing"), 0, free, 0)  # cannot tell: cleanup decides
