"""The segmentation network, its self-describing bundle and slice-wise inference."""
