"""Dataset readers on tiny fake trees (written with PIL) and on the real samples in ../shared/data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vidseg_nb import datasets as D
from vidseg_nb.datasets import DatasetError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

H, W = 6, 8


def _frame(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((H, W, 3), value, np.uint8)).save(path)


def _gray(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint8), mode="L").save(path)


def _palette(path: Path, arr: np.ndarray) -> None:
    """A palette PNG whose colours differ from its indices (index i -> colour (255 - i, i, 7))."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(arr.astype(np.uint8), mode="P")
    im.putpalette([c for i in range(256) for c in (255 - i, i, 7)])
    im.save(path)


# --------------------------------------------------------------------------------------------------
# DAVIS
# --------------------------------------------------------------------------------------------------
def _davis2016(root: Path) -> None:
    for seq, n in (("bear", 3), ("cows", 2)):
        for i in range(n):
            _frame(root / "JPEGImages" / "480p" / seq / f"{i:05d}.jpg", 10 * i)
            if (seq, i) != ("bear", 2):  # bear's last frame has no annotation
                mask = np.zeros((H, W))
                mask[1:4, 2 : 3 + i] = 255
                _gray(root / "Annotations" / "480p" / seq / f"{i:05d}.png", mask)


def test_davis2016_reader_maps_255_to_object(tmp_path: Path) -> None:
    _davis2016(tmp_path)
    ds = D.DavisDataset(tmp_path)
    assert ds.names == ["bear", "cows"] and len(ds) == 2
    s = ds["bear"]
    assert isinstance(s, D.VideoSample) and s.num_classes == 2 and s.ignore_index == 255
    frames = s.load_frames()
    assert frames.shape == (3, H, W, 3) and frames.dtype == np.uint8
    labels = s.load_labels()
    assert labels.shape == (3, H, W) and labels.dtype == np.int64
    assert labels[0, 2, 2] == 1 and labels[0, 0, 0] == 0  # 255 -> object 1, not void
    assert set(np.unique(labels[:2])) == {0, 1}
    assert (labels[2] == 255).all()  # no annotation -> ignore_index
    assert s.annotated == [0, 1]
    assert s.load_labels(max_frames=1).shape == (1, H, W)
    assert s.load_frames(max_frames=2).shape == (2, H, W, 3)
    assert [x.name for x in ds.select(1)] == ["bear"]
    assert D.DavisDataset(tmp_path, sequences="cows").names == ["cows"]


def test_davis2017_reads_palette_indices(tmp_path: Path) -> None:
    ids = np.zeros((H, W))
    ids[0:2, 0:2] = 1
    ids[3:5, 3:6] = 2
    ids[5, :] = 255
    for i in range(2):
        _frame(tmp_path / "JPEGImages" / "480p" / "dogs" / f"{i:05d}.jpg", 50)
        _palette(tmp_path / "Annotations" / "480p" / "dogs" / f"{i:05d}.png", ids)
    s = D.open_dataset("davis2017", tmp_path)[0]
    assert s.num_classes == 3 and s.ignore_index == 255
    np.testing.assert_array_equal(s.load_labels()[1], ids)


def test_davis_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"JPEGImages/480p/<sequence>/\*\.jpg"):
        D.DavisDataset(tmp_path / "missing")
    with pytest.raises(DatasetError, match=r"expected .*JPEGImages/480p"):
        D.DavisDataset(tmp_path)  # exists, wrong layout
    _davis2016(tmp_path)
    with pytest.raises(DatasetError, match="not found"):
        D.DavisDataset(tmp_path, sequences=["bear", "zebra"])
    with pytest.raises(DatasetError, match="no video named"):
        D.DavisDataset(tmp_path).sample("zebra")
    assert issubclass(DatasetError, ValueError)


