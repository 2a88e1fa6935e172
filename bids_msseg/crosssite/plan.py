"""The matrix of experiments of a cross-site study: which models are trained, on what, tested where.

Every site's subjects are split once (seeded) into a *test* fold, held out of every training, and
a *development* pool. Each experiment trains one model on the development scans of a set of
sites (split again by subject into training and validation, as ``group --train`` does) and every
model is tested on the test fold of every site. All models therefore see the same test scans:
the matrix cells (training set x test site) are comparable, in-domain cells (the test site is
among the training sites) use held-out subjects, and predictions of two models on one scan can be
compared (consistency) or paired (ablations).

Training sets (``combinations``): ``single`` (each site alone, Badea & Popa's Table 2),
``leave-one-out`` (all sites but one), ``all`` (every site merged), ``merged`` (both of these)
and ``all-pairs`` (every two sites); duplicates (e.g. leave-one-out of two sites is ``single``)
are dropped. Each training set is trained once per *arm*: the baseline
(``--architecture``/``--train-normalization``) and one arm per ablation, which changes one
option (``normalization``: quantile <-> linear, ``architecture``: UNet++ <-> UNet).

``holdout="site"`` is the leave-one-site-out protocol instead: a site's test fold is all of its
scans, every experiment trains on all scans of its training sites, and each model is tested only
on the sites it did not train on (so ``all`` has nothing to test and is left out; the final model
on every site is ``group --train``). The default, ``holdout="subjects"``, is the split above.

Given models (``--compare-model``) are scored on the same test scans without training, as one
experiment each (training set ``model:<folder name>``): the baseline a new model must beat.

Train-only scans (``--extra-train-dataset``: e.g. synthetic scans, lesion-free FLAIRs as hard
negatives) join the training part of every experiment; they are no site, never validate and are
never tested, so every model is still scored on the same real test scans.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bids_msseg.errors import NoInputError, UsageError
from bids_msseg.settings import (
    ABLATIONS,
    COMBINATIONS,
    DEFAULT_ARCHITECTURE,
    DEFAULT_COMBINATIONS,
    DEFAULT_INTENSITY_AUGMENTATION,
    DEFAULT_NORMALIZATION,
    HOLDOUTS,
    TrainSettings,
)
from bids_msseg.train.data import split_rank
from bids_msseg.train.split import TrainingScan, split_scans

LOGGER = logging.getLogger(__name__)

__all__ = ["ABLATIONS", "COMBINATIONS", "DEFAULT_COMBINATIONS", "HOLDOUTS", "Arm", "Experiment", "StudyPlan", "arms",
           "build_plan", "split_test", "training_sets"]
_OTHER = {"quantile": "linear", "linear": "quantile", "UnetPlusPlus": "Unet", "Unet": "UnetPlusPlus"}


@dataclass(frozen=True)
class Arm:
    """One network recipe: the architecture and intensity normalization trained with, and the training
    options (:class:`~bids_msseg.settings.TrainSettings` fields) this arm sets otherwise than the study's."""

    architecture: str = DEFAULT_ARCHITECTURE
    normalization: str = DEFAULT_NORMALIZATION
    ablation: str | None = None  # the ablation this arm stands for; None for the baseline
    overrides: tuple[tuple[str, Any], ...] = ()

    @property
    def label(self) -> str:
        return "-".join([self.architecture, self.normalization,
                         *(f"{key.replace('_', '-')}-{value}" for key, value in self.overrides)])


@dataclass(frozen=True)
class Experiment:
    """One model: an arm trained on the development scans of ``train_sites``, or a given ``model`` bundle."""

    arm: Arm
    train_sites: tuple[str, ...]
    train: tuple[str, ...] = ()  # scan keys
    val: tuple[str, ...] = ()
    model: str | None = None  # a given bundle's folder: scored, never trained

    @property
    def train_set(self) -> str:
        """The training set's name, e.g. ``SiteA+SiteB``, or ``model:<folder>`` for a given model."""
        return f"model:{Path(self.model).name}" if self.model else "+".join(self.train_sites)

    @property
    def id(self) -> str:
        """Folder and model name, unique in the study: ``<arm>__<train set>``."""
        return f"{self.arm.label}__{self.train_set.replace(':', '-')}"


