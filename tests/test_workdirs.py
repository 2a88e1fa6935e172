"""Output and work directory checks (bids_msseg/workdirs.py) not already covered by tests/cli/test_run.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bids_msseg.errors import OutputError
from bids_msseg.workdirs import check_output_dir


def _bids(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text('{"Name": "x", "BIDSVersion": "1.10.0"}')
    return root


@pytest.mark.parametrize("link", ["logs", "sub-02", "sub-01/anat"])
def test_folder_links_leading_out_of_the_output_are_refused(tmp_path: Path, link: str) -> None:
    """Issue 26 item 6: crash files, CITATION and a subject's outputs were written through planted links."""
    bids, out, elsewhere = _bids(tmp_path / "bids"), tmp_path / "out", tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / link).parent.mkdir(parents=True, exist_ok=True)
    os.symlink(elsewhere, out / link)
    with pytest.raises(OutputError, match=f"{out.resolve() / link} is a symbolic link to {elsewhere}, outside the "
                                          "output directory"):
        check_output_dir(bids, out)
    assert not list(elsewhere.iterdir())


def test_links_that_stay_inside_or_point_to_files_are_accepted(tmp_path: Path) -> None:
    bids, out = _bids(tmp_path / "bids"), tmp_path / "out"
    (out / "sub-01").mkdir(parents=True)
    (tmp_path / "file.txt").write_text("x")
    os.symlink(out / "sub-01", out / "latest")
    os.symlink(tmp_path / "file.txt", out / "note.txt")  # replaced by a rename when written, never followed
    real = tmp_path / "real_out"
    real.mkdir()
    os.symlink(real, tmp_path / "out_link")  # the output directory itself may be a link
    check_output_dir(bids, out)
    check_output_dir(bids, tmp_path / "out_link")


def test_a_dangling_folder_link_is_refused(tmp_path: Path) -> None:
    bids, out = _bids(tmp_path / "bids"), tmp_path / "out"
    out.mkdir()
    os.symlink(tmp_path / "gone", out / "logs")
    with pytest.raises(OutputError, match="logs is a symbolic link to"):
        check_output_dir(bids, out)


@pytest.mark.parametrize("relation", ["parent", "grandparent"])
def test_an_output_containing_the_dataset_exit_73(tmp_path: Path, relation: str) -> None:
    """Issue 26 item 7: ``bids_msseg bids . participant`` wrote beside the dataset and appended to its .bidsignore."""
    bids = _bids(tmp_path / "a" / "bids")
    out = bids.parent if relation == "parent" else bids.parent.parent
    with pytest.raises(OutputError) as err:
        check_output_dir(bids, out)
    assert err.value.exit_code == 73
    assert f"contains the BIDS dataset {bids}" in str(err.value)
    assert sorted(p.name for p in out.iterdir()) == (["bids"] if relation == "parent" else ["a"])


@pytest.mark.parametrize("target", ["file", "/dev/null"])
def test_an_output_that_is_a_file_exit_73(tmp_path: Path, target: str) -> None:
    """Issue 26 item 15: OUT being a regular file or /dev/null gave "File exists"."""
    bids = _bids(tmp_path / "bids")
    out = tmp_path / "out.txt" if target == "file" else Path(target)
    if target == "file":
        out.write_text("x")
    kind = "a regular file" if target == "file" else "a device or special file"
    with pytest.raises(OutputError, match=f"exists and is {kind}, not a folder"):
        check_output_dir(bids, out)


def test_the_temporary_folder_is_private_to_the_run_and_removed(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 26 item 8: what libraries leave in the temporary folder goes with the run's own folder."""
    import tempfile

    from bids_msseg.workdirs import temporary_folder_in

    monkeypatch.setenv("TMPDIR", str(tmp_path / "system_tmp"))
    (tmp_path / "system_tmp").mkdir()
    work = tmp_path / "work"
    work.mkdir()
    before = tempfile.tempdir
    with temporary_folder_in(work) as folder:
        assert folder.parent == work and os.environ["TMPDIR"] == str(folder)
        assert tempfile.gettempdir() == str(folder)
        leftover = tempfile.mktemp(suffix="GenericAffine.mat")  # what ANTs does with its default prefix
        Path(leftover).write_text("x")
        (folder / "torchinductor_user").mkdir()
    assert not folder.exists() and list(work.iterdir()) == []
    assert os.environ["TMPDIR"] == str(tmp_path / "system_tmp") and tempfile.tempdir == before