def test_iteration_is_lazy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _davis2016(tmp_path)
    ds = D.DavisDataset(tmp_path)

    def boom(*a: object, **k: object) -> None:
        raise AssertionError("an image was opened while iterating")

    monkeypatch.setattr(D.Image, "open", boom)
    samples = list(ds)
    assert [s.name for s in samples] == ["bear", "cows"]
    assert len(samples[0].frame_paths) == 3


def test_rgb_label_png_is_rejected(tmp_path: Path) -> None:
    _frame(tmp_path / "JPEGImages" / "480p" / "a" / "00000.jpg", 1)
    _frame(tmp_path / "Annotations" / "480p" / "a" / "00000.png", 255)  # RGB, not an index image
    with pytest.raises(DatasetError, match="single-channel or palette"):
        D.DavisDataset(tmp_path)[0].load_labels()


# --------------------------------------------------------------------------------------------------
# VSPW
# --------------------------------------------------------------------------------------------------
def test_vspw_remap_and_split(tmp_path: Path) -> None:
    raw = np.array([0, 1, 2, 50, 124, 254, 255, 1] * 6).reshape(H, W)
    for vid in ("127_x", "9_y"):
        for i in range(2):
            _frame(tmp_path / "data" / vid / "origin" / f"{i:08d}.jpg", 30)
            _palette(tmp_path / "data" / vid / "mask" / f"{i:08d}.png", raw)
    (tmp_path / "val.txt").write_text("9_y\n")
    ds = D.VSPWDataset(tmp_path)
    assert ds.names == ["127_x", "9_y"]
    s = ds[0]
    assert s.num_classes == 124 and s.ignore_index == 255
    lab = s.load_labels()
    # official remap: 0 -> 255, then minus 1 (1..124 -> 0..123), then 254 -> 255
    np.testing.assert_array_equal(lab[0, 0], [255, 0, 1, 49, 123, 253, 255, 0])
    assert D.VSPWDataset(tmp_path, split="val").names == ["9_y"]
    with pytest.raises(DatasetError, match="test.txt"):
        D.VSPWDataset(tmp_path, split="test")
    with pytest.raises(DatasetError, match=r"data/<video>/origin/\*\.jpg"):
        D.VSPWDataset(tmp_path / "data")


# --------------------------------------------------------------------------------------------------
# CamVid
# --------------------------------------------------------------------------------------------------
def test_camvid_shared_layout(tmp_path: Path) -> None:
    lab = np.arange(H * W).reshape(H, W) % 12  # 0..10 classes, 11 void
    for i in range(3):
        name = f"0016E5_{7959 + 2 * i:05d}.png"
        _frame(tmp_path / "0016E5" / "frames" / name, i)
        if i < 2:
            _gray(tmp_path / "0016E5" / "labels" / name, lab)
    ds = D.CamVidDataset(tmp_path)
    assert ds.names == ["0016E5"]
    s = ds[0]
    assert (s.num_classes, s.ignore_index) == (11, 11)
    labels = s.load_labels()
    np.testing.assert_array_equal(labels[0], lab)
    assert (labels[2] == 11).all()
    # root may also be the sequence folder itself
    assert D.CamVidDataset(tmp_path / "0016E5").names == ["0016E5"]
    s32 = D.CamVidDataset(tmp_path, classes=32)[0]
    assert (s32.num_classes, s32.ignore_index) == (32, 255)
    with pytest.raises(DatasetError, match=r"<sequence>/frames"):
        D.CamVidDataset(tmp_path / "0016E5" / "labels")
    with pytest.raises(DatasetError, match="not found"):
        D.CamVidDataset(tmp_path, sequence="Seq05VD")


def test_camvid_segnet_layout(tmp_path: Path) -> None:
    for name in ("0016E5_08000.png", "0016E5_08002.png", "Seq05VD_f00000.png"):
        _frame(tmp_path / "val" / name, 5)
        _gray(tmp_path / "valannot" / name, np.full((H, W), 3))
    ds = D.open_dataset("camvid", tmp_path)
    assert ds.names == ["0016E5", "Seq05VD"]
    assert len(ds[0]) == 2 and (ds["Seq05VD"].load_labels() == 3).all()


