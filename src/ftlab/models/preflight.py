"""Before anything heavy: is every asset present or downloadable? If not, say what to put where."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import torch
from torchvision.models import WeightsEnum

from ftlab.data.sources.base import Asset, Source
from ftlab.errors import FtlabError
from ftlab.models.backbones import resolve_weights, weights_id

OFFLINE_ALTERNATIVES = (
    "What runs offline instead: `make demo` (`python -m ftlab.train +experiment=offline_demo`: ImageNet-"
    "pretrained EfficientNet-Lite0 fine-tuned on Fashion-MNIST, both shipped in packages); your own images "
    "with `data=imagefolder data.root=<folder>` (one sub-folder per class) and `model=efficientnet_lite0`, "
    "`model.weights=null` or a local state dict (`model.weights=/path/file.pth`); or `data=synthetic` for a "
    "smoke run."
)


def weights_assets(backbone: str, weights: str | None) -> list[Asset]:
    """The weights file a backbone needs (torch hub cache), if any."""
    resolved = resolve_weights(backbone, weights)
    if not isinstance(resolved, WeightsEnum):
        return []
    url = resolved.url
    if urlparse(url).scheme in ("http", "https"):
        path = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name
        return [
            Asset(
                f"weights {weights_id(resolved)}",
                path,
                url,
                path.is_file(),
                lambda: resolved.get_state_dict(progress=True),
            )
        ]
    path = Path(urlparse(url).path) if url.startswith("file:") else Path(url)
    return [Asset(f"weights {weights_id(resolved)}", path, None, path.is_file())]


def reachable(url: str, timeout: float = 5.0) -> str | None:
    """None when the host answers; otherwise the reason it does not."""
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError:
        return None  # the server answered (e.g. 403 to HEAD): the download can work
    except (urllib.error.URLError, OSError) as err:
        return str(getattr(err, "reason", err))
    return None


def assets(source: Source, backbone: str, weights: str | None) -> list[Asset]:
    """Every file the run needs: the data source's and the weights'."""
    return list(source.assets()) + weights_assets(backbone, weights)


def check(source: Source, backbone: str, weights: str | None) -> None:
    """Raise one FtlabError listing every missing asset that cannot be downloaded either."""
    problems = []
    for asset in assets(source, backbone, weights):
        if asset.present:
            continue
        reason = reachable(asset.url) if asset.url else "no download source"
        if reason is None:
            continue
        where = f" (download from {asset.url} failed: {reason})" if asset.url else ""
        problems.append(f"- {asset.description} is missing: put it at {asset.path}{where}.")
    if problems:
        hub = Path(torch.hub.get_dir()) / "checkpoints"
        raise FtlabError(
            "Offline and assets are missing:\n" + "\n".join(problems) + "\n"
            f"Copy the files from a machine with network (`python -m ftlab.prepare <same overrides>` fetches "
            f"them there) into those paths; weights go into the torch hub cache {hub} ($TORCH_HOME/hub/"
            "checkpoints). " + OFFLINE_ALTERNATIVES
        )


def fetch_missing(source: Source, backbone: str, weights: str | None) -> list[Asset]:
    """Download every missing asset; return the list of assets (all present afterwards)."""
    needed = assets(source, backbone, weights)
    for asset in needed:
        if asset.present:
            continue
        if asset.fetch is None:
            raise FtlabError(f"{asset.description} is missing at {asset.path} and cannot be downloaded.")
        try:
            asset.fetch()
        except (OSError, RuntimeError, urllib.error.URLError) as err:
            raise FtlabError(
                f"Downloading {asset.description} from {asset.url} failed: {err}. Check the "
                f"network, or copy the file to {asset.path} by hand."
            ) from err
        asset.present = True
    return needed
