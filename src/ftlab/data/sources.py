"""Image sources: each knows its class names up front and loads a stratified, seeded train/val split."""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import tarfile
import time
import types
import typing
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from ftlab.errors import FtlabError, did_you_mean

Transform = Callable[[torch.Tensor], torch.Tensor]
log = logging.getLogger(__name__)


class LabeledImages(Dataset):
    """A dataset of (uint8 image, label) pairs with a replaceable per-image `transform`."""

    transform: Transform | None
    labels: Any

    def __len__(self) -> int:
        return len(self.labels)


class TensorImages(LabeledImages):
    """Images held in memory as one uint8 (N, 3, H, W) tensor."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Transform | None = None):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, int]:
        image = self.images[idx]
        return (self.transform(image) if self.transform else image), int(self.labels[idx])


# What PIL raises for unreadable, truncated or malformed files (SyntaxError: some plugins' header checks).
IMAGE_ERRORS = (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError)


def _rgb_array(img: Image.Image) -> np.ndarray:
    """uint8 (H, W, 3) RGB pixels of an open image, whatever its mode.

    16-bit grayscale (PNG/TIFF `I;16`, PGM `I`) is scaled from 0..65535 to 0..255: PIL's own conversion
    clips it, which turns most 16-bit images white. CMYK uses PIL's conversion (JPEG's Adobe-inverted CMYK
    is undone by the decoder); palette and alpha modes go through RGBA so transparency keys are honoured.
    """
    if img.mode.startswith("I"):  # I;16, I;16B, I;16L, I;16N, I (32-bit int holding 16-bit values)
        wide = np.asarray(img).astype(np.float64).clip(0, 65535)
        gray = np.rint(wide * (255.0 / 65535.0)).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    rgb = img.convert("RGBA").convert("RGB") if img.mode in ("P", "PA", "LA") else img.convert("RGB")
    return np.asarray(rgb, dtype=np.uint8).copy()


def load_rgb(path: str | Path) -> torch.Tensor:
    """Read an image file as uint8 (3, H, W); grayscale, 16-bit, palette, RGBA and CMYK become RGB."""
    try:
        with Image.open(path) as img:
            array = _rgb_array(img)
    except IMAGE_ERRORS as err:
        raise FtlabError(f"Cannot read image {path}: {err}. Remove or replace the file.") from err
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def image_problem(path: str | Path) -> str | None:
    """Why `path` cannot be used as an image (unreadable, truncated, corrupt), or None when it decodes."""
    try:
        with Image.open(path) as img:
            img.draft("RGB", (64, 64))  # JPEG: decode at reduced scale; the whole stream is still read
            img.load()
    except IMAGE_ERRORS as err:
        return f"{type(err).__name__}: {err}"
    return None


def find_bad_images(paths: list[str]) -> list[tuple[str, str]]:
    """(path, reason) of every file in `paths` that does not decode; decoding runs in a thread pool."""
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        problems = list(pool.map(image_problem, paths))
    return [(path, why) for path, why in zip(paths, problems, strict=True) if why is not None]


class FileImages(LabeledImages):
    """Images read from files on access."""

    def __init__(self, paths: list[str], labels: list[int], transform: Transform | None = None):
        self.paths, self.labels, self.transform = paths, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, int]:
        image = load_rgb(self.paths[idx])
        return (self.transform(image) if self.transform else image), self.labels[idx]


def stratified_subset(labels: np.ndarray, size: int | None, seed: int, what: str) -> np.ndarray:
    """Indices of a class-stratified, seeded sample of `size` items (all of them when size is None)."""
    indices = np.arange(len(labels))
    if size is None or size >= len(labels):
        return indices
    counts = np.bincount(labels)
    if size < len(counts[counts > 0]) or counts[counts > 0].min() < 2:
        raise FtlabError(
            f"{what}: cannot draw a stratified sample of {size} from class counts "
            f"{counts.tolist()}; every class needs at least 2 images and one place in the sample."
        )
    from sklearn.model_selection import train_test_split  # imported here: heavy, and only splits need it

    chosen, _ = train_test_split(indices, train_size=size, stratify=labels, random_state=seed)
    return np.sort(chosen)


class Source(Protocol):
    """What the DataModule needs from a source."""

    classes: list[str]
    fixed_size: bool  # every image has the same stored size, so batches can be resized on the device

    def load(self) -> tuple[LabeledImages, LabeledImages]: ...

    def assets(self) -> list[Asset]: ...


@dataclass
class Asset:
    """A file an experiment needs, where it goes, and how to get it."""

    description: str
    path: Path
    url: str | None
    present: bool
    fetch: Callable[[], None] | None = None


CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@dataclass
class Cifar10Source:
    """A subset of CIFAR-10's classes; train from the training batches, val from the test batch."""

    root: str
    classes: list[str] = field(default_factory=lambda: list(CIFAR10_CLASSES))
    train_size: int | None = 1000
    val_size: int | None = 600
    download: bool = True
    seed: int = 0
    fixed_size: bool = field(default=True, init=False)

    def __post_init__(self) -> None:
        for name in self.classes:
            if name not in CIFAR10_CLASSES:
                raise FtlabError(
                    f"data.classes: {name!r} is not a CIFAR-10 class.{did_you_mean(name, CIFAR10_CLASSES)}"
                    f" The classes are: {', '.join(CIFAR10_CLASSES)}."
                )
        if len(set(self.classes)) != len(self.classes) or len(self.classes) < 2:
            raise FtlabError(f"data.classes={self.classes}: give at least two distinct CIFAR-10 classes.")

    @property
    def archive(self) -> Path:
        return Path(self.root) / "cifar-10-python.tar.gz"

    @property
    def extracted(self) -> Path:
        return Path(self.root) / "cifar-10-batches-py"

    def assets(self) -> list[Asset]:
        present = self.archive.is_file() or self.extracted.is_dir()
        return [Asset("CIFAR-10 archive", self.archive, CIFAR10_URL, present, self.fetch)]

    def fetch(self) -> None:
        """Download the archive (checking its MD5) into `root`."""
        from torchvision.datasets.utils import download_url

        download_url(CIFAR10_URL, str(self.root), self.archive.name, CIFAR10_MD5)

    def _read_batches(self) -> dict[str, dict[str, Any]]:
        """Unpickle the CIFAR batch files from the extracted folder or straight from the archive."""
        names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        batches: dict[str, dict[str, Any]] = {}
        if self.extracted.is_dir():
            for name in names:
                with open(self.extracted / name, "rb") as f:
                    batches[name] = pickle.load(f, encoding="latin1")
            return batches
        try:
            with tarfile.open(self.archive, "r:gz") as tar:
                for member in tar.getmembers():
                    name = Path(member.name).name
                    if name in names and member.isfile():
                        handle = tar.extractfile(member)
                        assert handle is not None
                        batches[name] = pickle.load(handle, encoding="latin1")
        except (OSError, tarfile.TarError, EOFError, pickle.UnpicklingError) as err:
            raise FtlabError(
                f"{self.archive} is not a readable CIFAR-10 archive ({err}). Delete it and run "
                "`python -m ftlab.prepare` to download it again."
            ) from err
        missing = sorted(set(names) - set(batches))
        if missing:
            raise FtlabError(
                f"{self.archive} lacks the CIFAR-10 batches {missing}. Delete it and download again."
            )
        return batches

    def _select(self, batches: list[dict[str, Any]], size: int | None, what: str) -> TensorImages:
        data = np.concatenate([b["data"] for b in batches]).reshape(-1, 3, 32, 32)
        cifar_labels = np.concatenate([np.asarray(b["labels"]) for b in batches])
        wanted = [CIFAR10_CLASSES.index(c) for c in self.classes]
        keep = np.isin(cifar_labels, wanted)
        remap = {cifar: ours for ours, cifar in enumerate(wanted)}
        labels = np.array([remap[int(c)] for c in cifar_labels[keep]], dtype=np.int64)
        chosen = stratified_subset(labels, size, self.seed, what)
        return TensorImages(torch.from_numpy(data[keep][chosen].copy()), torch.from_numpy(labels[chosen]))

    def load(self) -> tuple[LabeledImages, LabeledImages]:
        if not self.assets()[0].present:
            if not self.download:
                raise FtlabError(
                    f"CIFAR-10 not found at {self.archive}. Put cifar-10-python.tar.gz there or "
                    "set data.download=true."
                )
            self.fetch()
        batches = self._read_batches()
        train = self._select(
            [batches[f"data_batch_{i}"] for i in range(1, 6)], self.train_size, "data.train_size"
        )
        val = self._select([batches["test_batch"]], self.val_size, "data.val_size")
        return train, val


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")


