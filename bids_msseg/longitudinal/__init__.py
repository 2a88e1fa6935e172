"""Longitudinal lesion change between a subject's sessions (docs/longitudinal.md).

* :mod:`~bids_msseg.longitudinal.registration`: ITK affines, resampling, ANTs rigid registration;
* :mod:`~bids_msseg.longitudinal.change`: the change rule (new, enlarging, shrinking, disappearing, stable);
* :mod:`~bids_msseg.longitudinal.outputs`: derivative names and writing;
* :mod:`~bids_msseg.longitudinal.pipeline`: the subject-level step run after the participant runs;
* :mod:`~bids_msseg.longitudinal.report`: the per-subject HTML report.
"""

from bids_msseg.longitudinal.change import CHANGE_LABELS, ChangeRule, detect_change
from bids_msseg.longitudinal.pipeline import run_longitudinal, subject_visits

__all__ = ["CHANGE_LABELS", "ChangeRule", "detect_change", "run_longitudinal", "subject_visits"]
