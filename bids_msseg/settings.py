"""Every setting of one invocation, typed and immutable: written by the command line, read by the rest.

In the spirit of fMRIPrep's ``config`` module: :func:`bids_msseg.cli.parser.parse_args` builds one
:class:`Options` (with its :class:`GroupSettings`) and nothing below the command line parses
arguments or reads ``sys.argv``. Workflows, the group level and the training read these objects
(never the CLI), so the CLI can import them without an import circle.

This module holds every default and every choice list that more than one place needs (the
parser's ``choices`` and defaults come from here), and imports neither argparse, torch, nipype
nor numpy: building settings is free and fast.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bids_msseg.model.bundle import ModelCard

#: The template of lesion location and of the template-space outputs (``space-`` entity; nilearn's
#: copy of the ICBM 2009a nonlinear symmetric MNI152 template, see docs/lesion_location.md).
TEMPLATE_SPACE = "MNI152NLin2009aSym"
#: Where the network runs (``--device``) and its precision (``--precision``).
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")
#: ``--n4``/``--skullstrip``: decide from the image, or force on/off.
SWITCHES = ("auto", "on", "off")
#: The value of a switch as the preprocessing takes it: None decides from the image.
FORCE: Mapping[str, bool | None] = {"auto": None, "on": True, "off": False}
#: Intensity normalizations a model can be trained with (``--train-normalization``), and
#: ``--normalization`` at inference (``model`` = the bundle's own).
NORMALIZATIONS = ("quantile", "linear")
INFERENCE_NORMALIZATIONS = ("model", *NORMALIZATIONS)
#: Networks the group level can train (built by :mod:`bids_msseg.model.network`).
ARCHITECTURES = ("UnetPlusPlus", "Unet")
DEFAULT_ARCHITECTURE = "UnetPlusPlus"
DEFAULT_NORMALIZATION = "quantile"
#: nipype execution plugins (``nipype.pipeline.plugins.<name>Plugin``).
NIPYPE_PLUGINS = ("MultiProc", "Linear", "LegacyMultiProc", "SLURM", "SLURMGraph", "SGE", "SGEGraph",
                  "PBS", "PBSGraph", "LSF", "Condor", "CondorDAGMan", "OAR", "IPython")
#: Training sets and ablations of ``group --cross-site`` (:mod:`bids_msseg.crosssite.plan`).
COMBINATIONS = ("single", "leave-one-out", "all", "merged", "all-pairs")
DEFAULT_COMBINATIONS = ("single", "leave-one-out", "all")
ABLATIONS = ("normalization", "architecture", "context", "sampling", "intensity")
#: ``--augment-intensity`` given alone, and the ``intensity`` ablation arm's value against a baseline without.
DEFAULT_INTENSITY_AUGMENTATION = 0.5
#: What a cross-site study holds out for testing: a share of each site's subjects, or whole sites
#: (leave-one-site-out; :mod:`bids_msseg.crosssite.plan`).
HOLDOUTS = ("subjects", "site")
#: Seed of every random generator when ``--random-seed`` is not given: runs are bit-identical by
#: default (recorded as ``RandomSeed`` in the sidecars).
DEFAULT_RANDOM_SEED = 0
#: Display names of the architectures (methods boilerplate).
ARCHITECTURE_NAMES = {"UnetPlusPlus": "UNet++", "Unet": "U-Net"}


def force_flag(switch: str) -> bool | None:
    """``--n4``/``--skullstrip`` as the preprocessing takes it: True, False or None (decide)."""
    return FORCE[switch]


@dataclass(frozen=True)
class TrainSettings:
    """``group --train`` (and each cross-site experiment): the flags of the "Group level" argument group."""

    name: str = "msseg-custom"
    masks_dir: Path | None = None
    extra_datasets: tuple[Path, ...] = ()
    epochs: int = 50
    steps_per_epoch: int | None = None
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-6
    lesion_weight: float = 0.8
    val_fraction: float = 0.2
    architecture: str | None = None  # None: the --init-model's, else DEFAULT_ARCHITECTURE
    normalization: str | None = None  # None: the --init-model's, else DEFAULT_NORMALIZATION
    augment_quality: int = 0
    augment_intensity: float = 0.0  # probability a training slice's intensities are perturbed
    synthetic_pool: Path | None = None  # shards of scripts/build_default_model.py pool, mixed into every batch
    synthetic_fraction: float = 0.5  # their share of each batch
    lesion_sampling: str = "slice"  # how lesion slices are drawn (TrainConfig.lesion_sampling)
    normal_fraction: float = 0.0  # share of a batch from normal-hyperintensity slices
    normal_weight: float = 1.0  # loss weight of a normal-hyperintensity voxel
    lesion_balance: float = 0.0  # loss weight of a lesion by its size ** -this (TrainConfig.lesion_balance)
    context: int | None = None  # neighbouring slices each side (2.5D); None: the --init-model's, else 0
    average_from: int = 0  # export the mean of the weights from this epoch on (TrainConfig.average_from); 0: best
    init_model: Path | None = None
    checkpoint_dir: Path | None = None  # portable checkpoint to keep and resume from (train.loop.save_portable)
    seed: int = DEFAULT_RANDOM_SEED  # --random-seed


@dataclass(frozen=True)
class CrossSiteSettings:
    """``group --cross-site``: the flags of the "Cross-site study" argument group."""

    extra_bids_dirs: tuple[Path, ...] = ()
    site_column: str | None = None
    site_fields: tuple[str, ...] = ()
    sites: tuple[str, ...] = ()
    combinations: tuple[str, ...] = DEFAULT_COMBINATIONS
    test_fraction: float = 0.3
    ablations: tuple[str, ...] = ()
    holdout: str = "subjects"
    compare_models: tuple[Path, ...] = ()  # given bundles scored beside the trained models


@dataclass(frozen=True)
class CohortSettings:
    """``group`` without ``--train``/``--cross-site``: cohort tables and evaluation."""

    site_column: str | None = None
    masks_dir: Path | None = None
    msseg2016: bool = False


@dataclass(frozen=True)
class GroupSettings:
    """What the group level does (``train``/``cross_site``, else the cohort) and with which settings."""

    train: bool = False
    cross_site: bool = False
    cohort: CohortSettings = field(default_factory=CohortSettings)
    training: TrainSettings = field(default_factory=TrainSettings)
    crosssite: CrossSiteSettings = field(default_factory=CrossSiteSettings)


@dataclass(frozen=True)
class Options:
    """Every setting of one invocation, immutable. Built by :func:`bids_msseg.cli.parser.parse_args`."""

    bids_dir: Path
    output_dir: Path
    analysis_level: str
    participant_label: tuple[str, ...] | None = None
    session_label: tuple[str, ...] | None = None
    bids_filters: Mapping[str, Mapping[str, Any]] | None = None
    skip_bids_validation: bool = False
    work_dir: Path = field(default_factory=lambda: Path("work").absolute())
    nprocs: int = 1
    omp_nthreads: int = 1
    mem_gb: float | None = None
    device: str = "auto"
    precision: str = "auto"
    model: Path | None = None
    threshold: float | None = None
    seed_threshold: float | None = None
    seed_threshold_thick: float | None = None
    min_lesion_size: float | None = None
    normalization: str = "model"
    n4: str = "auto"
    skullstrip: str = "auto"
    #: Segment images whose contrast does not look like FLAIR (warned) instead of refusing them.
    force_contrast: bool = False
    #: Smallest accepted brain-mask volume in mL (None: the default of ``preproc.BRAIN_VOLUME_RANGE_ML``).
    min_brain_volume: float | None = None
    stop_on_first_crash: bool = False
    boilerplate_only: bool = False
    random_seed: int | None = DEFAULT_RANDOM_SEED  # None: unseeded (not reachable from the command line)
    #: nipype execution plugin and its arguments (``--use-plugin``/``--nipype-plugin``/``--plugin-args``).
    nipype_plugin: str = "MultiProc"
    plugin_args: Mapping[str, Any] = field(default_factory=dict)
    overwrite: bool = False
    #: After the participant runs, compare each subject's sessions (``--no-longitudinal`` turns it off).
    longitudinal: bool = True
    #: Lesion location classes and the template-space outputs (``--no-location`` turns them off).
    location: bool = True
    verbose: int = 0
    #: The command line as typed (shown in the reports).
    command_line: str = ""
    #: The group level's flags, typed (built once by the parser).
    group: GroupSettings = field(default_factory=GroupSettings)
    #: Parsed arguments without a field of their own (none today; kept for flags added later).
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def flair_filters(self) -> dict[str, Any]:
        """The pybids entity filters for the FLAIR query (empty when no filter file was given)."""
        return dict((self.bids_filters or {}).get("flair", {}))

    @property
    def logs_dir(self) -> Path:
        """``<output_dir>/logs``: crash reports and CITATION.md."""
        return self.output_dir / "logs"


@dataclass(frozen=True)
class SegmentationSettings:
    """What defines the participant outputs besides the image: the options resolved against the model card.

    Resolved once per run (by the command line) and passed down to the workflow, its nodes and the
    completeness check, so every part uses the same threshold, lesion definition and normalization.
    """

    model_id: str
    threshold: float
    min_lesion_size_mm3: float
    seed_threshold: float
    connectivity: int
    normalization: str  # the method actually used: the card's unless overridden
    seed_threshold_thick: float | None = None  # thick-slice scans' seed threshold; None: seed_threshold
    weights_sha256: str = ""  # the bundle's weights, recorded in the sidecars' ComponentVersions
    location: bool = True  # lesion location classes and template-space outputs (--no-location: off)

    @classmethod
    def resolve(cls, options: Options, card: ModelCard) -> SegmentationSettings:
        """Command-line values where given, else the bundle's. ``--seed-threshold`` given without
        ``--seed-threshold-thick`` is every scan's seed threshold."""
        if options.seed_threshold_thick is not None:
            seed_thick = float(options.seed_threshold_thick)
        elif options.seed_threshold is None and card.seed_threshold_thick is not None:
            seed_thick = float(card.seed_threshold_thick)
        else:
            seed_thick = None
        return cls(
            model_id=card.model_id,
            threshold=float(options.threshold if options.threshold is not None else card.threshold),
            min_lesion_size_mm3=float(options.min_lesion_size if options.min_lesion_size is not None
                                      else card.min_lesion_size_mm3),
            seed_threshold=float(options.seed_threshold if options.seed_threshold is not None
                                 else card.seed_threshold),
            seed_threshold_thick=seed_thick,
            connectivity=int(card.connectivity),
            normalization=card.normalization if options.normalization == "model" else options.normalization,
            weights_sha256=card.weights_sha256,
            location=options.location,
        )

    def citation_context(self, options: Options, card: ModelCard) -> dict[str, Any]:
        """The context of the methods boilerplate (``bids_msseg.boilerplate.write_citation``)."""
        arch = card.architecture or {}

        def switch(value: str) -> bool | str:
            forced = force_flag(value)
            return "auto" if forced is None else forced

        return {
            "model_id": self.model_id,
            "architecture": ARCHITECTURE_NAMES.get(arch.get("name", ""), arch.get("name", "UNet++")),
            "encoder": arch.get("encoder_name", "resnet18"),
            "input_size": card.input_size,
            "normalization": self.normalization,
            "precision": options.precision,
            "threshold": self.threshold,
            "seed_threshold": self.seed_threshold,
            "seed_threshold_thick": self.seed_threshold_thick,
            "min_lesion_size_mm3": self.min_lesion_size_mm3,
            "connectivity": self.connectivity,
            "n4": switch(options.n4),
            "brain_extraction": switch(options.skullstrip),
            "training_data": str((card.training or {}).get("data", "")),
            "location": options.location,
        }
