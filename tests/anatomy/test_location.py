"""Location classes of lesions on a hand-made anatomy: priorities, tolerances, confluent lesions."""

import numpy as np
import pandas as pd

from bids_msseg.anatomy.location import (
    TEMPLATE_CENTROID_COLUMNS,
    classify_lesions,
    location_summary,
    template_centroids,
    with_locations,
)
from bids_msseg.anatomy.registration import RunAnatomy
from bids_msseg.anatomy.template import REGIONS


def _anatomy() -> tuple[np.ndarray, np.ndarray]:
    """x = 0..59 (1 mm): ventricle 0-9, white matter 10-44, cortex 45-54; an infratentorial slab at z >= 30."""
    anatomy = np.full((60, 20, 40), REGIONS["white_matter"], np.int32)
    anatomy[0:10] = REGIONS["lateral_ventricles"]
    anatomy[45:55] = REGIONS["cortex"]
    anatomy[:, :, 30:] = REGIONS["infratentorial"]
    return anatomy, anatomy == REGIONS["lateral_ventricles"]


def _lesions(*boxes) -> np.ndarray:
    labels = np.zeros((60, 20, 40), np.int32)
    for i, (x0, x1, z0, z1) in enumerate(boxes, start=1):
        labels[x0:x1, 8:12, z0:z1] = i
    return labels


def test_each_class_and_the_contact_tolerances():
    anatomy, ventricles = _anatomy()
    labels = _lesions((11, 15, 5, 9),   # 1 mm from the ventricle: periventricular
                      (16, 20, 5, 9),   # 6 mm away: white matter in between -> subcortical
                      (40, 44, 5, 9),   # 1 mm from the cortex: juxtacortical
                      (47, 50, 15, 19),  # inside the cortex: (juxta)cortical
                      (25, 29, 32, 36),  # infratentorial
                      (25, 29, 15, 19))  # deep white matter
    result = classify_lesions(labels, 6, anatomy, ventricles, (1.0, 1.0, 1.0))
    assert result.classes == ["periventricular", "subcortical", "juxtacortical", "juxtacortical",
                              "infratentorial", "subcortical"]
    assert not any(result.confluent)


def test_a_confluent_lesion_is_periventricular_and_its_neighbour_keeps_its_class():
    anatomy, ventricles = _anatomy()
    # lesion 1 spans from the ventricle to the cortex; lesion 2, 3 mm away from it, is subcortical
    labels = _lesions((10, 46, 5, 9), (25, 29, 12, 16))
    result = classify_lesions(labels, 2, anatomy, ventricles, (1.0, 1.0, 1.0))
    assert result.classes == ["periventricular", "subcortical"]
    assert result.confluent == [True, False]
    assert result.touches[0] == "periventricular;juxtacortical"
    located = result.map(labels)
    assert set(np.unique(located[labels == 1])) == {1} and set(np.unique(located[labels == 2])) == {4}


def test_summary_counts_volumes_and_mcdonald_regions():
    anatomy, ventricles = _anatomy()
    labels = _lesions((11, 15, 5, 9), (40, 44, 5, 9), (25, 29, 15, 19))
    result = classify_lesions(labels, 3, anatomy, ventricles, (1.0, 1.0, 1.0))
    table = pd.DataFrame({"index": [1, 2, 3], "volume_mm3": [64.0, 64.0, 64.0]})
    summary = location_summary(table, result)
    assert summary["periventricular_count"] == 1 and summary["juxtacortical_count"] == 1
    assert summary["subcortical_volume_ml"] == 0.064 and summary["infratentorial_count"] == 0
    assert summary["mcdonald_regions"] == 2
    unknown = location_summary(table, None)
    assert unknown["mcdonald_regions"] is None and unknown["periventricular_count"] is None
    assert with_locations(table, None)["location"].isna().all()


def test_template_centroid_columns_are_na_without_a_registration():
    table = pd.DataFrame({"index": [1, 2], "centroid_x_mm": [1.0, 2.0], "centroid_y_mm": [0.0, 0.0],
                          "centroid_z_mm": [3.0, 4.0]})
    assert template_centroids(RunAnatomy(status="failed: no brain"), table) is None
    plain = with_locations(table, None)
    assert plain[list(TEMPLATE_CENTROID_COLUMNS)].isna().all().all()
    located = with_locations(table, None, np.array([[10.0, -20.0, 5.5], [11.0, -21.0, 6.5]]))
    assert located["centroid_z_template_mm"].tolist() == [5.5, 6.5]
    assert located["centroid_x_mm"].tolist() == [1.0, 2.0], "scanner centroids kept"