def _scan_folder(root: Path, key: str) -> tuple[list[str], list[str], list[int]]:
    """Classes, file paths and labels of an ImageFolder layout (one sub-folder per class)."""
    from torchvision.datasets.folder import find_classes, make_dataset

    if not root.is_dir():
        raise FtlabError(
            f"{key}={str(root)!r} is not a folder. Point it at a folder with one sub-folder of "
            "images per class."
        )
    layout = "one sub-folder of images per class, e.g. root/cat/1.jpg, root/dog/2.jpg"
    try:
        classes, class_to_idx = find_classes(str(root))
    except FileNotFoundError as err:
        loose = [p.name for p in root.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS]
        found = f" It holds {len(loose)} images directly; move them into class folders." if loose else ""
        raise FtlabError(f"{key}={str(root)!r} has no class folders.{found} Expected {layout}.") from err
    samples = make_dataset(str(root), class_to_idx, extensions=IMAGE_EXTENSIONS, allow_empty=True)
    labels = [label for _, label in samples]
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(classes))
    empty = [str(root / c) for c, n in zip(classes, counts, strict=True) if n == 0]
    if empty:
        raise FtlabError(
            f"{key}={str(root)!r}: no images in the class folder(s) {', '.join(empty)}. Every class folder "
            f"needs at least one image ({', '.join(IMAGE_EXTENSIONS)}); add images or remove the folder."
        )
    return classes, [p for p, _ in samples], labels


