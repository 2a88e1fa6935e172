"""The longitudinal step of a subject: after its runs are segmented, compare every follow-up with the baseline.

Reads only what the participant level wrote (probability maps, brain masks) and the raw FLAIRs;
writes the change derivatives (:mod:`bids_msseg.longitudinal.outputs`) and a per-subject report.

* **Visits.** One FLAIR per session (the first by file name when a session has several); a subject
  needs two sessions with a segmented FLAIR. The baseline is the earliest session by date
  (``sessions.tsv`` ``acq_time``, else the sidecar's ``AcquisitionDateTime``/``AcquisitionDate``),
  or by session label when no date is known; every later session is compared with it.
* **Per pair.** Both FLAIRs are bias-corrected (N4, inside their brain masks) and divided by their
  brain's median; the follow-up is registered to the baseline (ANTs, rigid, brain-masked, on 2 mm
  copies, seeded);
  the follow-up's FLAIR, probability and brain are resampled onto the baseline grid, the change is
  classified there (:func:`~bids_msseg.longitudinal.change.detect_change`) and the change map is
  carried back onto the follow-up's grid. A pair that cannot be registered gets a status line in the
  summary and a warning naming the subject, and the others go on.
"""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from bids_msseg.bids import FlairRun
from bids_msseg.derivatives import derivative_paths
from bids_msseg.io import load_3d, write_text_atomic
from bids_msseg.lesions import LesionDefinition, seed_threshold_for
from bids_msseg.longitudinal.change import ChangeResult, ChangeRule, detect_change, match_intensities, normalize_visit
from bids_msseg.longitudinal.outputs import BIDSIGNORE, subject_paths, write_pair, write_summary
from bids_msseg.longitudinal.registration import (
    REGISTRATION_MM,
    PairRegistration,
    RegistrationError,
    register_pair,
    resample,
)
from bids_msseg.longitudinal.report import render_subject_report
from bids_msseg.preproc.n4 import n4_correct

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class Visit:
    """One session's FLAIR of a subject, with its acquisition date when known."""

    run: FlairRun
    when: datetime | None = None

    @property
    def session(self) -> str:
        return str(self.run.session)


@dataclass(frozen=True)
class Visit3D:
    """A visit's images on its own grid, ready for comparison."""

    image: nib.Nifti1Image
    flair: np.ndarray  # bias-corrected, divided by the brain median
    brain: np.ndarray
    probability: np.ndarray


@dataclass
class PairResult:
    """What happened to one baseline/follow-up pair."""

    baseline: Visit
    followup: Visit
    status: str = "ok"
    change: ChangeResult | None = None
    registration: PairRegistration | None = None
    seconds: float = 0.0
    paths: dict[str, Path] = field(default_factory=dict)
    followup_on_baseline: np.ndarray | None = None  # the follow-up's normalized FLAIR on the baseline grid


def _parse_when(value: Any) -> datetime | None:
    if not value or not isinstance(value, str):
        return None
    text = value.strip().replace("Z", "")
    for parse in (datetime.fromisoformat, lambda t: datetime.combine(date.fromisoformat(t[:10]), datetime.min.time())):
        try:
            return parse(text)
        except ValueError:
            continue
    return None


def session_dates(bids_dir: Path | None, subject: str) -> dict[str, datetime]:
    """``acq_time`` per session (label without ``ses-``) from ``sub-<label>_sessions.tsv``, when present."""
    if bids_dir is None:
        return {}
    path = Path(bids_dir) / f"sub-{subject}" / f"sub-{subject}_sessions.tsv"
    try:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
    except OSError:
        return {}
    dates = {}
    for row in rows:
        when = _parse_when(row.get("acq_time"))
        label = str(row.get("session_id", "")).removeprefix("ses-")
        if when is not None and label:
            dates[label] = when
    return dates


def _session_key(label: str) -> tuple[int, Any]:
    return (0, int(label)) if label.isdigit() else (1, label)


