"""The command-line parser: built by a pure function, turned into one frozen :class:`Options`.

``build_parser()`` has no side effects (it reads nothing, creates nothing) so that tests and
documentation tools can call it freely. ``parse_args()`` parses, validates the values that need
it (the BIDS filter file is read and checked here), resolves machine-dependent defaults (number
of CPUs, work directory) and returns an immutable :class:`Options`. Nothing else in the package
reads ``sys.argv`` or a global configuration. The settings it builds (:class:`Options`, with the
group level's typed :class:`~bids_msseg.settings.GroupSettings`), their defaults and the choice
lists live in :mod:`bids_msseg.settings`, which the rest of the package reads instead of this module.

Exit codes follow ../shared/docs/conventions.md: a usage error exits 64 (argparse's own 2 is
replaced) and an unknown analysis level exits 17, as the BIDS Apps execution spec asks.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import shlex
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any, NoReturn

import yaml

from bids_msseg import __version__
from bids_msseg.errors import EXIT_UNKNOWN_LEVEL, EXIT_USAGE
from bids_msseg.settings import (
    ABLATIONS,
    ARCHITECTURES,
    COMBINATIONS,
    DEFAULT_COMBINATIONS,
    DEFAULT_INTENSITY_AUGMENTATION,
    DEFAULT_RANDOM_SEED,
    DEVICES,
    HOLDOUTS,
    INFERENCE_NORMALIZATIONS,
    NIPYPE_PLUGINS,
    NORMALIZATIONS,
    PRECISIONS,
    SWITCHES,
    CohortSettings,
    CrossSiteSettings,
    GroupSettings,
    Options,
    TrainSettings,
)

__all__ = ["ARCHITECTURES", "CROSSSITE_ABLATIONS", "CROSSSITE_COMBINATIONS", "NIPYPE_PLUGINS", "Options",
           "add_crosssite_arguments", "add_group_level_arguments", "build_parser", "parse_args",
           "validate_bids_filters"]

ANALYSIS_LEVELS = ("participant", "group")
#: Keys accepted at the top level of a ``--bids-filter-file``.
FILTER_KEYS = ("flair",)
#: Entities a filter may not set: the app only ever segments FLAIR NIfTIs of the anat datatype.
FIXED_ENTITIES = ("suffix", "datatype", "extension")
#: Defaults of the group-level flags: those of the typed settings.
_TRAIN = TrainSettings()
_CROSSSITE = CrossSiteSettings()


_UNRECOGNIZED = "unrecognized arguments: "


def suggest_flags(unknown: Sequence[str], known: Iterable[str]) -> dict[str, str]:
    """``{typed flag: the known flag it most likely means}`` for the flags among ``unknown``.

    A typo'd flag (``--participant-lable``) is matched to the closest known option string by
    difflib's similarity ratio (at least 0.75, so a flag from another tool is not matched to an
    unrelated one); ``--flag=value`` is matched by its flag. Values and positionals are skipped.
    """
    options = sorted({k for k in known if k.startswith("-")})
    suggestions: dict[str, str] = {}
    for token in unknown:
        flag = token.split("=", 1)[0]
        if not flag.startswith("-") or flag in options or flag in suggestions:
            continue
        close = difflib.get_close_matches(flag, options, n=1, cutoff=0.75)
        if close:
            suggestions[flag] = close[0]
    return suggestions


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors exit with 64 (EX_USAGE) instead of 2, and that suggests
    the option a typo'd flag most likely means (Python 3.11's argparse does not)."""

    def error(self, message: str) -> NoReturn:
        if message.startswith(_UNRECOGNIZED):
            hints = suggest_flags(message[len(_UNRECOGNIZED):].split(), self._option_string_actions)
            if hints:
                message += "; did you mean " + ", ".join(f"{right} (for {typed})" if len(hints) > 1 else right
                                                          for typed, right in hints.items()) + "?"
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


class _AnalysisLevel(argparse.Action):
    """Store the analysis level; an unknown one exits 17 as the BIDS Apps spec requires."""

    def __call__(self, parser, namespace, values, option_string=None):  # type: ignore[override]
        if values not in ANALYSIS_LEVELS:
            parser.print_usage(sys.stderr)
            parser.exit(
                EXIT_UNKNOWN_LEVEL,
                f"{parser.prog}: error: unknown analysis level {values!r} "
                f"(choose from {', '.join(ANALYSIS_LEVELS)})\n",
            )
        setattr(namespace, self.dest, values)


