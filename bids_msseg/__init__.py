"""bids_msseg: FLAIR-only multiple-sclerosis lesion segmentation as a BIDS-App.

The method follows Badea & Popa (2024), "Toward Generalizable MS Lesion Segmentation Models":
quantile-normalized axial FLAIR slices segmented by a UNet++ with a resnet18 encoder.
"""

__version__ = "0.2.5"

__all__ = ["__version__"]