def subject_visits(runs: Iterable[FlairRun], bids_dir: Path | None = None) -> dict[str, list[Visit]]:
    """Subjects with two or more sessions, each with its visits in time order (module docstring)."""
    by_subject: dict[str, dict[str, FlairRun]] = {}
    for run in sorted(runs, key=lambda r: r.relpath):
        if run.session is None:
            continue
        by_subject.setdefault(run.subject, {}).setdefault(run.session, run)
    visits: dict[str, list[Visit]] = {}
    for subject, sessions in sorted(by_subject.items()):
        if len(sessions) < 2:
            continue
        dates = session_dates(bids_dir, subject)
        items = []
        for label, run in sessions.items():
            meta = run.metadata or {}
            when = dates.get(label) or _parse_when(meta.get("AcquisitionDateTime")) \
                or _parse_when(meta.get("AcquisitionDate"))
            items.append(Visit(run, when))
        dated = all(v.when is not None for v in items)
        items.sort(key=(lambda v: (v.when, _session_key(v.session))) if dated else (lambda v: _session_key(v.session)))
        visits[subject] = items
    return visits


def load_visit(out_dir: Path, run: FlairRun) -> Visit3D:
    """A segmented visit: its raw FLAIR (N4 inside the brain, divided by the brain median), brain
    mask and probability map as the participant level wrote them."""
    paths = derivative_paths(out_dir, run.relpath)
    flair, img = load_3d(run.path)
    brain = load_3d(paths["brain"])[0] > 0
    probability = np.asarray(load_3d(paths["probseg"])[0], np.float32)
    corrected = n4_correct(np.asarray(flair, np.float32), img.affine, mask=brain)
    return Visit3D(img, normalize_visit(corrected, brain), brain, probability)


def compare_visits(baseline: Visit3D, followup: Visit3D, *, threshold: float, definition: LesionDefinition,
                   rule: ChangeRule = ChangeRule(), seed_threshold: float = 0.0, seed: int = 0,
                   transform: str = "Rigid", registration_mm: float = REGISTRATION_MM,
                   ) -> tuple[ChangeResult, PairRegistration, np.ndarray, np.ndarray]:
    """Register, resample and classify; return the change (baseline grid), the registration, the
    change map on the follow-up's grid and the follow-up's normalized FLAIR on the baseline grid.
    ``seed_threshold`` is the run's hysteresis threshold (lesion masks as the participant level's),
    ``seed`` the registration's random seed."""
    b_aff, f_aff = baseline.image.affine, followup.image.affine
    registration = register_pair(baseline.flair, b_aff, baseline.brain, followup.flair, f_aff, followup.brain,
                                 transform=transform, seed=seed, registration_mm=registration_mm)
    to_base = registration.followup_to_baseline(b_aff, f_aff)
    shape = baseline.flair.shape
    fu_flair = resample(followup.flair, to_base, shape, order=1)
    fu_prob = resample(followup.probability, to_base, shape, order=1)
    fu_brain = resample(followup.brain.astype(np.uint8), to_base, shape, order=0) > 0
    both = baseline.brain & fu_brain
    fu_flair = match_intensities(fu_flair, baseline.flair, both)
    change = detect_change(baseline.flair, fu_flair, baseline.probability, fu_prob, both,
                           b_aff, threshold=threshold, definition=definition, rule=rule,
                           seed_threshold=seed_threshold)
    on_followup = resample(change.change_map, registration.baseline_to_followup(b_aff, f_aff),
                           followup.flair.shape, order=0)
    return change, registration, on_followup, fu_flair


def days_between(a: datetime | None, b: datetime | None) -> float | None:
    if a is None or b is None:
        return None
    return round((b - a).total_seconds() / 86400.0, 2)


def run_volume_ml(out_dir: Path, run: FlairRun) -> float | None:
    """The total lesion volume in a run's own summary (its lesion mask on its own grid); None when unreadable."""
    try:
        with derivative_paths(out_dir, run.relpath)["summary"].open(newline="") as handle:
            row = next(csv.DictReader(handle, delimiter="\t"))
        return float(row["total_lesion_volume_ml"])
    except (OSError, StopIteration, KeyError, TypeError, ValueError):
        return None


