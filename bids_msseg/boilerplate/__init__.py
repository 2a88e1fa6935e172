"""Methods boilerplate: a citable description of what a bids_msseg run did, with its references.

A subpackage of bids_msseg (``bids_msseg/boilerplate/``, templates as package data). The methods
text is a jinja2 markdown template (``methods.md.j2``) that cites pandoc-style (``[@key]``) the entries of
``references.bib``; both files are found next to this module through ``importlib.resources``, so
nothing depends on the working directory or on the package being unzipped.

:func:`render_boilerplate` returns the pandoc-style text (for pandoc/LaTeX users, with
``CITATION.bib``); :func:`write_citation` writes ``logs/CITATION.md`` with numbered citations and
a reference list, readable as is, and ``logs/CITATION.bib`` with the cited entries.
"""

from __future__ import annotations

import functools
import logging
import re
import unicodedata
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2

from bids_msseg import __version__
from bids_msseg.io import write_text_atomic
from bids_msseg.provenance import installed_version

LOGGER = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_CONTEXT",
    "cited_keys",
    "decision_counts",
    "load_references",
    "readable_training_data",
    "render_boilerplate",
    "software_versions",
    "training_citations",
    "write_citation",
]

TEMPLATE_NAME = "methods.md.j2"
BIB_NAME = "references.bib"
#: Distributions whose versions the methods text names, when installed.
SOFTWARE = ("numpy", "scipy", "nibabel", "pybids", "nipype", "antspyx", "torch",
            "segmentation-models-pytorch")

#: How :func:`bids_msseg.preproc.brain.extract_brain` works, in a reader's words.
BRAIN_EXTRACTION_METHOD = (
    "registering the reference head of ROBEX and its brain mask to the image with ANTs (mutual information, "
    "affine then SyN), warping the mask onto the image's grid and fitting it to the brain surface seen in the "
    "FLAIR")
#: What each ``--precision`` means for the network's arithmetic.
PRECISION_TEXTS = {
    "fp32": "in 32-bit floating point",
    "bf16": "in bfloat16 mixed precision",
    "auto": ("in bfloat16 mixed precision on CPUs that support it natively and in float16 on GPUs, otherwise in "
             "32-bit floating point; each run's precision is recorded in its sidecars (`InferencePrecision`)"),
}
#: Data sets named in a model card's ``training.data`` and the references to cite for them.
TRAINING_DATA_REFERENCES = {"3D-MR-MS": "lesjak2018mrms", "MNI152": "fonov2011unbiased",
                            "Colin27": "holmes1998colin", "MSLesSeg": "guarnera2025mslesseg",
                            "GG-853": "winkler2012flair", "ISBI-2015": "carass2017isbi",
                            "MS3SEG": "bashiribawil_ms3seg"}

#: What the template expects; ``render_boilerplate`` fills what the caller leaves out.
#: ``n4`` and ``brain_extraction`` are True (every run), False (never) or "auto" (decided per run);
#: ``connectivity`` is the lesion definition's 1, 2 or 3; ``*_citations`` are lists of bib keys.
DEFAULT_CONTEXT: dict[str, Any] = {
    "version": None,  # bids_msseg.__version__ when None
    "model_id": "unknown",
    "architecture": "UNet++",
    "encoder": "resnet18",
    "input_size": 224,
    "normalization": "quantile",
    "precision": None,
    "threshold": 0.5,
    "seed_threshold": 0.0,
    "seed_threshold_thick": None,
    "min_lesion_size_mm3": 5.0,
    "connectivity": 3,
    "n4": "auto",
    "brain_extraction": "auto",
    "brain_extraction_method": BRAIN_EXTRACTION_METHOD,
    "brain_extraction_citations": ["iglesias2011robex", "avants2008syn"],
    "training_data": "",
    "training_citations": [],
    "location": False,  # lesion location classes and template-space outputs (--no-location: False)
    # How many of the n_runs images got N4 / brain extraction, from the runs' recorded decisions
    # (decision_counts); None when not known for every run: the text then says "where needed".
    "n4_count": None,
    "brain_extraction_count": None,
    # the longitudinal step, when it compared sessions (bids_msseg.longitudinal.outputs.citation_context)
    "longitudinal_pairs": 0,
    "longitudinal_subjects": 0,
    "registration_mm": 2.0,
    "rule": {},
    "n_runs": None,
    "n_subjects": None,
    "software": None,  # software_versions() when None
}