class _ExtendLabels(argparse.Action):
    """Collect labels over repeated flags, stripping a BIDS prefix (``sub-``/``ses-``)."""

    def __init__(self, *args: Any, prefix: str, **kwargs: Any) -> None:
        self.prefix = prefix
        super().__init__(*args, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):  # type: ignore[override]
        current = list(getattr(namespace, self.dest) or [])
        for value in values:
            label = value[len(self.prefix):] if value.startswith(self.prefix) else value
            if not label or not label.isalnum():
                parser.error(f"{option_string}: {value!r} is not a BIDS label (letters and digits only)")
            if label not in current:
                current.append(label)
        setattr(namespace, self.dest, current)


def _int_at_least(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer no smaller than ``minimum`` (and no larger than ``maximum``)."""

    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
        if number < minimum:
            raise argparse.ArgumentTypeError(f"{value!r} must be at least {minimum}")
        if maximum is not None and number > maximum:
            raise argparse.ArgumentTypeError(f"{value!r} is out of range: use {minimum} to {maximum}")
        return number

    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)
#: Seeds go to numpy (at most 2**32 - 1), torch and ANTs: a larger one failed every run later.
_seed = _int_at_least(0, 2**32 - 1)


def _probability(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not 0.0 < number < 1.0:
        raise argparse.ArgumentTypeError(f"{value!r} must lie strictly between 0 and 1")
    return number


def _seed_probability(value: str) -> float:
    """A seed threshold: 0 turns hysteresis off, else a probability strictly between 0 and 1."""
    try:
        if float(value) == 0.0:
            return 0.0
    except ValueError:
        pass
    return _probability(value)


def _non_negative_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if number != number:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number")
    if not number >= 0.0:
        raise argparse.ArgumentTypeError(f"{value!r} cannot be negative")
    return number


def _positive_float(value: str) -> float:
    number = _non_negative_float(value)
    if number == 0.0:
        raise argparse.ArgumentTypeError(f"{value!r} must be positive")
    return number


def _model_name(value: str) -> str:
    """argparse type: a model name usable as a folder name (letters, digits, ``-``, ``_``, ``.``)."""
    if not value or value.startswith(".") or not all(c.isalnum() or c in "-_." for c in value):
        raise argparse.ArgumentTypeError(f"{value!r}: use letters, digits, '-', '_' and '.' only")
    return value


def _abs_path(value: str) -> Path:
    return Path(value).expanduser().absolute()


def _work_dir(value: str) -> Path:
    """``-w``: a folder path; an empty one would silently mean the current folder."""
    if not value.strip():
        raise argparse.ArgumentTypeError("an empty path; give the work folder (e.g. -w /scratch/work)")
    return _abs_path(value)


def _existing_dir(value: str) -> Path:
    path = _abs_path(value)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{value}: no such directory")
    return path


def known_entities() -> tuple[str, ...]:
    """Entity names pybids knows from its ``bids`` configuration (subject, session, acquisition...)."""
    from bids.layout.models import Config  # lazy: pybids is slow to import; only --bids-filter-file needs it

    return tuple(Config.load("bids").entities)


def validate_bids_filters(obj: Any, source: str = "filter") -> dict[str, dict[str, Any]]:
    """Check the structure of a BIDS filter object; raise ``ValueError`` with a clear message.

    The format is fMRIPrep's: ``{"flair": {"<entity>": value, ...}}`` where a value is a string,
    an integer, a list of those, ``null`` (the entity must be absent) or ``"*"`` (it must be
    present). Only the ``flair`` key is known to this app.
    """
    if not isinstance(obj, dict):
        raise ValueError(f"{source}: the top level must be a JSON object such as {{\"flair\": {{...}}}}")
    unknown = sorted(set(obj) - set(FILTER_KEYS))
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {unknown}; the only known key is {list(FILTER_KEYS)}")
    entities = set(known_entities())
    out: dict[str, dict[str, Any]] = {}
    for key, query in obj.items():
        if not isinstance(query, dict):
            raise ValueError(f"{source}: {key!r} must map entity names to values")
        bad = sorted(set(query) - entities)
        if bad:
            raise ValueError(f"{source}: unknown BIDS entit{'y' if len(bad) == 1 else 'ies'} {bad} "
                             f"under {key!r}; known: {sorted(entities)}")
        fixed = sorted(set(query) & set(FIXED_ENTITIES))
        if fixed:
            raise ValueError(f"{source}: {fixed} are fixed: this app segments anat FLAIR NIfTI images")
        for entity, value in query.items():
            values = value if isinstance(value, list) else [value]
            if isinstance(value, list) and not value:
                raise ValueError(f"{source}: {key}.{entity} is an empty list")
            for item in values:
                if item is not None and (isinstance(item, bool) or not isinstance(item, str | int)):
                    raise ValueError(f"{source}: {key}.{entity} = {item!r}: values must be strings, "
                                     "integers, null or \"*\"")
        out[key] = dict(query)
    return out


def _bids_filter_file(value: str) -> dict[str, dict[str, Any]]:
    """argparse type: read and validate a ``--bids-filter-file``."""
    path = _abs_path(value)
    if path.exists() and not path.is_file():
        raise argparse.ArgumentTypeError(f"{value}: not a regular file (a folder or a device); give a JSON file")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{value}: no such file")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise argparse.ArgumentTypeError(f"{value}: cannot be read ({err})") from None
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"{value}: not valid JSON ({err})") from None
    except RecursionError:
        raise argparse.ArgumentTypeError(f"{value}: not a usable filter file (JSON nested too deeply)") from None
    try:
        return validate_bids_filters(obj, source=str(value))
    except RecursionError:
        raise argparse.ArgumentTypeError(f"{value}: not a usable filter file (JSON nested too deeply)") from None
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _plugin_args(value: str) -> dict[str, Any]:
    """argparse type: ``--plugin-args`` as a JSON object, e.g. ``'{"sbatch_args": "-p short"}'``."""
    try:
        obj = json.loads(value)
    except (json.JSONDecodeError, RecursionError) as err:
        raise argparse.ArgumentTypeError(f"{value[:80]!r}: not a JSON object ({err})") from None
    if not isinstance(obj, dict):
        raise argparse.ArgumentTypeError(f"{value!r}: must be a JSON object")
    return obj


def _plugin_file(value: str) -> dict[str, Any]:
    """argparse type: a ``--use-plugin`` YAML/JSON file (fMRIPrep's format; JSON is YAML too), checked.

    ``plugin: SLURM`` and optional ``plugin_args: {...}`` (passed to nipype as they are).
    """
    path = _abs_path(value)
    try:
        obj = yaml.safe_load(path.read_text())
    except OSError as err:
        raise argparse.ArgumentTypeError(f"{value}: cannot be read ({err.strerror or err})") from None
    except (yaml.YAMLError, RecursionError, UnicodeDecodeError) as err:
        raise argparse.ArgumentTypeError(f"{value}: not valid YAML/JSON ({str(err)[:200]})") from None
    if not isinstance(obj, dict) or obj.get("plugin") not in NIPYPE_PLUGINS:
        raise argparse.ArgumentTypeError(f"{value}: needs 'plugin: <name>' with a name among "
                                         f"{', '.join(NIPYPE_PLUGINS)}")
    unknown = sorted(set(obj) - {"plugin", "plugin_args"})
    args = obj.get("plugin_args") or {}
    if unknown or not isinstance(args, dict):
        raise argparse.ArgumentTypeError(f"{value}: only 'plugin' and 'plugin_args' (a mapping) are allowed")
    return {"plugin": obj["plugin"], "plugin_args": args}


#: ``--help`` shows the options of everyday use; ``--help-all`` (alias ``--help-training``) adds the
#: training and cross-site options of the group level.
HELP_ALL_FLAGS = ("--help-all", "--help-training")
USAGE = "%(prog)s bids_dir output_dir {participant,group} [options]"
EPILOG = """\
examples:
  %(prog)s /data/bids /data/bids/derivatives/bids_msseg participant --participant-label 01 02
  %(prog)s /data/bids /data/bids/derivatives/bids_msseg group

Training on your own expert masks (group --train) and cross-site studies (group --cross-site)
have their own options: see %(prog)s --help-all."""


class _HelpAll(argparse.Action):
    """``--help-all``: print the help with every option group, then exit 0."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest=dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):  # type: ignore[override]
        build_parser(show_all=True).print_help()
        parser.exit(0)


class _Formatter(argparse.HelpFormatter):
    """Help lines wide enough to read; each default is written once, in the option's own text; the
    examples of the epilog keep their lines."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=30, width=100)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("examples:"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def build_parser(show_all: bool = False) -> argparse.ArgumentParser:
    """The argument parser of ``bids_msseg``. Pure: calling it reads and writes nothing.

    ``show_all`` shows the training and cross-site options in the help (``--help-all``); they are
    parsed either way.
    """
    parser = _Parser(
        prog="bids_msseg",
        usage=USAGE,
        description="FLAIR-only multiple-sclerosis lesion segmentation (UNet++/resnet18) as a BIDS App.",
        epilog=EPILOG,
        formatter_class=_Formatter,
    )
    parser.add_argument("bids_dir", type=_abs_path, help="the root of the BIDS dataset (input)")
    parser.add_argument("output_dir", type=_abs_path,
                        help="where derivatives are written (e.g. <bids_dir>/derivatives/bids_msseg)")
    parser.add_argument("analysis_level", action=_AnalysisLevel, metavar="{participant,group}",
                        help="participant: segment each FLAIR; group: summarize participant outputs")
    parser.add_argument("--version", action="version", version=f"bids_msseg {__version__}")
    parser.add_argument(*HELP_ALL_FLAGS, action=_HelpAll,
                        help="show every option, with those of group --train and group --cross-site")

    sel = parser.add_argument_group("Selecting the input")
    sel.add_argument("--participant-label", "--participant_label", dest="participant_label", nargs="+",
                     action=_ExtendLabels, prefix="sub-", metavar="LABEL",
                     help="participants to process, with or without 'sub-' (default: all)")
    sel.add_argument("--session-label", "--session_label", dest="session_label", nargs="+",
                     action=_ExtendLabels, prefix="ses-", metavar="LABEL",
                     help="sessions to process, with or without 'ses-' (default: all)")
    sel.add_argument("--bids-filter-file", "--bids_filter_file", dest="bids_filters", type=_bids_filter_file,
                     metavar="FILE",
                     help='JSON of pybids entity filters for the FLAIR query, e.g. {"flair": {"acquisition": '
                          '"3D"}}; null = entity absent, "*" = entity present')
    sel.add_argument("--skip-bids-validation", "--skip_bids_validation", dest="skip_bids_validation",
                     action="store_true", help="do not validate the input dataset")

    model = parser.add_argument_group("Model and lesion definition")
    model.add_argument("--model", type=_existing_dir, metavar="PATH",
                       help="a model bundle directory, model.safetensors + model.json (default: the packaged "
                            "model)")
    model.add_argument("--threshold", type=_probability, metavar="P",
                       help="probability above which a voxel is lesion (default: the bundle's)")
    model.add_argument("--seed-threshold", type=_seed_probability, metavar="P",
                       help="keep only lesions whose probability reaches P somewhere, 0 = off "
                            "(default: the bundle's)")
    model.add_argument("--seed-threshold-thick", type=_seed_probability, metavar="P",
                       help=_shown(show_all, "the seed threshold of thick-slice scans (a voxel side of 2 mm or "
                                             "more) (default: the bundle's; with --seed-threshold alone, that one)"))
    model.add_argument("--min-lesion-size", dest="min_lesion_size", type=_non_negative_float, metavar="MM3",
                       help="smallest lesion kept, in mm^3 (default: the bundle's)")
    model.add_argument("--normalization", choices=INFERENCE_NORMALIZATIONS, default="model",
                       help="intensity normalization; 'model' (default) is the one the bundle was trained "
                            "with, anything else is an ablation")

    pre = parser.add_argument_group("Preprocessing")
    pre.add_argument("--n4", choices=SWITCHES, default="auto",
                     help="N4 bias-field correction; auto (default) decides from the image and its sidecar")
    pre.add_argument("--skullstrip", choices=SWITCHES, default="auto",
                     help="brain extraction; auto (default) skips it for images already skull-stripped")
    pre.add_argument("--force-contrast", dest="force_contrast", action="store_true",
                     help="segment images whose contrast does not look like FLAIR (e.g. T1-like), with a "
                          "warning, instead of refusing them")
    pre.add_argument("--min-brain-volume", dest="min_brain_volume", type=_non_negative_float, metavar="ML",
                     help="smallest plausible brain-mask volume in mL (default 300: adult brains); lower it for "
                          "children's brains or scans covering part of the brain")

    run = parser.add_argument_group("Running")
    run.add_argument("-w", "--work-dir", dest="work_dir", type=_work_dir, metavar="DIR",
                     help="intermediate results; reusing it resumes a run, deleting it afterwards is safe "
                          "(default: ./work)")
    run.add_argument("--random-seed", dest="random_seed", type=_seed, default=DEFAULT_RANDOM_SEED,
                     metavar="SEED",
                     help="seed of every random generator (registration sampling, numpy, torch); runs are "
                          f"bit-identical for a given seed (default: {DEFAULT_RANDOM_SEED})")
    run.add_argument("--overwrite", action="store_true",
                     help="recompute runs whose outputs are already complete (default: skip them)")
    run.add_argument("--stop-on-first-crash", action="store_true",
                     help="stop everything at the first failing step (default: other runs go on)")
    run.add_argument("--boilerplate-only", "--boilerplate_only", dest="boilerplate_only", action="store_true",
                     help="only write the methods boilerplate (logs/CITATION.md) and exit")
    run.add_argument("--no-longitudinal", dest="longitudinal", action="store_false",
                     help="do not compare each subject's sessions (default: each follow-up against its "
                          "baseline; lesion change classes in docs/longitudinal.md)")
    run.add_argument("--no-location", dest="location", action="store_false",
                     help="no McDonald location classes, no MNI152-space masks (default: both)")
    run.add_argument("-v", "--verbose", dest="verbose", action="count", default=0,
                     help="more messages: -v debug messages and nipype's warnings and tracebacks, "
                          "-vv nipype's progress, -vvv nipype's debug messages")

    perf = parser.add_argument_group("Resources")
    perf.add_argument("--nprocs", "--n-cpus", dest="nprocs", type=_positive_int, metavar="N",
                      help="CPUs to use in all (default: the CPUs available)")
    perf.add_argument("--omp-nthreads", dest="omp_nthreads", type=_positive_int, metavar="N",
                      help="threads per run for torch, ITK and BLAS; nprocs / omp-nthreads runs go in "
                           "parallel (default: min(nprocs, 8))")
    perf.add_argument("--mem", "--mem-gb", dest="mem_gb", type=_positive_float, metavar="GB",
                      help="upper bound of memory the scheduler may plan for (default: 90%% of RAM)")
    perf.add_argument("--device", choices=DEVICES, default="auto",
                      help="where the network runs; auto (default) = CUDA when available")
    perf.add_argument("--precision", choices=PRECISIONS, default="auto",
                      help="auto (default) = bf16 on CPUs that have it natively, fp16 on CUDA; fp32 forces "
                           "full precision (slower, bitwise reproducible across CPUs)")
    perf.add_argument("--use-plugin", "--use_plugin", dest="use_plugin", type=_plugin_file, metavar="FILE",
                      help="YAML/JSON file choosing the nipype execution plugin, as in fMRIPrep: "
                           "'plugin: SLURM' and 'plugin_args: {sbatch_args: ...}'")
    perf.add_argument("--nipype-plugin", dest="nipype_plugin", choices=NIPYPE_PLUGINS, metavar="NAME",
                      help="nipype execution plugin, overriding --use-plugin's (default: MultiProc with "
                           "--nprocs)")
    perf.add_argument("--plugin-args", dest="plugin_args", type=_plugin_args, metavar="JSON",
                      help="arguments of the plugin as a JSON object, merged over --use-plugin's")

    add_group_level_arguments(parser, show_all=show_all)
    add_crosssite_arguments(parser, show_all=show_all)
    return parser


def _shown(show: bool, text: str) -> str:
    """``text`` as an option's help when its group is shown, else hidden from ``--help``."""
    return text if show else argparse.SUPPRESS


def add_group_level_arguments(parser: argparse.ArgumentParser, show_all: bool = True) -> argparse._ArgumentGroup:
    """The argument groups of the ``group`` analysis level: the cohort (always in ``--help``) and
    ``--train`` (in ``--help-all``, or when ``show_all``).

    Flags for the group level belong here; :func:`parse_args` turns them into the typed
    :class:`~bids_msseg.settings.GroupSettings` (``Options.group``), whose fields give the defaults.
    Returns the cohort group.
    """
    group = parser.add_argument_group(
        "Group level",
        "'group' reads the participant outputs and writes group_lesions.tsv, group_report.html and, for runs "
        "with expert lesion masks, group_evaluation.tsv.",
    )
    group.add_argument("--site-column", dest="site_column", metavar="COLUMN",
                       help="participants.tsv column naming each participant's site (default: 'site' when "
                            "present, else the FLAIR sidecar's InstitutionName, else its scanner)")
    group.add_argument("--expert-masks", "--masks-dir", dest="masks_dir", type=_existing_dir, metavar="DIR",
                       help="derivatives folder holding expert masks named sub-*/[ses-*/]anat/<FLAIR "
                            "entities>_label-lesion_mask.nii.gz (default: search bids_dir/derivatives/*/)")
    group.add_argument("--msseg2016-metrics", dest="msseg2016", action="store_true",
                       help="also score lesion detection with the MSSEG-2016 rules (animaSegPerfAnalyzer)")

    train = parser.add_argument_group(
        "Training (group --train)",
        "Trains a model on the FLAIRs that have expert lesion masks and exports it as a bundle to "
        "<output_dir>/models/<train-name>/ (use it with --model). Work goes to -w; rerunning with the same -w "
        "resumes. Also used: --participant-label, --session-label, --bids-filter-file, --expert-masks, --n4, "
        "--skullstrip, --random-seed, --device, --precision, --omp-nthreads.",
    ) if show_all else parser
    train.add_argument("--train", action="store_true",
                       help=_shown(show_all, "train a model on this dataset's expert lesion masks"))
    train.add_argument("--train-name", dest="train_name", type=_model_name, default=_TRAIN.name,
                       metavar="NAME", help=_shown(show_all, "name of the trained model, its bundle folder and "
                                                             f"model id (default: {_TRAIN.name})"))
    train.add_argument("--extra-train-dataset", dest="extra_train_dataset", type=_existing_dir,
                       action="append", metavar="DIR",
                       help=_shown(show_all, "another BIDS dataset merged into the training set (repeatable); "
                                             "its masks are searched in its own derivatives/*/. In a "
                                             "--cross-site study its scans join every model's training and "
                                             "are never tested (e.g. synthetic or lesion-free scans)"))
    train.add_argument("--epochs", type=_positive_int, default=_TRAIN.epochs, metavar="N",
                       help=_shown(show_all, f"training epochs (default: {_TRAIN.epochs})"))
    train.add_argument("--steps-per-epoch", dest="steps_per_epoch", type=_positive_int, metavar="N",
                       help=_shown(show_all, "optimizer steps per epoch (default: one pass over the training "
                                             "slices / batch size)"))
    train.add_argument("--batch-size", dest="batch_size", type=_positive_int, default=_TRAIN.batch_size,
                       metavar="N", help=_shown(show_all, f"slices per optimizer step (default: {_TRAIN.batch_size})"))
    train.add_argument("--lr", type=_positive_float, default=_TRAIN.lr, metavar="LR",
                       help=_shown(show_all, f"Adam learning rate (default: {_TRAIN.lr:g})"))
    train.add_argument("--weight-decay", dest="weight_decay", type=_non_negative_float,
                       default=_TRAIN.weight_decay, metavar="WD",
                       help=_shown(show_all, f"Adam weight decay (default: {_TRAIN.weight_decay:g})"))
    train.add_argument("--lesion-weight", dest="lesion_weight", type=_probability, default=_TRAIN.lesion_weight,
                       metavar="W",
                       help=_shown(show_all, "weight of the lesion class in the binary cross-entropy, background "
                                             f"1 - W (default: {_TRAIN.lesion_weight:g})"))
    train.add_argument("--val-fraction", dest="val_fraction", type=_probability, default=_TRAIN.val_fraction,
                       metavar="F",
                       help=_shown(show_all, "share of subjects held out for validation, model selection and "
                                             f"threshold (default: {_TRAIN.val_fraction:g})"))
    train.add_argument("--architecture", choices=ARCHITECTURES,
                       help=_shown(show_all, "network (default: the --init-model's, else UnetPlusPlus)"))
    train.add_argument("--train-normalization", dest="train_normalization", choices=NORMALIZATIONS,
                       help=_shown(show_all, "intensity normalization (default: the --init-model's, else "
                                             "quantile)"))
    train.add_argument("--augment-quality", dest="augment_quality", type=_non_negative_int, nargs="?",
                       const=1, default=_TRAIN.augment_quality, metavar="N",
                       help=_shown(show_all, "add N image-quality-degraded copies of each training scan "
                                             "(DeepLesionBrain: blur, unsharp masking, thick slices); the flag "
                                             f"alone means 1 (default: {_TRAIN.augment_quality})"))
    train.add_argument("--augment-intensity", dest="augment_intensity", type=_probability, nargs="?",
                       const=DEFAULT_INTENSITY_AUGMENTATION, default=_TRAIN.augment_intensity, metavar="P",
                       help=_shown(show_all, "perturb each training slice's intensities with probability P: a "
                                             "smooth bias field, a gamma and noise, what a rescan or another "
                                             "scanner changes; the flag alone means "
                                             f"{DEFAULT_INTENSITY_AUGMENTATION:g} (default: "
                                             f"{_TRAIN.augment_intensity:g})"))
    train.add_argument("--average-from", dest="average_from", type=_non_negative_int, default=_TRAIN.average_from,
                       metavar="EPOCH",
                       help=_shown(show_all, "export the mean of the weights after every training step from "
                                             "this epoch on (stochastic weight averaging) instead of the epoch "
                                             "with the best validation Dice; 0 = off (default: "
                                             f"{_TRAIN.average_from})"))
    train.add_argument("--synthetic-pool", dest="synthetic_pool", type=_existing_dir, metavar="DIR",
                       help=_shown(show_all, "a pool of synthetic training scans (scripts/build_default_model.py "
                                             "pool, normalized to the --init-model's reference) whose slices fill "
                                             "--synthetic-fraction of every batch; never validated on"))
    train.add_argument("--synthetic-fraction", dest="synthetic_fraction", type=_probability,
                       default=_TRAIN.synthetic_fraction, metavar="F",
                       help=_shown(show_all, "share of each batch from --synthetic-pool (default: "
                                             f"{_TRAIN.synthetic_fraction:g})"))
    train.add_argument("--lesion-sampling", dest="lesion_sampling", choices=("slice", "lesion"),
                       default=_TRAIN.lesion_sampling,
                       help=_shown(show_all, "how slices with lesion are drawn: 'slice', any of them (large lesions "
                                             "cross many slices and dominate), or 'lesion', each lesion of a scan "
                                             "alike, so small lesions count (default: "
                                             f"{_TRAIN.lesion_sampling})"))
    train.add_argument("--normal-fraction", dest="normal_fraction", type=_probability,
                       default=_TRAIN.normal_fraction, metavar="F",
                       help=_shown(show_all, "share of each batch drawn from slices with expert masks of normal "
                                             "hyperintensities (<FLAIR entities>_label-normalwmh_mask.nii.gz "
                                             "beside the lesion masks), hard negatives (default: "
                                             f"{_TRAIN.normal_fraction:g})"))
    train.add_argument("--normal-weight", dest="normal_weight", type=_positive_float,
                       default=_TRAIN.normal_weight, metavar="W",
                       help=_shown(show_all, "loss weight of a normal-hyperintensity voxel relative to other "
                                             f"background (default: {_TRAIN.normal_weight:g})"))
    train.add_argument("--lesion-balance", dest="lesion_balance", type=_non_negative_float,
                       default=_TRAIN.lesion_balance, metavar="G",
                       help=_shown(show_all, "weigh each lesion in the loss by its size to the power -G, rescaled "
                                             "so lesion voxels keep their total weight: 0 counts every voxel alike "
                                             "(the paper's), 1 every lesion alike, so small lesions count "
                                             f"(default: {_TRAIN.lesion_balance:g})"))
    train.add_argument("--init-model", dest="init_model", type=_existing_dir, metavar="PATH",
                       help=_shown(show_all, "a model bundle to fine-tune from (default: random "
                                             "initialization)"))
    train.add_argument("--context-slices", dest="context_slices", type=_non_negative_int, metavar="N",
                       help=_shown(show_all, "give the network N neighbouring slices on each side as more input "
                                             "channels (2.5D; a 2D --init-model is widened to them); 0 = the "
                                             "paper's single slice (default: the --init-model's, else 0)"))
    train.add_argument("--checkpoint-dir", dest="checkpoint_dir", type=Path, metavar="DIR",
                       help=_shown(show_all, "also keep the newest and the best weights (16-bit, weights only) and "
                                             "the training log in DIR after every epoch, and resume from them when "
                                             "-w has no checkpoint: a training longer than a session goes on "
                                             "elsewhere from a copied or committed DIR (default: none)"))
    return group


#: Training sets and ablations of ``group --cross-site`` (the lists of :mod:`bids_msseg.settings`).
CROSSSITE_COMBINATIONS = COMBINATIONS
CROSSSITE_ABLATIONS = ABLATIONS


def add_crosssite_arguments(parser: argparse.ArgumentParser, show_all: bool = True) -> Any:
    """The options of the cross-site study (``group --cross-site``, :mod:`bids_msseg.crosssite`),
    shown in ``--help-all`` (or when ``show_all``)."""
    group: Any = parser.add_argument_group(
        "Cross-site study (group --cross-site)",
        "Trains one model per training set of sites (and per ablation arm) with the training options, tests "
        "every model on every site's held-out test subjects and writes <output_dir>/crosssite/ (TSV tables, "
        "report.html). Rerunning with the same -w and output directory resumes; --overwrite starts every "
        "experiment over.",
    ) if show_all else parser
    group.add_argument("--cross-site", dest="cross_site", action="store_true",
                       help=_shown(show_all, "run the cross-site generalization study"))
    group.add_argument("--extra-bids-dir", dest="extra_bids_dir", type=_existing_dir, action="append",
                       metavar="DIR", help=_shown(show_all, "another BIDS dataset of the study (repeatable); with "
                                                            "several datasets each one is a site unless "
                                                            "--site-column/--site-field"))
    group.add_argument("--site-field", dest="site_field", nargs="+", metavar="FIELD",
                       help=_shown(show_all, "sidecar field(s) naming the site, e.g. Manufacturer "
                                             "MagneticFieldStrength (default with one dataset: those of "
                                             "InstitutionName, Manufacturer, ManufacturersModelName, "
                                             "MagneticFieldStrength that the sidecars have)"))
    group.add_argument("--sites", nargs="+", metavar="SITE",
                       help=_shown(show_all, "only these sites (labels as logged)"))
    group.add_argument("--combinations", nargs="+", choices=CROSSSITE_COMBINATIONS,
                       default=list(DEFAULT_COMBINATIONS),
                       help=_shown(show_all, "training sets: each site alone, all but one, all together, merged "
                                             "(leave-one-out and all), every two (default: "
                                             f"{' '.join(DEFAULT_COMBINATIONS)})"))
    group.add_argument("--test-fraction", dest="test_fraction", type=_probability,
                       default=_CROSSSITE.test_fraction, metavar="F",
                       help=_shown(show_all, "share of each site's subjects held out of every training and tested "
                                             f"on (default: {_CROSSSITE.test_fraction:g})"))
    group.add_argument("--holdout", choices=HOLDOUTS, default=_CROSSSITE.holdout,
                       help=_shown(show_all, "what is tested: 'subjects' holds --test-fraction of each site's "
                                             "subjects out of every training; 'site' is leave-one-site-out: "
                                             "each model is tested on every scan of the sites it did not train "
                                             f"on (default: {_CROSSSITE.holdout})"))
    group.add_argument("--compare-model", dest="compare_model", type=_existing_dir, action="append",
                       metavar="PATH", help=_shown(show_all, "a model bundle scored on the same test scans "
                                                             "without training, e.g. the default model "
                                                             "(repeatable)"))
    group.add_argument("--ablation", nargs="+", choices=CROSSSITE_ABLATIONS, default=[],
                       help=_shown(show_all, "add ablation arms: the other intensity normalization "
                                             "(quantile/linear), architecture (UNet++/UNet), context (2.5D with "
                                             "one neighbouring slice each side / 2D), sampling (the other "
                                             "--lesion-sampling) or intensity (with / without "
                                             "--augment-intensity), compared with Wilcoxon signed-rank tests "
                                             "(default: none)"))
    return group


def available_cpus() -> int:
    """CPUs this process may run on (respects affinity masks and cgroups' cpusets)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def parse_args(argv: Sequence[str] | None = None) -> Options:
    """Parse ``argv`` (default ``sys.argv[1:]``) into :class:`Options`.

    Raises ``SystemExit`` (64 usage, 17 unknown analysis level, 0 for --help/--version) as
    argparse does; :func:`bids_msseg.cli.run.main` turns it into a return code.
    """
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    ns = vars(parser.parse_args(argv))
    ns["command_line"] = shlex.join(["bids_msseg", *argv])
    nprocs = ns.pop("nprocs") or available_cpus()
    omp = ns.pop("omp_nthreads") or min(nprocs, 8)
    work_dir = ns.pop("work_dir") or Path("work").absolute()
    plugin_file = ns.pop("use_plugin") or {}
    ns["nipype_plugin"] = ns["nipype_plugin"] or plugin_file.get("plugin") or "MultiProc"
    ns["plugin_args"] = {**plugin_file.get("plugin_args", {}), **(ns["plugin_args"] or {})}
    group = _group_settings(ns)
    names = {f.name for f in fields(Options)}
    known = {k: v for k, v in ns.items() if k in names}
    extra = {k: v for k, v in ns.items() if k not in names}
    for key in ("participant_label", "session_label"):
        if known.get(key) is not None:
            known[key] = tuple(known[key])
    return Options(nprocs=nprocs, omp_nthreads=omp, work_dir=work_dir, group=group, extra=extra, **known)


def _group_settings(ns: dict[str, Any]) -> GroupSettings:
    """Pop the group-level flags from the parsed namespace ``ns`` into typed settings (built once, here)."""
    train_name, masks_dir, site_column = ns.pop("train_name"), ns.pop("masks_dir"), ns.pop("site_column")
    seed = ns["random_seed"] if ns.get("random_seed") is not None else DEFAULT_RANDOM_SEED
    training = TrainSettings(
        name=train_name, masks_dir=masks_dir, extra_datasets=tuple(ns.pop("extra_train_dataset") or ()),
        epochs=ns.pop("epochs"), steps_per_epoch=ns.pop("steps_per_epoch"), batch_size=ns.pop("batch_size"),
        lr=ns.pop("lr"), weight_decay=ns.pop("weight_decay"), lesion_weight=ns.pop("lesion_weight"),
        val_fraction=ns.pop("val_fraction"), architecture=ns.pop("architecture"),
        normalization=ns.pop("train_normalization"), augment_quality=ns.pop("augment_quality"),
        augment_intensity=ns.pop("augment_intensity"), synthetic_pool=ns.pop("synthetic_pool"),
        synthetic_fraction=ns.pop("synthetic_fraction"),
        lesion_sampling=ns.pop("lesion_sampling"), normal_fraction=ns.pop("normal_fraction"),
        normal_weight=ns.pop("normal_weight"), lesion_balance=ns.pop("lesion_balance"), init_model=ns.pop("init_model"),
        context=ns.pop("context_slices"), average_from=ns.pop("average_from"),
        checkpoint_dir=ns.pop("checkpoint_dir"), seed=seed)
    crosssite = CrossSiteSettings(
        extra_bids_dirs=tuple(ns.pop("extra_bids_dir") or ()), site_column=site_column,
        site_fields=tuple(ns.pop("site_field") or ()), sites=tuple(ns.pop("sites") or ()),
        combinations=tuple(ns.pop("combinations")), test_fraction=ns.pop("test_fraction"),
        holdout=ns.pop("holdout"), compare_models=tuple(ns.pop("compare_model") or ()),
        ablations=tuple(ns.pop("ablation")))
    cohort = CohortSettings(site_column=site_column, masks_dir=masks_dir, msseg2016=ns.pop("msseg2016"))
    return GroupSettings(train=ns.pop("train"), cross_site=ns.pop("cross_site"), cohort=cohort,
                         training=training, crosssite=crosssite)