def _summary_row(subject: str, pair: PairResult, out_dir: Path) -> dict[str, Any]:
    """The subject summary's row of one pair: counts per class, the runs' own volumes and the paired
    comparison's (``paired_*``; docs/longitudinal.md says why they differ), the registration."""
    base_ml, follow_ml = run_volume_ml(out_dir, pair.baseline.run), run_volume_ml(out_dir, pair.followup.run)
    row: dict[str, Any] = {
        "participant_id": f"sub-{subject}", "baseline_session": f"ses-{pair.baseline.session}",
        "followup_session": f"ses-{pair.followup.session}",
        "days_between": days_between(pair.baseline.when, pair.followup.when), "status": pair.status,
        "baseline_volume_ml": base_ml, "followup_volume_ml": follow_ml,
        "volume_change_ml": round(follow_ml - base_ml, 4) if base_ml is not None and follow_ml is not None else None,
        "seconds": round(pair.seconds, 1)}
    if pair.change is not None and pair.registration is not None:
        c = pair.change
        row.update({
            "new_count": c.count("new"), "new_volume_ml": round(c.volume_mm3("followup_volume_mm3", "new") / 1000, 4),
            "enlarging_count": c.count("enlarging"),
            "enlarging_volume_ml": round(c.volume_mm3("volume_change_mm3", "enlarging") / 1000, 4),
            "shrinking_count": c.count("shrinking"), "disappearing_count": c.count("disappearing"),
            "not_seen_count": c.count("not_seen"), "stable_count": c.count("stable"),
            "paired_baseline_volume_ml": round(c.volume_mm3("baseline_volume_mm3") / 1000, 4),
            "paired_followup_volume_ml": round(c.volume_mm3("followup_volume_mm3") / 1000, 4),
            "paired_volume_change_ml": round(c.volume_mm3("volume_change_mm3") / 1000, 4),
            "registration": pair.registration.transform,
            "registration_brain_dice": round(pair.registration.brain_dice, 4),
            "registration_correlation": round(pair.registration.correlation, 4)})
    return row


def _update_bidsignore(out_dir: Path) -> None:
    path = Path(out_dir) / ".bidsignore"
    lines = path.read_text().splitlines() if path.exists() else []
    missing = [line for line in BIDSIGNORE if line not in lines]
    if missing:
        write_text_atomic(path, "\n".join(lines + missing) + "\n")


def run_subject(out_dir: Path, subject: str, visits: Sequence[Visit], *, threshold: float,
                definition: LesionDefinition, rule: ChangeRule = ChangeRule(), seed_threshold: float = 0.0,
                seed_threshold_thick: float | None = None, seed: int = 0, meta: Mapping[str, Any] | None = None,
                report: bool = True, registration_mm: float = REGISTRATION_MM) -> list[PairResult]:
    """Compare every follow-up of one subject with its baseline; write the outputs and the summary.

    The lesion masks are compared on the baseline's grid, so its voxel sizes choose the seed threshold
    (``seed_threshold_thick`` on a thick-slice baseline, :func:`bids_msseg.lesions.seed_threshold_for`)."""
    out_dir = Path(out_dir)
    _update_bidsignore(out_dir)
    baseline_visit, results = visits[0], []
    start = time.perf_counter()
    try:
        base: Visit3D | None = load_visit(out_dir, baseline_visit.run)
    except (OSError, ValueError) as err:
        base = None
        LOGGER.warning("sub-%s: the baseline ses-%s cannot be read (%s); no longitudinal change", subject,
                       baseline_visit.session, err)
    base_seconds = time.perf_counter() - start
    if base is not None:
        seed_threshold = seed_threshold_for(base.image.header.get_zooms(), seed_threshold, seed_threshold_thick)
    for followup_visit in visits[1:]:
        pair = PairResult(baseline_visit, followup_visit)
        start = time.perf_counter() - base_seconds
        try:
            if base is None:
                raise ValueError(f"the baseline ses-{baseline_visit.session} cannot be read")
            follow = load_visit(out_dir, followup_visit.run)
            change, registration, on_followup, fu_flair = compare_visits(
                base, follow, threshold=threshold, definition=definition, rule=rule, seed_threshold=seed_threshold,
                seed=seed, registration_mm=registration_mm)
        except RegistrationError as err:
            pair.status = f"registration failed: {err}"
            LOGGER.warning("sub-%s: ses-%s cannot be registered to ses-%s (%s); no change computed for this pair",
                           subject, followup_visit.session, baseline_visit.session, err)
        except (OSError, ValueError) as err:
            pair.status = f"failed: {err}"
            LOGGER.warning("sub-%s: ses-%s not compared with ses-%s (%s)", subject, followup_visit.session,
                           baseline_visit.session, err)
        else:
            pair.change, pair.registration, pair.followup_on_baseline = change, registration, fu_flair
            pair_meta = {
                **(meta or {}),
                "Threshold": float(threshold), "SeedThreshold": float(seed_threshold),
                "MinimumLesionSize_mm3": float(definition.min_size_mm3),
                "Connectivity": definition.neighbours,
                "ChangeRule": rule.sidecar(),
                "Registration": {"Software": "ANTs", "Transform": registration.transform,
                                 "Resolution_mm": registration.resolution_mm,
                                 "BaselineToFollowup_LPS": registration.itk_lps.round(6).tolist(),
                                 "BrainDice": round(registration.brain_dice, 4),
                                 "Correlation": round(registration.correlation, 4)},
                "BaselineSession": baseline_visit.session, "FollowupSession": followup_visit.session,
            }
            pair.paths = write_pair(out_dir, baseline_visit.run.relpath, followup_visit.run.relpath,
                                    baseline_img=base.image, followup_img=follow.image,
                                    change_baseline=change.change_map, change_followup=on_followup,
                                    table=change.table, meta=pair_meta)
            LOGGER.info("sub-%s: ses-%s vs ses-%s: %d new, %d enlarging, %d shrinking, %d disappearing, "
                        "%d not seen at follow-up, %d stable", subject, followup_visit.session,
                        baseline_visit.session, change.count("new"), change.count("enlarging"),
                        change.count("shrinking"), change.count("disappearing"), change.count("not_seen"),
                        change.count("stable"))
        pair.seconds = time.perf_counter() - start
        results.append(pair)
    rows = [_summary_row(subject, p, out_dir) for p in results]
    write_summary(out_dir, subject, rows)
    if report and base is not None:
        try:
            render_subject_report(subject_paths(out_dir, subject)["report"], subject, base, results, rows)
        except Exception as err:  # a report must not fail the outputs it describes
            LOGGER.warning("sub-%s: longitudinal report not written (%s)", subject, err)
    return results


