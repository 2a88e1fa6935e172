"""ANTs' registration seed is never 0, which ANTs reads as "seed from the clock" (issue 14)."""

from __future__ import annotations

from bids_msseg.preproc.brain import ants_seed_value


def test_ants_seed_is_never_zero_and_fits_int32() -> None:
    assert ants_seed_value(0) != 0
    assert len({ants_seed_value(s) for s in (0, 1, 42, 2**31 - 2)}) == 4
    assert all(0 < ants_seed_value(s) < 2**31 for s in (0, 2**31 - 2, 2**40, 10**12))