# --------------------------------------------------------------------------------------------------
# Cityscapes
# --------------------------------------------------------------------------------------------------
def _cityscapes(root: Path, n_frames: int = 35, gt_frame: int | None = 19) -> np.ndarray:
    ids = np.array([7, 26, 0, 33, 24, 1, 23, 11] * 6).reshape(H, W)
    for k in range(n_frames):
        _frame(root / "leftImg8bit_sequence" / "val" / "lindau" / f"lindau_000000_{k:06d}_leftImg8bit.png", k)
    if gt_frame is not None:
        _gray(root / "gtFine" / "val" / "lindau" / f"lindau_000000_{gt_frame:06d}_gtFine_labelIds.png", ids)
    return ids


def test_cityscapes_twentieth_frame(tmp_path: Path) -> None:
    _cityscapes(tmp_path)
    ds = D.CityscapesDataset(tmp_path)
    assert ds.names == ["lindau_000000_000019"]
    s = ds[0]
    assert (s.num_classes, s.ignore_index) == (19, 255)
    assert len(s) == 30  # frames 0..29: the annotated frame is the 20th (index 19)
    assert [i for i, p in enumerate(s.label_paths) if p is not None] == [19]
    assert s.frame_paths[19].name == "lindau_000000_000019_leftImg8bit.png"
    labels = s.load_labels()
    # labelId -> trainId: road 7 -> 0, car 26 -> 13, unlabeled 0 -> 255, bicycle 33 -> 18,
    # person 24 -> 11, ego vehicle 1 -> 255, sky 23 -> 10, building 11 -> 2
    np.testing.assert_array_equal(labels[19, 0], [0, 13, 255, 18, 11, 255, 10, 2])
    assert (labels[:19] == 255).all() and (labels[20:] == 255).all()


def test_cityscapes_frames_only_and_errors(tmp_path: Path) -> None:
    _cityscapes(tmp_path, gt_frame=None)
    with pytest.raises(DatasetError, match="gtFine"):
        D.CityscapesDataset(tmp_path)
    ds = D.CityscapesDataset(tmp_path, with_labels=False)
    assert [len(s) for s in ds] == [30, 5]
    assert all(p is None for s in ds for p in s.label_paths)
    with pytest.raises(DatasetError, match="leftImg8bit_sequence/<split>"):
        D.CityscapesDataset(tmp_path, split="test")
    with pytest.raises(DatasetError, match="unknown dataset"):
        D.open_dataset("kitti", tmp_path)


# --------------------------------------------------------------------------------------------------
# real samples
# --------------------------------------------------------------------------------------------------
@pytest.mark.data
@pytest.mark.skipif(not (DATA / "davis2016").is_dir(), reason=f"real DAVIS 2016 sample not found at {DATA}")
def test_real_davis2016_object_is_label_one() -> None:
    ds = D.open_dataset("davis", DATA / "davis2016")
    assert "blackswan" in ds.names and len(ds) == 8
    s = ds["blackswan"]
    raw = np.asarray(Image.open(s.label_paths[0]))
    lab = s.load_labels(max_frames=2)
    assert lab.shape == (2, 480, 854) and s.load_frames(max_frames=1).shape == (1, 480, 854, 3)
    np.testing.assert_array_equal(lab[0] == 1, raw == 255)
    assert set(np.unique(lab)) == {0, 1}


@pytest.mark.data
@pytest.mark.skipif(not (DATA / "camvid").is_dir(), reason=f"real CamVid sample not found at {DATA}")
def test_real_camvid() -> None:
    ds = D.open_dataset("camvid", DATA / "camvid")
    s = ds["0016E5"]
    assert len(s) == 101 and all(p is not None for p in s.label_paths)
    lab = s.load_labels(max_frames=3)
    assert lab.shape == (3, 360, 480) and lab.max() <= 11
    assert s.load_frames(max_frames=1).shape == (1, 360, 480, 3)