def _matches(value: Any, hint: Any) -> bool:
    """Whether `value` fits a simple annotation: a class, `X | None`, `list[X]` (bool is not an int here)."""
    if hint is Any:
        return True
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_matches(value, h) for h in typing.get_args(hint))
    if typing.get_origin(hint) is list:
        return isinstance(value, list) and all(_matches(v, typing.get_args(hint)[0]) for v in value)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def check_types(values: Mapping[str, Any], hints: Mapping[str, Any], prefix: str = "data") -> None:
    """One clear error naming `<prefix>.<key>` when a value does not fit its annotation."""
    for key, value in values.items():
        if key in hints and not _matches(value, hints[key]):
            options = typing.get_args(hints[key]) or (hints[key],)
            expected = " or ".join(
                getattr(h, "__name__", str(h)).replace("NoneType", "null") for h in options
            )
            raise FtlabError(
                f"{prefix}.{key}={value!r} has the wrong type: expected {expected}, "
                f"got {type(value).__name__}."
            )


def check_field_types(source: Any, prefix: str = "data") -> None:
    """`check_types` over a dataclass instance's init fields."""
    values = {f.name: getattr(source, f.name) for f in dataclasses.fields(source) if f.init}
    check_types(values, typing.get_type_hints(type(source)), prefix)


