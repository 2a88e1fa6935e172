"""The group analysis level: dispatches to what the group-level flags ask for.

``--cross-site`` runs the cross-site generalization study (:func:`bids_msseg.crosssite.run.run_study`).
``--train`` trains a model on the dataset's expert lesion masks
(:func:`bids_msseg.train.bids_training.train_from_bids`). Without it the group level is meant to
summarize the participant outputs (a cohort report and evaluation against expert masks), which
is not built yet: it then logs so and succeeds, as the BIDS Apps spec expects of a level with
nothing to do.
"""

from __future__ import annotations

import logging

from bids_msseg.cli.parser import Options
from bids_msseg.errors import EXIT_OK

LOGGER = logging.getLogger(__name__)


def run_group(options: Options) -> int:
    """Run the group level for ``options``; return the exit code."""
    if options.extra.get("cross_site"):
        from bids_msseg.crosssite.run import run_study

        return run_study(options)
    if options.extra.get("train"):
        from bids_msseg.train.bids_training import train_from_bids

        return train_from_bids(options)
    # The cohort report / evaluation goes here when it exists.
    LOGGER.info("the group-level cohort report and evaluation are not built yet; nothing to do "
                "(use --train to train a model on this dataset's expert lesion masks)")
    return EXIT_OK
