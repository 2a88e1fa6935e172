"""The group analysis level: dispatches to what the group-level flags ask for.

``--cross-site`` runs the cross-site generalization study (:func:`bids_msseg.crosssite.run.run_study`).
``--train`` trains a model on the dataset's expert lesion masks
(:func:`bids_msseg.train.bids_training.train_from_bids`). Without it the group level reads the
participant outputs and writes the cohort tables, the evaluation against expert masks where they
exist, and the group report (:func:`bids_msseg.cohort.run_cohort`).
"""

from __future__ import annotations

import logging

from bids_msseg.cli.parser import Options

LOGGER = logging.getLogger(__name__)


def run_group(options: Options) -> int:
    """Run the group level for ``options``; return the exit code."""
    if options.extra.get("cross_site"):
        from bids_msseg.crosssite.run import run_study

        return run_study(options)
    if options.extra.get("train"):
        from bids_msseg.train.bids_training import train_from_bids

        return train_from_bids(options)
    from bids_msseg.cohort import run_cohort

    return run_cohort(options)
