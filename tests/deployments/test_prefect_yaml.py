"""prefect.yaml says what it runs on: the Prefect the project installs, and the blocks its runs read."""

from __future__ import annotations

import re
from pathlib import Path

import prefect
import yaml

from deployments.blocksetup import BLOCKS

ROOT = Path(__file__).resolve().parents[2]


def test_prefect_version_is_the_installed_and_locked_one() -> None:
    declared = yaml.safe_load((ROOT / "prefect.yaml").read_text())["prefect-version"]
    locked = re.search(r"^prefect==(\S+)", (ROOT / "deployments" / "container" / "requirements.lock").read_text(), re.M)
    assert locked is not None
    assert declared == prefect.__version__ == locked[1]


def test_every_deployment_reads_the_blocks_setup_saves() -> None:
    for deployment in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]:
        assert deployment["work_pool"]["job_variables"]["env"]["CITADEL_BLOCKS"] == BLOCKS, deployment["name"]
