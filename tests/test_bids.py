"""Finding FLAIRs with pybids: sessions, acquisitions, runs, labels, filters, the cached index."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bids_msseg.bids import collect_flair_runs
from bids_msseg.errors import NoInputError, NoMatchError, ValidationError

RICH_RUNS = (
    ("sub-01/ses-1/anat/sub-01_ses-1_FLAIR.nii.gz", {"seed": 1}),
    ("sub-01/ses-2/anat/sub-01_ses-2_acq-3D_run-1_FLAIR.nii.gz", {"seed": 2}),
    ("sub-01/ses-2/anat/sub-01_ses-2_acq-3D_run-2_FLAIR.nii.gz", {"seed": 3}),
    ("sub-01/ses-2/anat/sub-01_ses-2_acq-2D_FLAIR.nii", {"seed": 4}),
    ("sub-02/anat/sub-02_FLAIR.nii.gz", {"seed": 5}),
)


@pytest.fixture
def rich_bids(tmp_path: Path, make_bids_dataset) -> Path:
    """Sessions, acquisitions, repeated runs, an uncompressed .nii, a T1w and a stray file."""
    root = make_bids_dataset(tmp_path / "bids", RICH_RUNS)
    (root / "sub-02" / "anat" / "notes.txt").write_text("not BIDS")
    # A dataset-level sidecar inherited by every FLAIR without a closer one.
    (root / "FLAIR.json").write_text('{"RepetitionTime": 9.0}')
    return root


def _names(runs) -> list[str]:
    return [r.name for r in runs]


def test_every_flair_is_its_own_run(rich_bids: Path) -> None:
    runs = collect_flair_runs(rich_bids)
    assert _names(runs) == [
        "sub-01_ses-1_FLAIR",
        "sub-01_ses-2_acq-2D_FLAIR",
        "sub-01_ses-2_acq-3D_run-1_FLAIR",
        "sub-01_ses-2_acq-3D_run-2_FLAIR",
        "sub-02_FLAIR",
    ]
    by_name = {r.name: r for r in runs}
    run2 = by_name["sub-01_ses-2_acq-3D_run-2_FLAIR"]
    assert run2.relpath == "sub-01/ses-2/anat/sub-01_ses-2_acq-3D_run-2_FLAIR.nii.gz"
    assert run2.path == rich_bids / run2.relpath and run2.path.is_absolute()
    assert (run2.subject, run2.session) == ("01", "2")
    assert run2.entities["acquisition"] == "3D" and int(run2.entities["run"]) == 2
    assert by_name["sub-02_FLAIR"].session is None
    assert by_name["sub-01_ses-2_acq-2D_FLAIR"].relpath.endswith(".nii")
    # Sidecar metadata, with BIDS inheritance from the dataset-level FLAIR.json.
    assert run2.metadata["SeriesDescription"] == "sub-01_ses-2_acq-3D_run-2_FLAIR"
    assert run2.metadata["RepetitionTime"] == 9.0


def test_participant_and_session_labels(rich_bids: Path) -> None:
    assert _names(collect_flair_runs(rich_bids, participant_labels=["02"])) == ["sub-02_FLAIR"]
    assert len(collect_flair_runs(rich_bids, participant_labels=["01", "02"])) == 5
    assert _names(collect_flair_runs(rich_bids, session_labels=["1"])) == ["sub-01_ses-1_FLAIR"]


def test_unknown_labels_name_the_available_ones(rich_bids: Path) -> None:
    with pytest.raises(NoMatchError, match="03.*available: 01, 02") as err:
        collect_flair_runs(rich_bids, participant_labels=["01", "03"])
    assert err.value.exit_code == 18
    with pytest.raises(NoMatchError, match="session.*9.*available: 1, 2"):
        collect_flair_runs(rich_bids, session_labels=["9"])


def test_labels_that_exist_but_select_no_flair(rich_bids: Path) -> None:
    # sub-02 has no session: asking for sub-02 and session 1 matches nothing.
    with pytest.raises(NoMatchError, match="no FLAIR matches"):
        collect_flair_runs(rich_bids, participant_labels=["02"], session_labels=["1"])


@pytest.mark.parametrize(("filters", "expected"), [
    ({"acquisition": "3D"}, ["sub-01_ses-2_acq-3D_run-1_FLAIR", "sub-01_ses-2_acq-3D_run-2_FLAIR"]),
    ({"acquisition": "3D", "run": 2}, ["sub-01_ses-2_acq-3D_run-2_FLAIR"]),
    ({"acquisition": ["2D", "3D"], "run": [1]}, ["sub-01_ses-2_acq-3D_run-1_FLAIR"]),
    ({"acquisition": None, "session": "*"}, ["sub-01_ses-1_FLAIR"]),
    ({"session": None}, ["sub-02_FLAIR"]),
])
def test_entity_filters(rich_bids: Path, filters: dict, expected: list[str]) -> None:
    assert _names(collect_flair_runs(rich_bids, bids_filters=filters)) == expected


def test_filters_matching_nothing(rich_bids: Path) -> None:
    with pytest.raises(NoMatchError, match="filters"):
        collect_flair_runs(rich_bids, bids_filters={"acquisition": "7T"})


def test_no_flair_at_all(tmp_path: Path, make_bids_dataset) -> None:
    root = make_bids_dataset(tmp_path / "bids", runs=())  # only a T1w
    with pytest.raises(NoInputError, match="no FLAIR") as err:
        collect_flair_runs(root)
    assert err.value.exit_code == 66


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(NoInputError, match="does not exist"):
        collect_flair_runs(tmp_path / "nowhere")


def test_not_bids_unless_validation_is_skipped(tmp_path: Path, make_bids_dataset) -> None:
    root = make_bids_dataset(tmp_path / "bids", description=False)
    with pytest.raises(ValidationError, match="dataset_description") as err:
        collect_flair_runs(root)
    assert err.value.exit_code == 16
    assert len(collect_flair_runs(root, skip_validation=True)) == 3


def test_database_is_reused_until_the_dataset_changes(rich_bids: Path, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture, make_bids_dataset) -> None:
    db = tmp_path / "work" / "bids_db"
    caplog.set_level(logging.DEBUG, logger="bids_msseg.bids")
    assert len(collect_flair_runs(rich_bids, database_dir=db)) == 5
    assert len(list(db.glob("*/layout_index.sqlite"))) == 1
    assert "re-indexing" in caplog.text

    caplog.clear()
    assert len(collect_flair_runs(rich_bids, database_dir=db, participant_labels=["02"])) == 1
    assert "reused" in caplog.text and "re-indexing" not in caplog.text

    caplog.clear()
    make_bids_dataset(rich_bids, [("sub-03/anat/sub-03_FLAIR.nii.gz", {"seed": 7})], extra_files=())
    runs = collect_flair_runs(rich_bids, database_dir=db)
    assert "re-indexing" in caplog.text
    assert "sub-03_FLAIR" in _names(runs)
    assert len(list(db.glob("*/layout_index.sqlite"))) == 1  # the stale index was removed

    caplog.clear()  # another indexing option (validation) must not reuse the validated index
    collect_flair_runs(rich_bids, database_dir=db, skip_validation=True)
    assert "re-indexing" in caplog.text


def test_derivatives_are_neither_indexed_nor_fingerprinted(rich_bids: Path, tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture, make_bids_dataset) -> None:
    db = tmp_path / "work" / "bids_db"
    assert len(collect_flair_runs(rich_bids, database_dir=db)) == 5
    # Outputs written under <bids>/derivatives/ (allowed) change neither the runs nor the index.
    make_bids_dataset(rich_bids / "derivatives" / "bids_msseg",
                      [("sub-01/anat/sub-01_FLAIR.nii.gz", {"seed": 8})], extra_files=())
    caplog.set_level(logging.DEBUG, logger="bids_msseg.bids")
    assert len(collect_flair_runs(rich_bids, database_dir=db)) == 5
    assert "reused" in caplog.text


def test_no_flair_hints_at_the_suffix_case(tmp_path: Path) -> None:
    """Issue 14: ``sub-01_flair.nii.gz`` is not a BIDS FLAIR; say so."""
    (tmp_path / "dataset_description.json").write_text('{"Name": "x", "BIDSVersion": "1.9.0"}')
    anat = tmp_path / "sub-01" / "anat"
    anat.mkdir(parents=True)
    (anat / "sub-01_flair.nii.gz").write_bytes(b"")
    with pytest.raises(NoInputError, match=r"sub-01/anat/sub-01_flair.nii.gz: BIDS suffixes are case-sensitive"):
        collect_flair_runs(tmp_path, skip_validation=True)


@pytest.mark.parametrize("skip_validation", [False, True])
def test_lookalikes_are_named_with_or_without_validation(tmp_path: Path, make_bids_dataset, save_flair,
                                                         skip_validation: bool,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    """Issue 26 item 12: under --skip-bids-validation look-alikes vanished silently (a name with a trailing
    space in either mode)."""
    bids = make_bids_dataset(tmp_path / "bids", runs=(("sub-01/anat/sub-01_FLAIR.nii.gz", {"skull": False}),),
                             extra_files=())
    for relpath in ("sub-01.5/anat/sub-01.5_FLAIR.nii.gz", "sub-06/anat/sub-06_flair.nii.gz",
                    "sub-07/anat/sub-07_FLAIR.nii.gz "):
        save_flair(bids / relpath.strip(), skull=False).rename(bids / relpath)
    caplog.set_level(logging.WARNING, logger="bids_msseg")
    runs = collect_flair_runs(bids, skip_validation=skip_validation, database_dir=tmp_path / "db")
    assert [run.relpath for run in runs] == ["sub-01/anat/sub-01_FLAIR.nii.gz"]
    assert "sub-01.5_FLAIR.nii.gz looks like a FLAIR but is not used: a label that is not letters" in caplog.text
    assert "sub-06_flair.nii.gz looks like a FLAIR but is not used: the suffix and extension" in caplog.text
    assert "sub-07_FLAIR.nii.gz  looks like a FLAIR but is not used: its name starts or ends with a blank" \
        in caplog.text


@pytest.mark.parametrize("use_database", [False, True])
def test_folder_links_inside_the_dataset_are_skipped_with_a_warning(rich_bids: Path, tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture,
                                                                    use_database: bool) -> None:
    """``anat/latest -> .`` (a loop) and ``ses-latest -> ses-2`` (an alias) are named and skipped: every
    real FLAIR is found once, under its own path (the loop was refused with exit 16, issue 25)."""
    (rich_bids / "sub-02" / "anat" / "latest").symlink_to(".")
    (rich_bids / "sub-01" / "ses-1" / "anat" / "previous").symlink_to("..")
    (rich_bids / "sub-01" / "ses-latest").symlink_to("ses-2")
    with caplog.at_level(logging.WARNING, logger="bids_msseg.bids"):
        runs = collect_flair_runs(rich_bids, database_dir=tmp_path / "db" if use_database else None)
    assert _names(runs) == ["sub-01_ses-1_FLAIR", "sub-01_ses-2_acq-2D_FLAIR", "sub-01_ses-2_acq-3D_run-1_FLAIR",
                            "sub-01_ses-2_acq-3D_run-2_FLAIR", "sub-02_FLAIR"]
    assert all("latest" not in r.relpath and "previous" not in r.relpath for r in runs)
    for rel, why in (("sub-02/anat/latest", "a folder that contains it (a loop)"),
                     ("sub-01/ses-1/anat/previous", "a folder that contains it (a loop)"),
                     ("sub-01/ses-latest", "a link to sub-01/ses-2/ in the dataset")):
        assert any(rel in m and why in m and "is not used" in m for m in caplog.messages), (rel, caplog.messages)


def test_folder_link_out_of_the_dataset_is_followed(rich_bids: Path, tmp_path: Path) -> None:
    """Data kept elsewhere (``sub-02 -> /storage/sub-02``) and linked in is used as before."""
    (tmp_path / "storage").mkdir()
    (rich_bids / "sub-02").rename(tmp_path / "storage" / "sub-02")
    (rich_bids / "sub-02").symlink_to(tmp_path / "storage" / "sub-02")
    runs = collect_flair_runs(rich_bids)
    assert "sub-02_FLAIR" in _names(runs) and len(runs) == 5
