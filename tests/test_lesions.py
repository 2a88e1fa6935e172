"""The one lesion definition: labelling, minimum size and the lesion table."""

import numpy as np
import pytest

from bids_msseg.lesions import LesionDefinition, binarize, label_lesions, label_statistics, lesion_table


def _two_lesions():
    m = np.zeros((20, 20, 20), bool)
    m[2:6, 2:6, 2:6] = True  # 64 voxels
    m[10, 10, 10] = True  # 1 voxel
    m[11, 11, 11] = True  # touches the previous one by a corner only
    return m


def test_connectivity_changes_the_count():
    m = _two_lesions()
    _, n26 = label_lesions(m, 1.0, LesionDefinition(connectivity=3, min_size_mm3=0))
    _, n6 = label_lesions(m, 1.0, LesionDefinition(connectivity=1, min_size_mm3=0))
    assert (n26, n6) == (2, 3)


def test_minimum_size_in_mm3_uses_voxel_volume():
    m = _two_lesions()
    labels, n = label_lesions(m, 1.0, LesionDefinition(connectivity=3, min_size_mm3=3))
    assert n == 1 and labels.max() == 1 and labels.astype(bool).sum() == 64
    _, n = label_lesions(m, 2.0, LesionDefinition(connectivity=3, min_size_mm3=3))
    assert n == 2  # 2 voxels of 2 mm3 = 4 mm3 >= 3


def test_labels_are_numbered_largest_first():
    m = _two_lesions()
    labels, n = label_lesions(m, 1.0, LesionDefinition(connectivity=1, min_size_mm3=0))
    sizes = [int((labels == i).sum()) for i in range(1, n + 1)]
    assert sizes == sorted(sizes, reverse=True)


def test_binarize_and_table():
    prob = _two_lesions().astype(np.float32) * 0.9
    affine = np.diag([2.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = [-10, -20, -30]
    mask, labels, n = binarize(prob, 0.5, 2.0, LesionDefinition(3, 5.0))
    assert n == 1 and mask.sum() == 64
    table = lesion_table(labels, n, affine, prob)
    row = table.iloc[0]
    assert row["voxels"] == 64 and row["volume_mm3"] == pytest.approx(128.0)
    assert row["centroid_x_mm"] == pytest.approx(3.5 * 2 - 10)
    assert row["max_probability"] == pytest.approx(0.9, abs=1e-4)


def test_invalid_definition():
    with pytest.raises(ValueError):
        LesionDefinition(connectivity=4)


def test_seed_threshold_keeps_only_lesions_with_a_confident_core():
    """Hysteresis: a faint blob goes, a confident lesion keeps its full extent at the lower threshold."""
    prob = np.zeros((20, 20, 20), np.float32)
    prob[2:6, 2:6, 2:6] = 0.6  # faint everywhere: dropped
    prob[10:16, 10:16, 10:16] = 0.6
    prob[12:14, 12:14, 12:14] = 0.95  # a confident core: kept with all of its 0.6 extent
    definition = LesionDefinition(3, 1.0)
    mask, _, n = binarize(prob, 0.5, 1.0, definition, seed_threshold=0.9)
    assert n == 1 and mask.sum() == 6**3 and not mask[3, 3, 3]
    plain, _, n_plain = binarize(prob, 0.5, 1.0, definition)
    assert n_plain == 2 and plain.sum() == 6**3 + 4**3
    # A seed threshold at or below the threshold changes nothing.
    assert np.array_equal(binarize(prob, 0.5, 1.0, definition, seed_threshold=0.5)[0], plain)


def test_label_statistics_match_scipy_bit_for_bit() -> None:
    """The one-pass statistics give scipy.ndimage's numbers exactly (the lesion table must not change)."""
    from scipy import ndimage

    rng = np.random.default_rng(3)
    prob = ndimage.gaussian_filter(rng.random((40, 50, 30)).astype(np.float32), 1.5)
    prob = (prob - prob.min()) / (prob.max() - prob.min())
    labels, n = label_lesions(prob > 0.6, 1.0, LesionDefinition(3, 3.0))
    assert n > 10
    index = np.arange(1, n + 1)
    ones = np.ones(labels.shape, np.uint8)
    stats = label_statistics(labels, n, prob)
    assert np.array_equal(stats["voxels"], ndimage.sum_labels(ones, labels, index).astype(int))
    assert np.array_equal(stats["centroid"], np.array(ndimage.center_of_mass(ones, labels, index)))
    assert np.array_equal(stats["mean"], ndimage.mean(prob, labels, index))
    assert np.array_equal(stats["max"], np.asarray(ndimage.maximum(prob, labels, index), np.float64))


def test_label_statistics_empty_and_missing_labels() -> None:
    labels = np.zeros((4, 5, 6), np.int32)
    empty = label_statistics(labels, 0, np.zeros(labels.shape))
    assert empty["voxels"].shape == (0,) and empty["centroid"].shape == (0, 3)
    labels[1, 2, 3] = 1
    stats = label_statistics(labels, 2, np.full(labels.shape, 0.5))
    assert stats["voxels"].tolist() == [1, 0]
    assert stats["centroid"][0].tolist() == [1.0, 2.0, 3.0] and np.isnan(stats["centroid"][1]).all()
    assert stats["max"].tolist() == [0.5, 0.0]


def test_thick_slice_scans_may_have_their_own_seed_threshold(tmp_path):
    """The card's thick-slice seed applies to scans with a voxel side of 2 mm or more; --seed-threshold alone
    overrides both; --seed-threshold-thick only the thick one; an unreadable header falls back to the seed."""
    import nibabel as nib

    from bids_msseg.lesions import seed_threshold_for, seed_threshold_of_image
    from bids_msseg.model.bundle import ModelCard
    from bids_msseg.settings import Options, SegmentationSettings

    assert seed_threshold_for((1, 1, 4.4), 0.97, 0.9) == 0.9 and seed_threshold_for((1, 1, 1), 0.97, 0.9) == 0.97
    assert seed_threshold_for((1, 1, 4.4), 0.97) == 0.97
    card = ModelCard(architecture={"name": "Unet"}, threshold=0.6, seed_threshold=0.97, seed_threshold_thick=0.9)
    thick, thin, broken = tmp_path / "thick.nii.gz", tmp_path / "thin.nii.gz", tmp_path / "broken.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.diag([0.9, 0.9, 6.5, 1])), str(thick))
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.diag([1.0, 1.0, 1.0, 1])), str(thin))
    broken.write_bytes(b"not an image")

    def seeds(card: ModelCard = card, **given) -> tuple[float, float, float]:
        s = SegmentationSettings.resolve(Options(tmp_path, tmp_path / "out", "participant", **given), card)
        return tuple(seed_threshold_of_image(path, s.seed_threshold, s.seed_threshold_thick)
                     for path in (thick, thin, broken))

    assert seeds() == (0.9, 0.97, 0.97)
    assert seeds(seed_threshold=0.95) == (0.95, 0.95, 0.95)  # one seed for every scan
    assert seeds(seed_threshold=0.95, seed_threshold_thick=0.8) == (0.8, 0.95, 0.95)
    assert seeds(seed_threshold_thick=0.8) == (0.8, 0.97, 0.97)
    assert seeds(ModelCard(architecture={"name": "Unet"}, seed_threshold=0.97)) == (0.97, 0.97, 0.97)
