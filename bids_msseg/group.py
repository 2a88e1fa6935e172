"""The group analysis level: dispatches to what the group-level flags ask for.

``--cross-site`` runs the cross-site generalization study (:func:`bids_msseg.crosssite.run.run_study`).
``--train`` trains a model on the dataset's expert lesion masks
(:func:`bids_msseg.train.bids_training.train_from_bids`). Without it the group level reads the
participant outputs and writes the cohort tables, the evaluation against expert masks where they
exist, and the group report (:func:`bids_msseg.cohort.run_cohort`).
"""

from __future__ import annotations

import logging

from bids_msseg.cohort import run_cohort
from bids_msseg.crosssite.run import run_study
from bids_msseg.settings import Options
from bids_msseg.train.bids_training import train_from_bids

LOGGER = logging.getLogger(__name__)


def run_group(options: Options) -> int:
    """Run the group level for ``options`` (its :class:`~bids_msseg.settings.GroupSettings`); return the exit code."""
    if options.group.cross_site:
        return run_study(options)
    if options.group.train:
        return train_from_bids(options)
    return run_cohort(options)
