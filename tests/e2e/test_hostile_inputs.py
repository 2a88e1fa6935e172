"""Hostile and unlucky inputs, round two (issue 18): no hang, no silent loss, no traceback.

Each test is one row of docs/bad_inputs.md. The two hangs run ``python -m bids_msseg`` in a
subprocess with a timeout, so a regression fails instead of blocking the suite.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bids_msseg.cli.run import main
from tests.helpers import DEFAULT_RUNS, REPO_ROOT

#: A hang is a test failure after this many seconds.
HANG_TIMEOUT_S = 120


def _main(bids: Path, tmp_path: Path, *extra: str, work: Path | None = None) -> int:
    return main([str(bids), str(tmp_path / "out"), "participant", "-w", str(work or tmp_path / "work"),
                 "--nprocs", "1", "--omp-nthreads", "1", *extra])


def _subprocess(argv: list[str], timeout: float = HANG_TIMEOUT_S) -> tuple[int, str, float]:
    """Run ``python -m bids_msseg`` in its own session; kill its process group on timeout (a hang)."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1", NIPYPE_NO_ET="1")
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "bids_msseg", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, _ = proc.communicate()
        pytest.fail(f"bids_msseg hung (killed after {timeout} s); last output:\n{out[-3000:]}")
    return proc.returncode, out, time.monotonic() - start


# ------------------------------------------------------------------------------------- hangs


def test_symlink_loop_in_the_dataset_is_skipped_not_walked_forever(tmp_path: Path, make_bids_dataset,
                                                                  tiny_bundle: Path) -> None:
    """``anat/latest -> .`` is named in a warning and skipped; every real FLAIR is segmented (issue 25)."""
    bids = make_bids_dataset(tmp_path / "bids")
    os.symlink(".", bids / "sub-02/anat/latest")
    os.symlink(".", bids / "sub-02/anat/previous")
    rc, out, seconds = _subprocess([str(bids), str(tmp_path / "out"), "participant", "-w", str(tmp_path / "w"),
                                    "--model", str(tiny_bundle), "--nprocs", "1", "--omp-nthreads", "1",
                                    "--no-location", "--no-longitudinal"], timeout=HANG_TIMEOUT_S)
    assert rc == 0, out
    for link in ("sub-02/anat/latest", "sub-02/anat/previous"):
        assert f"{link} is not used: a link to" in out and "(a loop)" in out, out
    masks = sorted(p.name for p in (tmp_path / "out").rglob("*_space-orig_label-lesion_mask.nii.gz"))
    assert masks == sorted(Path(relpath).name.replace("_FLAIR.nii.gz", "_space-orig_label-lesion_mask.nii.gz")
                           for relpath, _ in DEFAULT_RUNS)
    assert not list((tmp_path / "out").rglob("latest")) and seconds < HANG_TIMEOUT_S


