"""The cross-site generalization study (``group --cross-site``): plan, run, statistics, report.

See :mod:`bids_msseg.crosssite.run` for the steps and :mod:`bids_msseg.crosssite.plan` for the
design of the experiments.
"""
