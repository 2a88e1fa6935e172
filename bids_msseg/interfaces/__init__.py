"""Thin nipype interfaces around the plain functions of bids_msseg.

Each interface is a ``SimpleInterface`` whose ``_run_interface`` loads its inputs from files,
calls one plain function (preprocessing, segmentation, lesion statistics, derivative writing,
report) and saves what it produced as NIfTI/JSON/TSV in the node's working directory, so nodes
exchange file paths only and nipype can cache each step.
"""

from bids_msseg.interfaces.derivatives import ParticipantReport, WriteDerivatives
from bids_msseg.interfaces.lesions import LesionStats
from bids_msseg.interfaces.location import LesionLocation
from bids_msseg.interfaces.preprocess import Preprocess
from bids_msseg.interfaces.segment import Segment

__all__ = ["LesionLocation", "LesionStats", "ParticipantReport", "Preprocess", "Segment", "WriteDerivatives"]