@pytest.mark.slow
def test_full_work_directory_fails_the_runs_instead_of_hanging(tmp_path: Path, make_bids_dataset,
                                                                tiny_bundle: Path) -> None:
    """A 3 MB tmpfs as -w with 3 runs: nipype's callback raised and the scheduler waited forever."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs to mount a 3 MB tmpfs (root)")
    try:
        runs = tuple((f"sub-0{i}/anat/sub-0{i}_FLAIR.nii.gz", {"seed": i, "skull": False}) for i in (1, 2, 3))
        bids = make_bids_dataset(tmp_path / "bids", runs=runs, extra_files=())
        rc, out, seconds = _subprocess([str(bids), str(tmp_path / "out"), "participant", "-w", str(mount / "w"),
                                        "--model", str(tiny_bundle), "--nprocs", "1", "--omp-nthreads", "1"])
    finally:
        subprocess.run(["umount", str(mount)], check=False)
    assert rc == 1, out
    assert "failed, 0 skipped" in out
    assert "the disk is full" in out
    assert seconds < HANG_TIMEOUT_S


# --------------------------------------------------------------------- silent loss: collisions


@pytest.mark.parametrize("second", ["sub-01/anat/sub-01_FLAIR.nii", "sub-01/anat/sub-01_desc-preproc_FLAIR.nii.gz"])
def test_runs_whose_outputs_would_collide_are_refused(second: str, tmp_path: Path, make_bids_dataset, save_flair,
                                                      tiny_bundle: Path, caplog: pytest.LogCaptureFixture) -> None:
    bids = make_bids_dataset(tmp_path / "bids", runs=(("sub-01/anat/sub-01_FLAIR.nii.gz", {"skull": False}),),
                             extra_files=())
    save_flair(bids / second, skull=False, seed=5)
    caplog.set_level(logging.INFO, logger="bids_msseg")
    assert _main(bids, tmp_path, "--model", str(tiny_bundle), "--skip-bids-validation") == 1
    assert "0 ok, 2 failed" in caplog.text
    assert "its outputs would have the same names as those of" in caplog.text
    assert len(list((tmp_path / "out/logs").glob("crash-*-validate*.txt"))) == 2
    assert not list((tmp_path / "out").glob("sub-*"))


# ------------------------------------------------------------------- tracebacks -> exit codes


def test_dataset_description_that_is_a_json_array_exit_16(tmp_path: Path, synthetic_bids: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    (synthetic_bids / "dataset_description.json").write_text("[1, 2, 3]")
    for extra in ((), ("--skip-bids-validation",)):
        caplog.clear()
        assert _main(synthetic_bids, tmp_path, *extra) == 16
        assert "holds a JSON list, not an object" in caplog.text


def test_deeply_nested_sidecar_costs_only_its_run(tmp_path: Path, synthetic_bids: Path,
                                                  tiny_bundle: Path, caplog: pytest.LogCaptureFixture) -> None:
    from bids_msseg.bids import collect_flair_runs

    (synthetic_bids / "sub-02/anat/sub-02_FLAIR.json").write_text("[" * 100_000 + "]" * 100_000)
    runs = collect_flair_runs(synthetic_bids, database_dir=tmp_path / "db")
    problems = {r.relpath: r.problem for r in runs}
    assert len(runs) == 3
    assert "nested too deeply" in problems["sub-02/anat/sub-02_FLAIR.nii.gz"]
    assert sum(p is None for p in problems.values()) == 2


def test_deeply_nested_filter_file_exit_64(tmp_path: Path, synthetic_bids: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    filters = tmp_path / "filters.json"
    filters.write_text('{"flair": ' + "[" * 50_000 + "]" * 50_000 + "}")
    assert _main(synthetic_bids, tmp_path, "--bids-filter-file", str(filters)) == 64
    assert "nested too deeply" in capsys.readouterr().err


def test_non_ascii_subject_label_is_refused_alone(tmp_path: Path, synthetic_bids: Path, save_flair,
                                                  tiny_bundle: Path, caplog: pytest.LogCaptureFixture) -> None:
    from bids_msseg.bids import collect_flair_runs
    from bids_msseg.validate import screen_runs

    save_flair(synthetic_bids / "sub-é02/anat/sub-é02_FLAIR.nii.gz")
    runs = collect_flair_runs(synthetic_bids, skip_validation=True, database_dir=tmp_path / "db")
    assert {r.subject for r in runs} >= {"01", "02"}
    good, rejected = screen_runs(runs, tmp_path / "out")
    assert [r.run.relpath for r in rejected] == ["sub-é02/anat/sub-é02_FLAIR.nii.gz"]
    assert len(good) == 3


def test_work_dir_not_writable_exit_73(tmp_path: Path, synthetic_bids: Path,
                                       caplog: pytest.LogCaptureFixture) -> None:
    if os.geteuid() == 0:  # root writes through permission bits; /proc refuses even root
        work = Path("/proc/self")
    else:
        work = tmp_path / "readonly"
        work.mkdir(mode=0o500)
    assert _main(synthetic_bids, tmp_path, work=work) == 73
    assert "cannot write into the work directory" in caplog.text


def test_work_dir_equal_to_the_output_exit_64(tmp_path: Path, synthetic_bids: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    assert _main(synthetic_bids, tmp_path, work=tmp_path / "out") == 64
    assert "is the output directory" in caplog.text


def test_work_dir_that_others_can_write_is_refused_73(tmp_path: Path, synthetic_bids: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    work = tmp_path / "shared_work"
    work.mkdir()
    work.chmod(0o777)
    assert _main(synthetic_bids, tmp_path, work=work) == 73
    assert "writable by others" in caplog.text


def test_new_work_dir_is_private(tmp_path: Path) -> None:
    from bids_msseg.workdirs import check_work_dir

    check_work_dir(tmp_path / "bids", tmp_path / "new_work")
    assert (tmp_path / "new_work").stat().st_mode & 0o077 == 0


def test_planted_symlink_is_never_truncated_by_the_write_probe(tmp_path: Path, synthetic_bids: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    for pid in range(os.getpid() - 5, os.getpid() + 50):  # the old probe's name was predictable
        os.symlink(victim, out / f".bids_msseg_write_test_{pid}")
    from bids_msseg.workdirs import check_output_dir

    check_output_dir(synthetic_bids, out)
    assert victim.read_text() == "precious"


def test_unreadable_file_gets_a_permission_hint(tmp_path: Path, save_flair) -> None:
    from bids_msseg.errors import InputError
    from bids_msseg.validate import screen_flair

    path = save_flair(tmp_path / "sub-01_FLAIR.nii.gz")
    if os.geteuid() == 0:
        pytest.skip("root reads any file")
    path.chmod(0)
    with pytest.raises(InputError, match="cannot be read .*permissions"):
        screen_flair(path)


def test_damaged_nipype_result_file_is_recomputed(tmp_path: Path) -> None:
    from bids_msseg.workdirs import discard_damaged_cache

    node = tmp_path / "cache/wf/single_flair_sub_01_FLAIR_wf/preprocess"
    good = tmp_path / "cache/wf/single_flair_sub_02_FLAIR_wf/preprocess"
    for folder in (node, good):
        folder.mkdir(parents=True)
        with gzip.open(folder / "result_preprocess.pklz", "wb") as fh:
            fh.write(os.urandom(200_000))
    data = (node / "result_preprocess.pklz").read_bytes()
    (node / "result_preprocess.pklz").write_bytes(data[: len(data) // 2])
    wf = tmp_path / "cache/wf"
    assert discard_damaged_cache(wf, only=["single_flair_sub_02_FLAIR_wf"]) == []  # another job's run: left alone
    assert discard_damaged_cache(wf, only=["single_flair_sub_01_FLAIR_wf", "single_flair_sub_02_FLAIR_wf"]) == [node]
    assert not node.exists() and (good / "result_preprocess.pklz").is_file()


# ------------------------------------------------------------------------------------ smaller


def test_flair_lookalikes_are_named(tmp_path: Path, synthetic_bids: Path, save_flair,
                                    caplog: pytest.LogCaptureFixture) -> None:
    from bids_msseg.bids import collect_flair_runs

    (synthetic_bids / "sub-02/anat/sub-02_acq-dir_FLAIR.nii.gz").mkdir()
    save_flair(synthetic_bids / "sub-02/anat/sub-02_acq-upper_FLAIR.NII.GZ")
    save_flair(synthetic_bids / "sub-02/anat/sub-02_acq-ü_FLAIR.nii.gz")
    caplog.set_level(logging.INFO, logger="bids_msseg")
    runs = collect_flair_runs(synthetic_bids, database_dir=tmp_path / "db")
    assert len(runs) == 3
    assert "sub-02_acq-dir_FLAIR.nii.gz looks like a FLAIR but is not used: a directory" in caplog.text
    assert "sub-02_acq-upper_FLAIR.NII.GZ looks like a FLAIR but is not used: the suffix and extension" \
        in caplog.text
    assert "sub-02_acq-ü_FLAIR.nii.gz looks like a FLAIR but is not used: a label" in caplog.text


def test_huge_sidecar_is_not_copied_into_the_index(tmp_path: Path, synthetic_bids: Path) -> None:
    from bids_msseg.bids import collect_flair_runs

    (synthetic_bids / "sub-02/anat/sub-02_FLAIR.json").write_text(json.dumps({"Junk": "x" * 5_000_000}))
    runs = collect_flair_runs(synthetic_bids, database_dir=tmp_path / "db")
    problems = {r.relpath: r.problem for r in runs}
    assert "more than the 1000000 accepted" in problems["sub-02/anat/sub-02_FLAIR.nii.gz"]
    size = sum(p.stat().st_size for p in tmp_path.rglob("*") if p.is_file() and "bids" not in p.parts)
    assert size < 1_000_000  # the work directory (was 4x the sidecar's size)


# ---------------------------------------------------------------- wrong answers without a warning


def _stripped_head(tmp_path: Path, name: str = "sub-01_FLAIR.nii.gz", scale: float = 1.0, **kwargs):
    import nibabel as nib
    import numpy as np

    from tests.helpers import head_like_flair

    data = head_like_flair((64, 72, 56), seed=4, skull=False).astype(np.float32)
    affine = np.diag([3.0 * scale, 3.0 * scale, 3.0 * scale, 1.0])
    img = nib.Nifti1Image(data, affine)
    for key, value in kwargs.items():
        img.header[key] = value
    path = tmp_path / name
    nib.save(img, str(path))
    return path, data, affine


def test_one_extreme_voxel_is_clipped_not_taken_for_the_whole_range(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    import nibabel as nib

    from bids_msseg.preproc import preprocess_flair

    _, data, affine = _stripped_head(tmp_path)
    for value, count in ((1e8, 1), (1e30, 5)):
        spoiled = data.copy()
        spoiled.ravel()[:: spoiled.size // count][:count] = value
        path = tmp_path / f"spoiled_{count}.nii.gz"
        nib.save(nib.Nifti1Image(spoiled, affine), str(path))
        result = preprocess_flair(path)
        assert not result.decisions.skullstrip  # still seen as skull-stripped, its brain found
        assert 300 < result.brain_volume_ml < 2500
        assert "clipped" in caplog.text


def test_negative_scaling_and_integer_wrap_are_refused(tmp_path: Path) -> None:
    import nibabel as nib
    import numpy as np

    from bids_msseg.errors import InputError
    from bids_msseg.preproc.orient import load_flair

    path, data, affine = _stripped_head(tmp_path, scl_slope=-1.0, scl_inter=0.0)
    with pytest.raises(InputError, match="negative"):
        load_flair(path)
    wrapped = (data.astype(np.int64) * 60).astype(np.int16)  # 650 * 60 > 32767: lesions wrap around
    nib.save(nib.Nifti1Image(wrapped, affine), str(tmp_path / "wrap.nii.gz"))
    with pytest.raises(InputError, match="wrapped around"):
        load_flair(tmp_path / "wrap.nii.gz")


def test_small_brain_gets_the_right_hint_and_an_override(tmp_path: Path) -> None:
    from bids_msseg.errors import InputError
    from bids_msseg.preproc import preprocess_flair

    path, _, _ = _stripped_head(tmp_path, scale=0.6)  # ~ a quarter of the volume: an infant-size brain
    with pytest.raises(InputError, match="lower --min-brain-volume") as info:
        preprocess_flair(path)
    assert "force" not in str(info.value) or "--skullstrip on" in str(info.value)
    result = preprocess_flair(path, min_brain_ml=100)
    assert result.brain_volume_ml < 300


def test_empty_huge_volume_is_refused_at_screening_in_seconds(tmp_path: Path) -> None:
    import nibabel as nib
    import numpy as np

    from bids_msseg.errors import InputError
    from bids_msseg.validate import screen_flair

    img = nib.Nifti1Image(np.zeros((1024, 1024, 190), np.uint8), np.eye(4))
    path = tmp_path / "sub-01_FLAIR.nii.gz"
    nib.save(img, str(path))
    del img
    start = time.monotonic()
    with pytest.raises(InputError, match="every voxel is 0"):
        screen_flair(path)
    assert time.monotonic() - start < 20


def _mni_t1(tmp_path: Path) -> Path:
    import nibabel as nib
    import numpy as np

    datasets = pytest.importorskip("nilearn.datasets")
    image = pytest.importorskip("nilearn.image")
    t1 = datasets.load_mni152_template(resolution=2)
    mask = image.resample_to_img(datasets.load_mni152_brain_mask(resolution=2), t1, interpolation="nearest")
    data = np.asarray(t1.dataobj, np.float32) * (np.asarray(mask.dataobj) > 0)  # skull-stripped T1
    path = tmp_path / "sub-01_FLAIR.nii.gz"
    nib.save(nib.Nifti1Image(data, t1.affine), str(path))
    return path


def test_t1_named_flair_is_refused_unless_forced(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from bids_msseg.errors import InputError
    from bids_msseg.preproc import preprocess_flair

    path = _mni_t1(tmp_path)
    with pytest.raises(InputError, match="does not look like a FLAIR.*as in T1.*--force-contrast"):
        preprocess_flair(path)
    result = preprocess_flair(path, force_contrast=True)
    assert "as in T1" in result.contrast_warning
    assert "segmented anyway" in caplog.text


def test_inverted_flair_is_refused(tmp_path: Path, shared_data: Path) -> None:
    import nibabel as nib
    import numpy as np

    from bids_msseg.errors import InputError
    from bids_msseg.preproc import preprocess_flair

    img = nib.load(str(shared_data / "3d-mr-ms/patient26/patient26_FLAIR_mni.nii.gz"))
    data = np.asarray(img.dataobj, np.float32)
    brain = data > 0
    lo, hi = np.percentile(data[brain], [0.5, 99.5])
    data[brain] = hi + lo - np.clip(data[brain], lo, hi)
    nib.save(nib.Nifti1Image(data, img.affine), str(tmp_path / "inverted.nii.gz"))
    with pytest.raises(InputError, match="does not look like a FLAIR.*CSF looks bright"):
        preprocess_flair(tmp_path / "inverted.nii.gz")


@pytest.mark.parametrize("name", ["3d-mr-ms/patient26/patient26_FLAIR_mni.nii.gz", "mslesseg/P14/P14_T1_FLAIR.nii.gz",
                                  "mslesseg/P14/P14_T2_FLAIR.nii.gz", "mslesseg/P14/P14_T3_FLAIR.nii.gz"])
def test_real_skull_stripped_flairs_pass_the_contrast_screen(name: str, shared_data: Path) -> None:
    from bids_msseg.preproc import preprocess_flair

    result = preprocess_flair(shared_data / name)
    assert result.contrast_warning is None


@pytest.mark.slow
def test_real_raw_flairs_pass_the_contrast_screen(shared_data: Path) -> None:
    """The 9 raw FLAIRs, the 3 ISBI-2015 FLAIRs and the GG-853 template (brain extraction first: about a
    minute each); the MS3SEG FLAIRs: tests/preproc/test_contrast.py."""
    from bids_msseg.preproc import preprocess_flair

    paths = sorted((shared_data / "raw-flair").glob("*_FLAIR.nii.gz"))
    paths += sorted((shared_data / "isbi2015").glob("*/*_FLAIR.nii.gz"))
    paths.append(shared_data / "flair-template/GG-853-FLAIR-2.0mm.nii.gz")
    for path in paths:
        assert preprocess_flair(path).contrast_warning is None, path


@pytest.mark.slow
def test_forced_t1_run_carries_its_warning_to_sidecar_report_and_group_table(
        tmp_path: Path, make_bids_dataset, tiny_bundle: Path, caplog: pytest.LogCaptureFixture) -> None:
    import pandas as pd

    from bids_msseg.derivatives import derivative_paths

    bids = make_bids_dataset(tmp_path / "bids", runs=(), extra_files=())
    target = bids / "sub-01/anat/sub-01_FLAIR.nii.gz"
    target.parent.mkdir(parents=True)
    shutil.move(_mni_t1(tmp_path), target)
    caplog.set_level(logging.INFO, logger="bids_msseg")
    assert _main(bids, tmp_path, "--model", str(tiny_bundle)) == 1
    assert "does not look like a FLAIR" in caplog.text and "--force-contrast" in caplog.text
    assert _main(bids, tmp_path, "--model", str(tiny_bundle), "--force-contrast") == 0
    paths = derivative_paths(tmp_path / "out", "sub-01/anat/sub-01_FLAIR.nii.gz")
    assert "as in T1" in json.loads(paths["mask_json"].read_text())["PreprocessingDecisions"]["contrast_warning"]
    assert "as in T1" in paths["report"].read_text()
    assert main([str(bids), str(tmp_path / "out"), "group", "-w", str(tmp_path / "work")]) == 0
    table = pd.read_csv(tmp_path / "out/group_lesions.tsv", sep="\t")
    assert "as in T1" in table.loc[0, "contrast_warning"]


def test_every_json_the_app_reads_survives_deep_nesting(tmp_path: Path, synthetic_bids: Path,
                                                        tiny_bundle: Path) -> None:
    """The class behind the nested sidecar and filter file: each JSON read gives a message, not a traceback."""
    from bids_msseg.masks import generated_by_us
    from bids_msseg.model.bundle import BundleError, read_card

    deep = "[" * 100_000 + "]" * 100_000
    folder = tmp_path / "derivatives_x"
    folder.mkdir()
    (folder / "dataset_description.json").write_text(deep)
    assert generated_by_us(folder) is False
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    (bundle / "model.json").write_text(deep)
    with pytest.raises(BundleError):
        read_card(bundle)
    out = tmp_path / "out"
    out.mkdir()
    (out / "dataset_description.json").write_text(deep)
    assert _main(synthetic_bids, tmp_path, "--model", str(tiny_bundle)) == 73  # refuses to replace it