def subject_up_to_date(out_dir: Path, subject: str, visits: Sequence[Visit]) -> bool:
    """True when the subject's summary lists exactly these sessions, all compared, and is newer than
    every session's probability map (so a rerun after new segmentations recomputes the change)."""
    summary = subject_paths(out_dir, subject)["summary"]
    try:
        with summary.open(newline="") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
        newest = max(derivative_paths(out_dir, v.run.relpath)["probseg"].stat().st_mtime for v in visits)
        written = summary.stat().st_mtime
    except (OSError, ValueError):
        return False
    wanted = [(f"ses-{visits[0].session}", f"ses-{v.session}") for v in visits[1:]]
    listed = [(r.get("baseline_session"), r.get("followup_session")) for r in rows]
    return listed == wanted and all(r.get("status") == "ok" for r in rows) and written >= newest


def run_longitudinal(out_dir: Path, runs: Iterable[FlairRun], *, bids_dir: Path | None, threshold: float,
                     definition: LesionDefinition, rule: ChangeRule = ChangeRule(), seed_threshold: float = 0.0,
                     seed_threshold_thick: float | None = None, seed: int = 0,
                     meta: Mapping[str, Any] | None = None, overwrite: bool = True,
                     registration_mm: float = REGISTRATION_MM) -> dict[str, list[PairResult]]:
    """The longitudinal step for every subject of ``runs`` with two or more segmented sessions.

    ``runs`` are the runs whose participant outputs are complete; single-session subjects are left
    alone. Without ``overwrite``, a subject whose outputs are up to date (:func:`subject_up_to_date`)
    is skipped.
    """
    results = {}
    for subject, visits in subject_visits(runs, bids_dir).items():
        if not overwrite and subject_up_to_date(out_dir, subject, visits):
            LOGGER.info("sub-%s: longitudinal outputs up to date, skipped (--overwrite recomputes)", subject)
            continue
        LOGGER.info("sub-%s: longitudinal change over %d sessions (baseline ses-%s)", subject, len(visits),
                    visits[0].session)
        results[subject] = run_subject(out_dir, subject, visits, threshold=threshold, definition=definition,
                                       rule=rule, seed_threshold=seed_threshold,
                                       seed_threshold_thick=seed_threshold_thick, seed=seed, meta=meta,
                                       registration_mm=registration_mm)
    return results
