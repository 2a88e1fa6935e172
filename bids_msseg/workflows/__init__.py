"""nipype workflow factories (``init_*_wf``) of bids_msseg."""

from bids_msseg.workflows.participant import init_participant_wf, init_single_flair_wf

__all__ = ["init_participant_wf", "init_single_flair_wf"]