@dataclass
class StudyPlan:
    """Sites, the test/development split and the experiments; serialized to ``plan.json``."""

    sites: dict[str, list[str]]  # site -> scan keys (sorted)
    test: dict[str, list[str]]  # site -> test scan keys
    experiments: list[Experiment] = field(default_factory=list)
    holdout: str = "subjects"  # or "site" (module docstring)
    train_only: list[str] = field(default_factory=list)  # scan keys in every training, never tested

    @property
    def site_of(self) -> dict[str, str]:
        return {key: site for site, keys in self.sites.items() for key in keys}

    @property
    def test_scans(self) -> list[str]:
        return [key for site in self.test for key in self.test[site]]

    def tested(self, experiment: Experiment) -> list[str]:
        """The test scans ``experiment``'s model is scored on: all of them, or under ``holdout="site"``
        those of the sites it did not train on."""
        if self.holdout == "site":
            return [key for site in self.test if site not in experiment.train_sites for key in self.test[site]]
        return self.test_scans

    def to_json(self) -> dict[str, Any]:
        return {"sites": self.sites, "test": self.test, "holdout": self.holdout,
                **({"train_only": self.train_only} if self.train_only else {}),
                "experiments": [{"id": e.id, "arm": e.arm.label, "architecture": e.arm.architecture,
                                 "normalization": e.arm.normalization, "ablation": e.arm.ablation,
                                 "train_sites": list(e.train_sites), "train": list(e.train), "val": list(e.val),
                                 "model": e.model}
                                for e in self.experiments]}


def training_sets(sites: Sequence[str], combinations: Sequence[str]) -> list[tuple[str, ...]]:
    """The site sets to train on, smallest first, without duplicates (see the module docstring)."""
    unknown = sorted(set(combinations) - set(COMBINATIONS))
    if unknown:
        raise UsageError(f"unknown combination(s) {unknown}; choose from {list(COMBINATIONS)}")
    names = sorted(sites)
    wanted: list[tuple[str, ...]] = []
    for combination in combinations:
        if combination == "single":
            wanted += [(s,) for s in names]
        if combination in ("leave-one-out", "merged") and len(names) > 1:
            wanted += [tuple(s for s in names if s != out) for out in names]
        if combination in ("all", "merged"):
            wanted.append(tuple(names))
        if combination == "all-pairs":
            wanted += list(itertools.combinations(names, 2))
    unique = list(dict.fromkeys(w for w in wanted if w))
    return sorted(unique, key=lambda s: (len(s), s))


def arms(architecture: str | None, normalization: str | None, ablations: Sequence[str],
         training: TrainSettings | None = None) -> list[Arm]:
    """The baseline arm and one arm per ablation: the other architecture or normalization; for
    ``context``, 2.5D with one neighbouring slice each side against a 2D baseline (2D against a 2.5D
    one); for ``sampling``, the other way of drawing lesion slices; for ``intensity``, training with
    intensity perturbations against without (without against with) (``training``: the study's options)."""
    training = training or TrainSettings()
    base = Arm(architecture or DEFAULT_ARCHITECTURE, normalization or DEFAULT_NORMALIZATION)
    out = [base]
    for ablation in dict.fromkeys(ablations):
        if ablation == "normalization":
            out.append(Arm(base.architecture, _OTHER[base.normalization], ablation))
        elif ablation == "architecture":
            out.append(Arm(_OTHER[base.architecture], base.normalization, ablation))
        elif ablation == "context":
            out.append(Arm(base.architecture, base.normalization, ablation,
                           (("context", 0 if training.context else 1),)))
        elif ablation == "sampling":
            out.append(Arm(base.architecture, base.normalization, ablation,
                           (("lesion_sampling", "slice" if training.lesion_sampling == "lesion" else "lesion"),)))
        elif ablation == "intensity":
            out.append(Arm(base.architecture, base.normalization, ablation,
                           (("augment_intensity", 0.0 if training.augment_intensity else
                             DEFAULT_INTENSITY_AUGMENTATION),)))
        else:
            raise UsageError(f"unknown ablation {ablation!r}; choose from {list(ABLATIONS)}")
    return out


