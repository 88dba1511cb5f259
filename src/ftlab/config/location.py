"""Where the Hydra configs live: shipped in the wheel as `ftlab/conf`, or the checkout's `conf/`."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from ftlab.errors import FtlabError


def config_dir() -> Path:
    """The `conf/` folder: shipped inside the wheel as `ftlab/conf`, else the checkout's `conf/`."""
    packaged = Path(str(resources.files("ftlab") / "conf"))
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parents[3] / "conf"
    if checkout.is_dir():
        return checkout
    raise FtlabError(
        f"ftlab's Hydra configs are missing: neither {packaged} nor {checkout} exists. Reinstall ftlab."
    )