_CITATION = re.compile(r"\[(@[^\[\]]+)\]")
_KEY = re.compile(r"@([A-Za-z0-9_:.\-]+)")
_ENCODERS = {"resnet18": "ResNet-18", "resnet34": "ResNet-34", "resnet50": "ResNet-50"}


def _resource(name: str) -> str:
    """Text of a file shipped next to this module."""
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")


def software_versions() -> dict[str, str]:
    """Installed versions of the libraries the methods text names (missing ones are left out)."""
    versions = {}
    for name in SOFTWARE:
        version = installed_version(name)
        if version is not None:
            versions[name] = version
    return versions


def _full_context(context: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults, then the caller's values, then derived values (version, software, neighbours)."""
    unknown = set(context) - set(DEFAULT_CONTEXT)
    if unknown:
        LOGGER.debug("boilerplate context: unused keys %s", sorted(unknown))
    full = {**DEFAULT_CONTEXT, **context}
    if full["version"] is None:
        full["version"] = __version__
    if full["software"] is None:
        full["software"] = software_versions()
    connectivity = int(full["connectivity"])
    full["neighbours"] = {1: 6, 2: 18, 3: 26}.get(connectivity, connectivity)
    full["encoder_name"] = _ENCODERS.get(str(full["encoder"]), str(full["encoder"]))
    full["precision_text"] = PRECISION_TEXTS.get(str(full["precision"]), "") if full["precision"] else ""
    if full["training_data"] and not full["training_citations"]:
        full["training_citations"] = training_citations(str(full["training_data"]))
    full["training_data"] = readable_training_data(str(full["training_data"]))
    full["counted_preprocessing"] = _counted_preprocessing(full)
    return full


def decision_counts(decisions: Iterable[Mapping[str, Any]]) -> dict[str, int] | None:
    """``{"n4_count": ..., "brain_extraction_count": ...}``: how many runs got each step, from their recorded
    ``PreprocessingDecisions`` (``n4`` and ``skullstrip`` booleans); None when one run has no readable decision."""
    n4 = skullstrip = 0
    for decision in decisions:
        if not isinstance(decision.get("n4"), bool) or not isinstance(decision.get("skullstrip"), bool):
            return None
        n4 += decision["n4"]
        skullstrip += decision["skullstrip"]
    return {"n4_count": n4, "brain_extraction_count": skullstrip}


def _images(count: int, total: int) -> str:
    """``the image`` / ``both images`` / ``all 5 images`` / ``3 of the 5 images``."""
    if count == total:
        return {1: "the image", 2: "both images"}.get(total, f"all {total} images")
    return f"{count} of the {total} images"


def _counted_preprocessing(full: Mapping[str, Any]) -> str:
    """The preprocessing sentences for steps decided per image ("auto") whose counts are known: each
    step is described with the number of images it ran on, and a step that ran on none is not described.
    Empty when nothing is counted (the template's own text then applies)."""
    total, sentences = full["n_runs"], []
    if not total:
        return ""
    n4, bet = full["n4_count"], full["brain_extraction_count"]
    if full["n4"] == "auto" and n4 is not None:
        antspy = f" (*ANTsPy* {full['software']['antspyx']})" if full["software"].get("antspyx") else ""
        rest = total - n4
        if n4:
            sentences.append(f"In {_images(n4, total)}, intensity non-uniformity was corrected with N4 "
                             f"[@tustison2010n4]{antspy}" + (f"; the other {rest} {'was' if rest == 1 else 'were'} "
                                                             "taken as already bias-corrected." if rest else "."))
        else:
            sentences.append(f"No intensity non-uniformity correction was run: {_images(total, total)} "
                             f"{'was' if total == 1 else 'were'} taken as already bias-corrected.")
    if full["brain_extraction"] == "auto" and bet is not None:
        method = f" by {full['brain_extraction_method']}" if full["brain_extraction_method"] else ""
        cite = full["brain_extraction_citations"]
        cited = f" [{'; '.join('@' + key for key in cite)}]" if cite else ""
        rest = total - bet
        if bet:
            sentences.append(f"From {_images(bet, total)}, the brain was extracted{method}{cited}" + (
                f"; the other {rest} looked already skull-stripped, and the brain mask of "
                f"{'that image' if rest == 1 else 'each'} was its non-background voxels." if rest else "."))
        else:
            sentences.append(f"No brain extraction was run: {_images(total, total)} looked already skull-stripped, "
                             f"and the brain mask of {'the image' if total == 1 else 'each'} was its non-background "
                             "voxels.")
    if not sentences:
        return ""
    steps = ("N4 correction and brain extraction were" if full["n4"] == full["brain_extraction"] == "auto"
             else "N4 correction was" if full["n4"] == "auto" else "Brain extraction was")
    sentences.append(f"{steps} decided for each image from its appearance and its sidecar metadata; each image's "
                     "decisions and their reasons are recorded in its sidecars (`PreprocessingDecisions`) and in its "
                     "report.")
    return "\n".join(sentences)


def training_citations(description: str) -> list[str]:
    """Bib keys of the data sets a model card's ``training.data`` names (3D-MR-MS, MNI152, Colin27)."""
    return [key for name, key in TRAINING_DATA_REFERENCES.items() if name.lower() in description.lower()]


def readable_training_data(description: str) -> str:
    """A card's ``training.data`` as part of a sentence: no pointer to the repository's docs, no final period."""
    description = re.sub(r"\s*\(see [^()]*\)\s*$", "", description.strip())
    return description.rstrip(". ")


def render_boilerplate(context: Mapping[str, Any]) -> str:
    """The methods text in markdown with pandoc citations (``[@key]``), for the given run context.

    ``context`` overrides :data:`DEFAULT_CONTEXT`. Undefined template variables raise (a typo in
    the template fails the tests instead of printing an empty string).
    """
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
    text = env.from_string(_resource(TEMPLATE_NAME)).render(**_full_context(context))
    text = re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"
    references = load_references()
    missing = [key for key in cited_keys(text) if key not in references]
    if missing:
        raise KeyError(f"the methods template cites keys missing from {BIB_NAME}: {missing}")
    return text


def cited_keys(text: str) -> list[str]:
    """Keys cited as ``[@a; @b]`` in ``text``, in order of first citation."""
    keys: list[str] = []
    for group in _CITATION.findall(text):
        for key in _KEY.findall(group):
            if key not in keys:
                keys.append(key)
    return keys


# ------------------------------------------------------------------------------------------- .bib


def _matching_brace(text: str, start: int) -> int:
    """Index of the brace closing the one at ``start``."""
    depth = 0
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return i
    raise ValueError(f"unbalanced braces in {BIB_NAME} near: {text[start:start + 60]!r}")


def _fields(body: str) -> dict[str, str]:
    """``name = {value}`` / ``"value"`` / ``number`` pairs of one entry's body."""
    fields: dict[str, str] = {}
    pos = 0
    pattern = re.compile(r"\s*,?\s*([A-Za-z_-]+)\s*=\s*")
    while (match := pattern.match(body, pos)) is not None:
        pos = match.end()
        if body[pos] == "{":
            end = _matching_brace(body, pos)
            value, pos = body[pos + 1:end], end + 1
        elif body[pos] == '"':
            end = body.index('"', pos + 1)
            value, pos = body[pos + 1:end], end + 1
        else:
            value = re.match(r"[^,\s]*", body[pos:]).group(0)
            pos += len(value)
        fields[match.group(1).lower()] = " ".join(value.split())
    return fields


def load_references(text: str | None = None) -> dict[str, dict[str, str]]:
    """Parse ``references.bib`` (or ``text``) into ``{key: {"type": ..., field: value}}``.

    A small parser for the well-formed file shipped here (balanced braces, one entry per ``@``),
    so the project needs no BibTeX library.
    """
    if text is None:  # the shipped file, parsed once per process
        return {key: dict(entry) for key, entry in _bundled_references().items()}
    entries: dict[str, dict[str, str]] = {}
    for match in re.finditer(r"@(\w+)\s*\{\s*([^,\s]+)\s*,", text):
        closing = _matching_brace(text, text.index("{", match.start()))
        entries[match.group(2)] = {"type": match.group(1).lower(), "_raw": text[match.start():closing + 1],
                                   **_fields(text[match.end():closing])}
    return entries


@functools.lru_cache(maxsize=1)
def _bundled_references() -> dict[str, dict[str, str]]:
    """The parsed ``references.bib`` shipped with the package (cached: parsing it takes ~0.1 s)."""
    return load_references(_resource(BIB_NAME))


_ACCENTS = {"'": "\u0301", '"': "\u0308", "`": "\u0300", "^": "\u0302", "~": "\u0303", "v": "\u030c"}


def _latex_to_text(value: str) -> str:
    """Plain text of a BibTeX value: accents to Unicode, ``--`` to an en dash, braces removed."""
    value = re.sub(r"\\url\{([^}]*)\}", r"\1", value)
    value = re.sub(r"\\([\'\"`^~v])\s*\{?([A-Za-z])\}?",
                   lambda m: unicodedata.normalize("NFC", m.group(2) + _ACCENTS[m.group(1)]), value)
    return value.replace("--", "\u2013").replace("{", "").replace("}", "")


def _authors(value: str, limit: int = 6) -> str:
    """``Last, First and ...`` as ``Last F, Last F, ... et al.``."""
    names = [n.strip() for n in re.split(r"\s+and\s+", value)]
    others = names[-1].lower() == "others"
    names = [n for n in names if n.lower() != "others"]
    short = []
    for name in names:
        last, _, first = name.partition(",")
        initials = "".join(part[0] for part in re.split(r"[\s.-]+", first.strip()) if part)
        short.append(f"{last.strip()} {initials}".strip())
    if others or len(short) > limit:
        return ", ".join(short[: min(limit, len(short))]) + " et al."
    return ", ".join(short)


def format_reference(entry: Mapping[str, str]) -> str:
    """One reference as a line of markdown: authors (year). title. venue. doi/url."""
    get = {k: _latex_to_text(v) for k, v in entry.items() if k not in ("type", "_raw")}
    venue = get.get("journal") or get.get("booktitle") or get.get("publisher", "")
    if get.get("eprint"):
        venue = f"arXiv:{get['eprint']}"
    details = ""
    if get.get("volume"):
        details += f" {get['volume']}"
        if get.get("number"):
            details += f"({get['number']})"
    if get.get("pages"):
        details += f":{get['pages']}" if details else f", {get['pages']}"
    parts = [f"{_authors(get.get('author', ''))} ({get.get('year', 'n.d.')}).", f"{get.get('title', '')}.",
             f"*{venue}*{details}." if venue else ""]
    if get.get("note"):
        parts.append(f"{get['note']}.")
    if get.get("doi"):
        parts.append(f"doi:[{get['doi']}](https://doi.org/{quote(get['doi'], safe='/();:.-')})")
    elif get.get("url") or get.get("howpublished"):
        parts.append(get.get("url") or get["howpublished"])
    return " ".join(p for p in parts if p)


def write_citation(logs_dir: Path, context: Mapping[str, Any]) -> Path:
    """Write ``CITATION.md`` (numbered citations, references) and ``CITATION.bib`` in ``logs_dir``.

    Returns the path of ``CITATION.md``. Both files are written atomically.
    """
    logs_dir = Path(logs_dir)
    text = render_boilerplate(context)
    references = load_references()
    keys = cited_keys(text)
    number = {key: i for i, key in enumerate(keys, start=1)}

    def numbered(match: re.Match[str]) -> str:
        return "[" + ", ".join(str(number[k]) for k in _KEY.findall(match.group(1))) + "]"

    body = _CITATION.sub(numbered, text)
    reference_list = "\n".join(f"{number[k]}. {format_reference(references[k])}" for k in keys)
    version = _full_context(context)["version"]
    markdown = f"# Methods (bids_msseg {version})\n\n{body}\n## References\n\n{reference_list}\n"
    write_text_atomic(logs_dir / "CITATION.bib", "\n\n".join(references[k]["_raw"] for k in keys) + "\n")
    target = write_text_atomic(logs_dir / "CITATION.md", markdown)
    LOGGER.debug("methods boilerplate written to %s", target)
    return target