def split_test(scans: Sequence[TrainingScan], test_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(test keys, development keys) of one site's scans: ``round(test_fraction * n)`` subjects (at least
    one, never all) go to test, drawn by the seeded hash of the subject (salted apart from the
    validation split, so the two are independent)."""
    units = sorted({s.group for s in scans}, key=lambda u: (split_rank(f"test:{u}", seed), u))
    if len(units) < 2:
        return [], [s.key for s in scans]
    n_test = min(len(units) - 1, max(1, round(test_fraction * len(units))))
    test_units = set(units[:n_test])
    return ([s.key for s in scans if s.group in test_units], [s.key for s in scans if s.group not in test_units])


def build_plan(scans: Sequence[TrainingScan], sites: Mapping[str, str], combinations: Sequence[str],
               study_arms: Sequence[Arm], test_fraction: float, val_fraction: float, seed: int,
               only_sites: Sequence[str] | None = None, holdout: str = "subjects",
               given: Sequence[tuple[Arm, str]] = (), train_only: Sequence[str] = ()) -> StudyPlan:
    """The whole study: split each site, enumerate training sets x arms, split each training set.

    A site needs at least 3 subjects (or scans): one to test on and two to train and validate on;
    smaller sites are left out with a warning. Under ``holdout="site"`` any site with a scan serves
    (all of it is tested; it trains the models of the other sites). At least two sites must remain.
    ``given`` models (arm, bundle folder) are added as experiments that are not trained; ``train_only``
    scan keys (module docstring) are added to the training part of every trained experiment.
    """
    if holdout not in HOLDOUTS:
        raise UsageError(f"unknown holdout {holdout!r}; choose from {list(HOLDOUTS)}")
    by_site: dict[str, list[TrainingScan]] = {}
    for scan in scans:
        if scan.key in sites:
            by_site.setdefault(sites[scan.key], []).append(scan)
    if only_sites:
        missing = sorted(set(only_sites) - set(by_site))
        if missing:
            raise UsageError(f"--sites {missing}: no such site; the sites are {sorted(by_site)}")
        by_site = {s: v for s, v in by_site.items() if s in only_sites}
    tested_too = sorted(set(train_only) & set(sites))
    if tested_too:
        raise UsageError(f"scans of the study's sites cannot also be train-only: {tested_too}")
    plan = StudyPlan(sites={}, test={}, holdout=holdout, train_only=sorted(train_only))
    dev: dict[str, list[TrainingScan]] = {}
    for site in sorted(by_site):
        site_scans = sorted(by_site[site], key=lambda s: s.key)
        if holdout == "site":
            test, development = [s.key for s in site_scans], [s.key for s in site_scans]
        else:
            test, development = split_test(site_scans, test_fraction, seed)
        if not test or (holdout != "site" and len(development) < 2):
            LOGGER.warning("site %s: %d scan(s) of %d subject(s) are too few (one test subject and two "
                           "development scans are needed); left out", site, len(site_scans),
                           len({s.group for s in site_scans}))
            continue
        plan.sites[site] = [s.key for s in site_scans]
        plan.test[site] = test
        dev[site] = [s for s in site_scans if s.key in set(development)]
    if len(plan.sites) < 2:
        raise NoInputError(f"a cross-site study needs at least two usable sites; found {sorted(plan.sites)}")
    for train_sites in training_sets(list(plan.sites), combinations):
        if holdout == "site" and set(train_sites) == set(plan.sites):
            LOGGER.warning("training set %s holds every site: under --holdout site nothing is left to test it "
                           "on; left out (train the model of every site with group --train)", "+".join(train_sites))
            continue
        pool = [s for site in train_sites for s in dev[site]]
        if len({s.group for s in pool}) < 2:
            LOGGER.warning("training set %s has fewer than two subjects (one to train, one to validate); left out",
                           "+".join(train_sites))
            continue
        train, val = split_scans(pool, val_fraction, seed)
        for arm in study_arms:
            plan.experiments.append(Experiment(arm, train_sites, (*(s.key for s in train), *plan.train_only),
                                               tuple(s.key for s in val)))
    plan.experiments += [Experiment(arm, (), model=str(model)) for arm, model in given]
    if not plan.experiments:
        raise NoInputError("nothing to train or score: no training set has a site left to test on")
    LOGGER.info("cross-site plan: %d site(s) (%s), %d test scan(s), %d experiment(s)", len(plan.sites),
                ", ".join(f"{s}: {len(plan.test[s])} test / {len(dev[s])} development" for s in plan.sites),
                len(plan.test_scans), len(plan.experiments))
    return plan