def _class_counts(classes: list[str], labels: list[int]) -> str:
    """'cat=12, dog=3': images per class, for error messages."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(classes))
    return ", ".join(f"{c}={n}" for c, n in zip(classes, counts, strict=True))


@dataclass
class ImageFolderSource:
    """Your own images: `root/<class>/<image>`; val from `val_root` or a stratified split of `root`.

    Every file is decoded once before training: an unreadable, truncated or corrupt image stops the run
    with its path and the reason, or, with `skip_bad_images`, is left out and listed in the log
    (`skipped` keeps the list).
    """

    root: str
    val_root: str | None = None
    val_fraction: float = 0.2
    train_size: int | None = None
    val_size: int | None = None
    seed: int = 0
    skip_bad_images: bool = False
    fixed_size: bool = field(default=False, init=False)
    skipped: list[tuple[str, str]] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        if isinstance(
            self.root, int | float
        ):  # data.root=2024: Hydra reads a folder named by digits as a number
            self.root = str(self.root)
        check_field_types(self)
        self.classes = _scan_folder(Path(self.root), "data.root")[0]

    def assets(self) -> list[Asset]:
        return [Asset("image folder", Path(self.root), None, Path(self.root).is_dir())]

    def _readable(
        self, paths: list[str], labels: list[int], key: str, folder: str
    ) -> tuple[list[str], list[int]]:
        """The files that decode; any other stops the run, or is skipped and logged (`skip_bad_images`)."""
        start = time.monotonic()
        bad = find_bad_images(paths)
        log.info("%s: checked %d images in %.1f s", key, len(paths), time.monotonic() - start)
        if not bad:
            return paths, labels
        if not self.skip_bad_images:
            shown = "\n".join(f"- {path}: {why}" for path, why in bad[:10])
            more = f"\n- ... and {len(bad) - 10} more" if len(bad) > 10 else ""
            raise FtlabError(
                f"{len(bad)} of {len(paths)} images under {key}={folder} cannot "
                f"be read:\n{shown}{more}\nRemove or replace them, or set data.skip_bad_images=true to "
                "train without them (they are then listed in the log)."
            )
        listing = "\n".join(f"  {path}: {why}" for path, why in bad)
        log.warning(
            "Skipped %d unreadable images under %s (data.skip_bad_images=true):\n%s", len(bad), key, listing
        )
        self.skipped.extend(bad)
        dropped = {path for path, _ in bad}
        keep = [i for i, path in enumerate(paths) if path not in dropped]
        return [paths[i] for i in keep], [labels[i] for i in keep]

    def load(self) -> tuple[LabeledImages, LabeledImages]:
        self.skipped = []
        classes, paths, labels = _scan_folder(Path(self.root), "data.root")
        paths, labels = self._readable(paths, labels, "data.root", self.root)
        if self.val_root:
            val_classes, val_paths, val_labels = _scan_folder(Path(self.val_root), "data.val_root")
            if val_classes != classes:
                raise FtlabError(
                    f"data.val_root classes {val_classes} differ from data.root classes {classes}."
                )
            val_paths, val_labels = self._readable(val_paths, val_labels, "data.val_root", self.val_root)
            for key, found in (("data.root", labels), ("data.val_root", val_labels)):
                if np.bincount(np.asarray(found, dtype=np.int64), minlength=len(classes)).min() == 0:
                    raise FtlabError(
                        f"{key}: a class has no readable images left ({_class_counts(classes, found)})."
                    )
        else:
            if not 0 < self.val_fraction < 1:
                raise FtlabError(f"data.val_fraction={self.val_fraction} must be between 0 and 1.")
            counts = np.bincount(labels, minlength=len(classes))
            if counts.min() < 2:
                small = [f"{c} ({n})" for c, n in zip(classes, counts, strict=True) if n < 2]
                raise FtlabError(
                    f"data.root={self.root}: classes {', '.join(small)} have too few images to "
                    "split into train and val (2 needed); add images or set data.val_root."
                )
            idx = np.arange(len(labels))
            from sklearn.model_selection import train_test_split

            try:
                tr, va = train_test_split(
                    idx, test_size=self.val_fraction, stratify=labels, random_state=self.seed
                )
            except ValueError as err:
                raise FtlabError(
                    f"data.val_fraction={self.val_fraction} cannot split {len(labels)} images of "
                    f"{len(classes)} classes ({_class_counts(classes, labels)}): {err} Every class needs "
                    "at least one image on each side: add images, change data.val_fraction, or set "
                    "data.val_root."
                ) from err
            val_paths, val_labels = [paths[i] for i in sorted(va)], [labels[i] for i in sorted(va)]
            paths, labels = [paths[i] for i in sorted(tr)], [labels[i] for i in sorted(tr)]
        tr_idx = stratified_subset(np.asarray(labels), self.train_size, self.seed, "data.train_size")
        va_idx = stratified_subset(np.asarray(val_labels), self.val_size, self.seed, "data.val_size")
        return (
            FileImages([paths[i] for i in tr_idx], [labels[i] for i in tr_idx]),
            FileImages([val_paths[i] for i in va_idx], [val_labels[i] for i in va_idx]),
        )


@dataclass
class SyntheticSource:
    """Generated, learnable images: each class has its own colour and stripe orientation, plus noise."""

    num_classes: int = 3
    train_size: int = 96
    val_size: int = 48
    size: int = 32
    noise: float = 0.25
    seed: int = 0
    classes: list[str] = field(default_factory=list)
    fixed_size: bool = field(default=True, init=False)

    def __post_init__(self) -> None:
        if not self.classes:
            self.classes = [f"class_{i}" for i in range(self.num_classes)]
        self.num_classes = len(self.classes)

    def assets(self) -> list[Asset]:
        return []

    def _generate(self, n: int, seed: int) -> TensorImages:
        gen = torch.Generator().manual_seed(seed)
        palette = torch.rand(self.num_classes, 3, 1, 1, generator=torch.Generator().manual_seed(12345))
        labels = torch.arange(n) % self.num_classes
        labels = labels[torch.randperm(n, generator=gen)]
        coords = torch.linspace(0, 6.2832, self.size)
        yy, xx = torch.meshgrid(coords, coords, indexing="ij")
        angles = labels.float() * (3.1416 / self.num_classes)
        stripes = torch.sin(
            xx * torch.cos(angles)[:, None, None] * 2 + yy * torch.sin(angles)[:, None, None] * 2
        )
        images = (
            0.6 * palette[labels]
            + 0.3 * stripes[:, None]
            + self.noise * torch.randn(n, 3, self.size, self.size, generator=gen)
        )
        return TensorImages((images.clamp(0, 1) * 255).to(torch.uint8), labels)

    def load(self) -> tuple[LabeledImages, LabeledImages]:
        return self._generate(self.train_size, self.seed), self._generate(self.val_size, self.seed + 1)


from ftlab.data.fashion_mnist import FashionMnistSource  # noqa: E402 (it builds on the classes above)

SOURCES: dict[str, type] = {
    "cifar10": Cifar10Source,
    "imagefolder": ImageFolderSource,
    "synthetic": SyntheticSource,
    "fashion_mnist": FashionMnistSource,
}
