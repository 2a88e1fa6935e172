"""Site rules and assignment (bids_msseg/crosssite/sites.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bids_msseg.bids import FlairRun
from bids_msseg.crosssite.sites import SiteRule, assign_sites, choose_rule, site_label
from bids_msseg.errors import UsageError
from bids_msseg.train.split import TrainingScan

# ----------------------------------------------------------------------------------- sites


def test_site_rules(tmp_path: Path, make_scan) -> None:
    a = make_scan("01", Manufacturer="Siemens", MagneticFieldStrength=3)
    b = make_scan("02", Manufacturer="Philips", MagneticFieldStrength=1.5)
    c = make_scan("03")  # no sidecar fields: no site
    assert site_label("GE MEDICAL / 1.5") == "GE-MEDICAL-1p5"
    rule = choose_rule([a, b, c], None, None)
    assert rule == SiteRule("fields", ("Manufacturer", "MagneticFieldStrength"))
    assert assign_sites([a, b, c], rule) == {a.key: "Siemens-3", b.key: "Philips-1p5"}
    assert choose_rule([a, make_scan("09", dataset="other")], None, None) == SiteRule("dataset")
    assert assign_sites([a, make_scan("09", dataset="other")], SiteRule("dataset")) == {
        a.key: "d", "other__sub-09_FLAIR": "other"}
    with pytest.raises(UsageError, match="cannot tell sites apart"):
        choose_rule([c], None, None)
    with pytest.raises(UsageError, match="exclusive"):
        choose_rule([a], "site", ["Manufacturer"])
    # a participants.tsv column, read from the scan's own dataset
    root = tmp_path / "ds"
    (root / "sub-01" / "anat").mkdir(parents=True)
    (root / "participants.tsv").write_text("participant_id\tcentre\nsub-01\tLyon\nsub-02\tn/a\n")
    runs = [FlairRun(root / f"sub-{s}" / "anat" / f"sub-{s}_FLAIR.nii.gz", f"sub-{s}/anat/sub-{s}_FLAIR.nii.gz",
                     {"subject": s}) for s in ("01", "02")]
    scans = [TrainingScan(r, Path("/m"), "ds") for r in runs]
    assert assign_sites(scans, choose_rule(scans, "centre", None)) == {scans[0].key: "Lyon"}
    with pytest.raises(UsageError, match="no such column"):
        assign_sites(scans, SiteRule("column", ("site",)))
