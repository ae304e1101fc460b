"""Image-folder datasets for training and evaluation (torchvision ImageFolder / ImageNet layout).

- Layout: ``ROOT/<split>/<class>/<image>``; class index = sorted folder order (as torchvision's ImageFolder).
- Subsampling (``--max-per-class N``): each class keeps the N files whose paths relative to the class folder hash
  lowest (SHA-256, `subsample`), listed in path order: a spread over the folder, where its first N in path order
  are one kind of file wherever names sort by origin (Imagenette's 40-odd ``ILSVRC2012_val_*`` files per class sort
  before its ~920 ``n0*`` ones). No seed enters it, so every ``--seed`` and machine trains on the same subset; a
  file added or removed changes at most its own place in it.
- Decoding: `preprocess.read_image` (torchvision.io, Pillow fallback; any mode -> uint8 RGB).
- Image files: those with an image extension (`IMAGE_EXTENSIONS`, case-insensitive), as torchvision's ImageFolder,
  timm and Keras pick them, and as `predict` does; a folder's other files (notes.txt, Thumbs.db, desktop.ini, a
  labels.csv) are left out, counted and named (`Split.left_out`), so no image count includes them.
- Bad files (corrupt, truncated, zero-byte, an image extension on a non-image) never stop an epoch: counted and their
  paths reported (`BadFiles`); in evaluation the sample is dropped from its batch, in training the next readable file
  stands in (`ImageFolderDataset`), so batches keep their size.
- Augmentation (paper Section 3.2 uses less than Inception; the crop scale range is a recipe field):
  RandomResizedCrop + horizontal flip from torchvision.transforms.v2. Each sample's random draw is seeded from
  (seed, epoch, index), so augmentation does not depend on worker count, process count or a resume point; that is
  what makes resumed and distributed runs reproduce single-process ones.
- Stored size: with ``cache_side`` (training sets it to ``resolution / crop_pct``, the size the eval transform
  resizes to anyway) every decoded image has its shorter side reduced to it (never enlarged, with the spec's
  interpolation, as the eval transform resizes) before the transform,
  so the training crops are taken from that image, as with FFCV's stored datasets and the device path
  (device_data.py). The in-memory cache stores exactly those pixels, decoded once, when its estimate fits a memory
  budget: caching, or its budget, changes no training or eval pixel, only the speed.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode, v2

from .preprocess import ImageError, check_rgb, decode_all, failure_reason, read_image
from .spec import ModelSpec

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")
MAX_REPORTED = 10  # bad-file paths kept for reports


class DataError(ValueError):
    """A dataset that cannot be used as given (missing split, empty class, class mismatch); names the folder."""


@dataclass
class Split:
    root: Path
    classes: list[str]
    samples: list[tuple[str, int]]  # (path, label)
    left_out: list[str] = field(default_factory=list)  # visible files without an image extension, not samples


def is_image_name(path: Path) -> bool:
    """Whether ``path`` is named as an image file (`IMAGE_EXTENSIONS`, any case: ``.JPEG``, ``.Png``)."""
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _is_candidate(name: str) -> bool:
    # Hidden files (.DS_Store, macOS' ._name AppleDouble files, editor temp files) are no one's images. Of the visible
    # files, `scan_split` takes those named as images and names the others, as `Split.left_out`.
    return not name.startswith(".")


def scan_split(
    root: str | os.PathLike,
    classes: list[str] | None = None,
    max_per_class: int | None = None,
    subsample_rule: str = "hash",
    every_file: bool = False,
) -> Split:
    """List ``root/<class>/*``, at most ``max_per_class`` files of each (`subsample`, by ``subsample_rule``).
    Errors: missing folder, no class folders, an empty class folder, unknown classes. ``every_file``: every visible
    file a sample, as runs listed them before files not named as images were left out (their resume's check)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: split folder not found" + (" (it is a file)" if root.exists() else ""))
    found = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not found:
        raise DataError(f"{root}: no class folders (expected {root}/<class>/<image files>)")
    if classes:
        twice = sorted({c for c in classes if list(classes).count(c) > 1})
        if twice:  # one folder under two labels would train the same images as two classes
            raise DataError(f"classes={','.join(twice)!r} is not allowed: each class may be named once")
        missing = [c for c in classes if c not in found]
        if missing:
            commas = any("," in f for f in found)
            comma = "; a comma separates classes, '\\,' (quoted) is one inside a name" if commas else ""
            listed = ", ".join(found)
            raise DataError(f"{root}: class folder(s) {', '.join(missing)} not found (found: {listed}{comma})")
        found = sorted(classes)
    samples: list[tuple[str, int]] = []
    left_out: list[str] = []
    for label, name in enumerate(found):
        every = class_files(root / name)
        files = [f for f in every if every_file or is_image_name(f)]
        others = [str(f) for f in every if not (every_file or is_image_name(f))]
        if not files:
            raise DataError(f"{root / name}: empty class folder (every class needs at least one image)" if not others
                            else f"{root / name}: no image files in this class folder, only {len(others)} other "
                            f"file(s) (first: {Path(others[0]).name}); image files end in "
                            f"{' '.join(IMAGE_EXTENSIONS)}")  # fmt: skip
        files = subsample(files, root / name, max_per_class, subsample_rule)
        samples += [(str(f), label) for f in files]
        left_out += others
    return Split(root, found, samples, left_out)


def left_out_note(split: str, files: list[str], count: int | None = None) -> str:
    """The one line a run says about a split's files left out as not named like images (`Split.left_out`): how
    many, and the first few, so that an image with a name outside `IMAGE_EXTENSIONS` is not dropped unseen.
    ``count``: how many there are where ``files`` holds only the first (`left_out_report`'s)."""
    count = len(files) if count is None else count
    first = ", ".join(files[:3]) + (", ..." if count > 3 else "")
    return (f"note: {count} file(s) in {split} left out, not named as images ({' '.join(IMAGE_EXTENSIONS)}): "
            f"{first}")  # fmt: skip


def left_out_report(files: list[str]) -> dict:
    """``files`` (`Split.left_out`) as summary.json records them: a count and the first `MAX_REPORTED` paths."""
    return {"count": len(files), "first": files[:MAX_REPORTED]}


def subsample(files: list[Path], folder: Path, limit: int | None, rule: str = "hash") -> list[Path]:
    """At most ``limit`` of a class's ``files`` (sorted, under ``folder``), in path order. ``hash``: those whose
    paths relative to ``folder`` have the lowest SHA-256, a deterministic stand-in for a random sample that depends
    on no seed, no machine and no other file (the folder's location and the files added beside a file do not move
    it); TensorFlow Datasets orders the examples it writes by a hash of their keys the same way (``tfds.core.shuffle``).
    ``first``: the first ``limit`` in path order, as runs before the rule was recorded took them (in Imagenette
    these are every class's ``ILSVRC2012_val_*`` files, all from ImageNet's val set)."""
    if not limit or len(files) <= limit:
        return files
    if rule == "first":
        return files[:limit]
    if rule != "hash":
        raise ValueError(f"subsample={rule!r} is not allowed: subsample must be one of hash, first")

    def key(path: Path) -> bytes:
        return hashlib.sha256(path.relative_to(folder).as_posix().encode()).digest()

    return sorted(sorted(files, key=key)[:limit])


def _raise(exc: OSError) -> None:
    raise exc


def class_files(folder: Path) -> list[Path]:
    """Every visible file under a class folder, subfolders included (as torchvision's ImageFolder walks them), in
    sorted path order; hidden files and folders are skipped. Linked folders are followed, but each real folder is
    walked once: a link back up (a loop) would otherwise list its files again at every level, 40 times over, until
    the system's limit on nested links stops the walk. A folder that cannot be listed (no read permission) raises its
    OSError, naming it: `os.walk` skips it by default, and an unreadable folder was taken for an empty one."""
    out, walked = [], set()
    for here, dirs, files in os.walk(folder, followlinks=True, onerror=_raise):
        real = os.path.realpath(here)
        if real in walked:
            dirs[:] = []
            continue
        walked.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        out += [Path(here) / f for f in files if _is_candidate(f)]
    return sorted(out)


def scan_dataset(
    root: str | os.PathLike,
    train_split: str = "train",
    val_split: str = "val",
    classes: list[str] | None = None,
    max_per_class: int | None = None,
    max_val_per_class: int | None = None,
    subsample_rule: str = "hash",
    every_file: bool = False,
) -> tuple[Split, Split]:
    """Both splits, checked to hold the same classes before any training starts (``max_per_class`` and
    ``max_val_per_class`` pick files by ``subsample_rule``: `subsample`)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found" + (" (it is a file)" if root.exists() else ""))
    for split in (train_split, val_split):
        if not (root / split).is_dir():
            # --data ROOT/train: a split folder given for the dataset's root (its sub-folders are the classes)
            split_itself = root.name in (train_split, val_split)
            up = f"; it is a split folder itself: give --data {root.parent}" if split_itself else ""
            raise DataError(f"{root}: missing split folder {split!r} (expected {root}/{split}/<class>/<images>){up}")
    train = scan_split(root / train_split, classes, max_per_class, subsample_rule, every_file)
    val = scan_split(root / val_split, classes, max_val_per_class, subsample_rule, every_file)
    if train.classes != val.classes:
        only_train = sorted(set(train.classes) - set(val.classes))
        only_val = sorted(set(val.classes) - set(train.classes))
        both = [c for c in train.classes if c in val.classes]
        fix = f"; {classes_option(both)} trains on the {len(both)} both hold" if len(both) >= 2 else ""
        raise DataError(
            f"{root}: {train_split} and {val_split} classes differ (only in {train_split}: {only_train or '-'}; "
            f"only in {val_split}: {only_val or '-'}){fix}"
        )
    return train, val


# the most class names a message spells out in a --classes option: beyond it the option is named, with the first few
# (ImageNet's splits missing one class would otherwise fill the line with 999 names)
MAX_CLASSES_SHOWN = 10


def classes_option(names: list[str]) -> str:
    """``--classes A B C`` as a shell takes it (each name quoted where it needs to be: folder names may hold spaces),
    or, for more than `MAX_CLASSES_SHOWN` names, the option named with their count and the first few."""
    import shlex

    if len(names) <= MAX_CLASSES_SHOWN:
        return "--classes " + " ".join(shlex.quote(n) for n in names)
    return f"--classes with the {len(names)} class names (first: {', '.join(names[:3])}, ...)"


def fuller_batch(images: int, batch_size: int, multiple: int = 1) -> int:
    """The batch size from ``batch_size`` down to half of it (a multiple of ``multiple``, the process count, and at
    least 2 for BatchNorm) that leaves the fewest of ``images`` out of full batches, the largest of those: what to
    suggest when the loader's drop_last leaves many images unused each epoch (100 at 64: 50, none unused)."""
    low = max(2, multiple, -(-batch_size // 2))
    sizes = [b for b in range(batch_size, low - 1, -1) if b % multiple == 0] or [batch_size]
    return min(sizes, key=lambda b: images % b)  # min keeps the first (largest) of equals


def check_trainable(train: Split, batch_size: int, option: str | None = None) -> None:
    """A DataError where ``train`` cannot train a classifier in batches of ``batch_size``: one class (a loss of 0
    and top-1 of 1.0 from the first step, learning nothing), or fewer images than one batch; the latter names
    ``option``, where the caller has one that sets the batch (train's --batch-size; reproduce's budget has none)."""
    if len(train.classes) < 2:
        raise DataError(f"{train.root}: one class ({train.classes[0]}); a classifier needs at least two")
    n = len(train.samples)
    if n < batch_size:
        fix = f" (give {option} {n} or less)" if option else ""
        raise DataError(f"{train.root}: {n} images, fewer than one batch of {batch_size}{fix}")


@dataclass
class BadFiles:
    """Files that could not be decoded: a count and the first few paths with the reason."""

    count: int = 0
    first: list[str] = field(default_factory=list)

    def add(self, path: str, reason: str) -> None:
        self.count += 1
        if len(self.first) < MAX_REPORTED:
            self.first.append(f"{path}: {reason}")

    def merge(self, other: BadFiles) -> None:
        self.count += other.count
        self.first = (self.first + other.first)[:MAX_REPORTED]

    def to_dict(self) -> dict:
        return {"count": self.count, "first": list(self.first)}


def train_transform(spec: ModelSpec, resolution: int, scale_min: float, ratio: tuple[float, float], hflip: bool):
    """RandomResizedCrop(scale=(scale_min, 1)) + optional flip, then the spec's normalisation (RGB: `check_rgb`)."""
    check_rgb(spec)
    steps = [
        v2.RandomResizedCrop(
            resolution,
            scale=(scale_min, 1.0),
            ratio=ratio,
            interpolation=InterpolationMode(spec.interpolation),
            antialias=True,
        )
    ]
    if hflip:
        steps.append(v2.RandomHorizontalFlip())
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(spec.mean), list(spec.std))]
    return v2.Compose(steps)


def cache_side(resolution: int, crop_pct: float) -> int:
    """Shorter side images are reduced to before their transform, cached or not: the eval resize target, so it
    changes no eval pixel; training crops come from it."""
    return int(resolution / crop_pct)


def _shrink(img: torch.Tensor, side: int, interpolation: str) -> torch.Tensor:
    # the eval transform's own resize (same side, same interpolation), which then finds nothing left to do
    h, w = img.shape[-2:]
    if min(h, w) <= side:
        return img
    return v2.functional.resize(img, side, interpolation=InterpolationMode(interpolation), antialias=True)


def estimate_cache_bytes(samples: list[tuple[str, int]], side: int, stop_above: float = float("inf")) -> int:
    """uint8 bytes the cache would need, from image headers (Pillow reads sizes without decoding).

    Stops early once the total passes ``stop_above`` (an ImageNet-sized folder need not be scanned to say no).
    """
    from PIL import Image

    total = 0
    for path, _ in samples:
        if total > stop_above:
            break
        try:
            with Image.open(path) as im:
                w, h = im.size
        except Exception:  # noqa: BLE001 - unreadable files are counted as bad later, not sized here
            continue
        s = min(1.0, side / max(1, min(h, w)))
        total += 3 * max(1, round(h * s)) * max(1, round(w * s))
    return total


class ImageFolderDataset(Dataset):
    """Samples -> (float image, label, [(index, reason) of unreadable files met]).

    An unreadable file never reaches the model. For evaluation (``replace_bad`` False) its item is (None, label,
    [(index, reason)]) and `collate` drops it. For training (``replace_bad`` True) the item is the next readable
    sample in file order instead (augmented with the bad sample's own random numbers), so every batch keeps its size:
    a batch of one image would stop BatchNorm, and under DDP a rank left with an empty batch would skip a step the
    others take and hang them. The bad file is still counted and reported.
    """

    def __init__(
        self,
        split: Split,
        transform,
        *,
        seed: int = 0,
        cache_side: int | None = None,
        interpolation: str = "bilinear",
        replace_bad: bool = False,
    ) -> None:
        self.split = split
        self.replace_bad = replace_bad
        self._bad: dict[int, str] = {}  # files found unreadable, with why: skipped when looking for a stand-in
        self.samples = split.samples
        self.transform = transform
        self.seed = seed
        self.epoch = 0
        self.cache: list[torch.Tensor | None] | None = None
        self.cache_side = cache_side
        self.interpolation = interpolation  # the spec's: the reduction to cache_side is then the eval resize
        self.bad_at_cache = BadFiles()

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def build_cache(self, threads: int = 1) -> None:
        """Decode every image once (uint8); bad files are remembered as None and reported per epoch."""

        def load(index: int) -> torch.Tensor | str:
            try:
                img = read_image(self.samples[index][0])
            except (ImageError, OSError) as exc:
                return failure_reason(exc, self.samples[index][0])  # the reason, reported as without the cache
            return _shrink(img, self.cache_side, self.interpolation).clone() if self.cache_side else img

        loaded = decode_all(load, range(len(self.samples)), threads)
        self.cache = [x if isinstance(x, torch.Tensor) else None for x in loaded]
        self._bad.update((i, x) for i, x in enumerate(loaded) if isinstance(x, str))

    def _decode(self, index: int) -> tuple[torch.Tensor | None, str]:
        if self.cache is not None:
            img = self.cache[index]
            return img, "" if img is not None else self._bad.get(index, "not a readable image")
        try:
            img = read_image(self.samples[index][0])
        except (ImageError, OSError) as exc:
            return None, failure_reason(exc, self.samples[index][0])
        shrunk = _shrink(img, self.cache_side, self.interpolation) if self.cache_side else img
        return shrunk, ""  # the cache's pixels, uncached too

    def sample_seed(self, index: int) -> int:
        return ((self.seed * 1_000_003 + self.epoch) * 10_000_019 + index) % (2**63)

    def __getitem__(self, index: int):
        label = self.samples[index][1]
        img, reason = self._decode(index)
        if img is None:
            self._bad[index] = reason
            tries = range(1, len(self.samples)) if self.replace_bad else ()
            for step in tries:  # the next readable sample in file order; files known to be bad are not read again
                other = (index + step) % len(self.samples)
                if other in self._bad:
                    continue
                img, why = self._decode(other)
                if img is not None:
                    label = self.samples[other][1]
                    break
                self._bad[other] = why
            if img is None:
                return None, label, [(index, reason)]
            return self._augment(img, index), label, [(index, reason)]  # the others are reported in their own slots
        return self._augment(img, index), label, []

    def _augment(self, img: torch.Tensor, index: int) -> torch.Tensor:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.sample_seed(index))
            return self.transform(img)


def collate(batch):
    """Stack the readable samples; return (images, labels, [(index, reason) of the unreadable files met])."""
    good = [b for b in batch if b[0] is not None]
    bad = [record for b in batch for record in b[2]]
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.long), bad
    return torch.stack([b[0] for b in good]), torch.tensor([b[1] for b in good]), bad


def should_cache(mode: str, samples: list[tuple[str, int]], side: int, budget_gb: float) -> tuple[bool, int]:
    """(use the cache?, estimated bytes). ``auto`` caches when the estimate fits the budget."""
    if mode == "off":
        return False, 0
    if mode == "on":
        return True, estimate_cache_bytes(samples, side)
    need = estimate_cache_bytes(samples, side, stop_above=budget_gb * 2**30)
    return need <= budget_gb * 2**30, need


__all__ = [
    "BadFiles",
    "DataError",
    "ImageFolderDataset",
    "Split",
    "cache_side",
    "collate",
    "is_image_name",
    "left_out_note",
    "left_out_report",
    "scan_dataset",
    "scan_split",
    "should_cache",
    "subsample",
    "train_transform",
]


def shared_data_root() -> Path:
    """Real data for tests, benchmarks and `mobilenets reproduce`: $MOBILENETS_DATA, else ../shared/data beside the
    checkout (the layout this project's machines and CI use)."""
    return Path(os.environ.get("MOBILENETS_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
