"""Anatomy of a run: one template registration per FLAIR, reused by everything that needs to know where a voxel is.

=================== ==================================================================================
module              what
=================== ==================================================================================
``core``            :class:`LabelledTemplate`, :func:`register_template` (labels of any template on a
                    run's grid), :func:`resample_labels`, :func:`lesion_free_regions` (the default
                    model's specificity measure), :func:`neuromorphometrics_template` (dev only, CC BY-NC)
``template``        the product's template: MNI152 2009a (nilearn) with derived location labels
``registration``    :func:`register_run`: one seeded registration, labels on the run's grid, template-space
                    resampling, the FLAIR-refined ventricles; failures become a status, never an error
``location``        the McDonald/MAGNIMS location class of each lesion (docs/lesion_location.md)
=================== ==================================================================================
"""

from bids_msseg.anatomy.core import (
    NEUROMORPHOMETRICS_GROUPS,
    LabelledTemplate,
    lesion_free_regions,
    neuromorphometrics_template,
    region_mask,
    register_template,
    resample_labels,
)

__all__ = ["NEUROMORPHOMETRICS_GROUPS", "LabelledTemplate", "lesion_free_regions", "neuromorphometrics_template",
           "region_mask", "register_template", "resample_labels"]
