"""Readers of real gaze datasets and leave-subjects-out splits, on tiny files written here."""

import pickle

import cv2
import h5py
import numpy as np
import pytest
import scipy.io
from hypothesis import given, settings
from hypothesis import strategies as st

from securegaze.data.base import ArrayGazeDataset, materialize
from securegaze.data.ethxgaze import ETHXGaze, list_ethxgaze_subjects
from securegaze.data.folder_csv import FolderCsvDataset
from securegaze.data.mpiifacegaze import MPIIFaceGaze, list_mpiifacegaze_subjects
from securegaze.data.readers import open_dataset
from securegaze.data.splits import (
    leave_one_subject_out,
    leave_subjects_out,
    mpiifacegaze_protocol,
    split_subjects,
    subject_folds,
)
from securegaze.errors import DatasetError, InputFileError

BLUE_RGB = (0, 0, 255)
BLUE_BGR = (255, 0, 0)


def faces_rgb(n, size=36, seed=0):
    """(n, size, size, 3) uint8 RGB noise faces with a pure-blue top-left pixel (catches flips and transposes)."""
    images = np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    images[:, 0, 0] = BLUE_RGB
    return images


def gaze_labels(n, seed=0):
    rng = np.random.default_rng(seed + 100)
    return np.stack([rng.uniform(-0.5, 0.5, n), rng.uniform(-0.8, 0.8, n)], axis=1)  # (pitch, yaw) rad


def write_eth(path, rgb, gaze=None):
    with h5py.File(path, "w") as f:
        f["face_patch"] = rgb[..., ::-1]  # the release stores BGR
        if gaze is not None:
            f["face_gaze"] = gaze
        f["face_head_pose"] = np.zeros((len(rgb), 2))
        f["frame_index"] = np.arange(len(rgb))[:, None]
        f["cam_index"] = np.zeros((len(rgb), 1), dtype=np.int64)


def matlab_face_array(rgb):
    """The released Data.data in MATLAB's own axis order (rows x cols x 3 x N), prepared as the MPIIFaceGaze
    page describes: img(:,:,[3 2 1]), flip(img, 2), imrotate(img, 90)."""
    prepared = [np.rot90(im[:, :, ::-1][:, ::-1], 1) for im in rgb]
    return np.stack(prepared, axis=-1)


def matlab_labels(gaze):
    """Data.label as MATLAB holds it: 16 x N, rows 0-1 gaze (pitch, yaw), 2-3 head pose, then landmarks."""
    label = np.zeros((16, len(gaze)))
    label[0:2] = gaze.T
    label[2:4] = 0.05
    label[4:] = 100.0
    return label


def write_mat73(path, rgb, gaze):
    # v7.3 .mat = HDF5 behind a 512-byte MATLAB header; h5py stores arrays with MATLAB's axes reversed.
    with h5py.File(path, "w", userblock_size=512) as f:
        f["Data/data"] = matlab_face_array(rgb).transpose(3, 2, 1, 0)
        f["Data/label"] = matlab_labels(gaze).T
    with open(path, "r+b") as fh:
        fh.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, HDF5 schema 1.00 .".ljust(116))


def write_mat5(path, rgb, gaze):
    scipy.io.savemat(path, {"Data": {"data": matlab_face_array(rgb), "label": matlab_labels(gaze)}})


def write_mpii_h5(path, rgb, gaze):
    with h5py.File(path, "w") as f:
        f["image"] = rgb[..., ::-1]
        f["gaze"] = gaze
        f["pose"] = np.zeros((len(rgb), 2))


def write_csv(folder, rows, header="image,subject,pitch,yaw"):
    (folder / "labels.csv").write_text("\n".join([header, *rows]) + "\n")


def save_png(path, rgb):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), rgb[..., ::-1])


def all_images(dataset):
    return np.stack([dataset[i].image for i in range(len(dataset))])


# ---------------------------------------------------------------- ETH-XGaze


def test_ethxgaze_converts_bgr_and_keeps_pitch_yaw_order(tmp_path):
    rgb0, rgb1 = faces_rgb(3, size=224, seed=1), faces_rgb(2, size=224, seed=2)
    g0, g1 = gaze_labels(3, 1), gaze_labels(2, 2)
    write_eth(tmp_path / "subject0000.h5", rgb0, g0)
    write_eth(tmp_path / "subject0003.h5", rgb1, g1)
    ds = ETHXGaze(tmp_path)
    assert len(ds) == 5
    assert ds.subjects.tolist() == ["subject0000"] * 3 + ["subject0003"] * 2
    sample = ds[3]
    assert tuple(sample.image[0, 0]) == BLUE_RGB
    np.testing.assert_array_equal(all_images(ds), np.concatenate([rgb0, rgb1]))
    np.testing.assert_allclose(sample.gaze, g1[0], rtol=1e-6)
    assert sample.gaze.dtype == np.float32 and sample.subject == "subject0003"
    assert list_ethxgaze_subjects(tmp_path) == ["subject0000", "subject0003"]
    assert ETHXGaze(tmp_path, subjects=["subject0003"], size=32)[0].image.shape == (32, 32, 3)


def test_ethxgaze_test_split_without_labels_is_refused(tmp_path):
    write_eth(tmp_path / "subject0001.h5", faces_rgb(2))
    with pytest.raises(DatasetError) as err:
        ETHXGaze(tmp_path)
    message = str(err.value)
    assert "subject0001.h5" in message
    assert "has no 'face_gaze' labels; the ETH-XGaze test split is unlabelled" in message


def test_ethxgaze_reads_images_on_access_not_at_construction(tmp_path):
    path = tmp_path / "subject0000.h5"
    write_eth(path, faces_rgb(2), gaze_labels(2))
    ds = ETHXGaze(path)
    replacement = faces_rgb(2, seed=9)
    with h5py.File(path, "r+") as f:  # fails if the reader kept the file open since construction
        f["face_patch"][...] = replacement[..., ::-1]
    np.testing.assert_array_equal(ds[1].image, replacement[1])
    assert not any(isinstance(v, np.ndarray) and v.ndim == 4 for v in vars(ds).values())


def test_ethxgaze_survives_pickling_for_loader_workers(tmp_path):
    write_eth(tmp_path / "subject0000.h5", faces_rgb(2), gaze_labels(2))
    ds = ETHXGaze(tmp_path)
    first = ds[0].image
    clone = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(clone[0].image, first)
    with pytest.raises(IndexError):
        ds[2]
    assert len(list(ds)) == 2  # iteration stops at IndexError


# ---------------------------------------------------------------- MPIIFaceGaze


def test_matlab_caffe_preparation_is_a_transpose():
    # The reasoning behind the .mat orientation: flip(img, 2) then imrotate(img, 90) transposes the face.
    rgb = faces_rgb(1)[0]
    np.testing.assert_array_equal(np.rot90(rgb[:, ::-1], 1), rgb.transpose(1, 0, 2))


@pytest.mark.parametrize("writer", [write_mat73, write_mat5], ids=["v7.3-hdf5", "v5-scipy"])
def test_mpiifacegaze_mat_files_give_upright_rgb_faces_and_gaze_columns(tmp_path, writer):
    faces = {"p00": faces_rgb(3, seed=3), "p01": faces_rgb(2, seed=4)}
    gazes = {"p00": gaze_labels(3, 3), "p01": gaze_labels(2, 4)}
    for subject in faces:
        writer(tmp_path / f"{subject}.mat", faces[subject], gazes[subject])
    ds = MPIIFaceGaze(tmp_path)
    assert ds.subjects.tolist() == ["p00"] * 3 + ["p01"] * 2
    np.testing.assert_array_equal(all_images(ds), np.concatenate([faces["p00"], faces["p01"]]))
    assert tuple(ds[4].image[0, 0]) == BLUE_RGB
    np.testing.assert_allclose(ds.gaze, np.concatenate([gazes["p00"], gazes["p01"]]), rtol=1e-6)
    assert list_mpiifacegaze_subjects(tmp_path) == ["p00", "p01"]


def test_mpiifacegaze_per_subject_h5(tmp_path):
    rgb, gaze = faces_rgb(4, seed=5), gaze_labels(4, 5)
    write_mpii_h5(tmp_path / "p02.h5", rgb[:2], gaze[:2])
    write_mpii_h5(tmp_path / "p10.h5", rgb[2:], gaze[2:])
    ds = MPIIFaceGaze(tmp_path, size=24)
    assert ds.subjects.tolist() == ["p02", "p02", "p10", "p10"]
    assert ds[0].image.shape == (24, 24, 3)
    full = MPIIFaceGaze(tmp_path, subjects=["p10"])
    np.testing.assert_array_equal(all_images(full), rgb[2:])
    np.testing.assert_allclose(full[-1].gaze, gaze[3], rtol=1e-6)
    with pytest.raises(DatasetError, match="unknown subject.*p05"):
        MPIIFaceGaze(tmp_path, subjects=["p05"])


def test_mpiifacegaze_single_file_with_a_group_per_subject(tmp_path):
    # pytorch_mpiigaze's MPIIFaceGaze.h5: p00/image/0000, p00/gaze/0000, ...
    rgb, gaze = faces_rgb(3, seed=6), gaze_labels(3, 6)
    path = tmp_path / "MPIIFaceGaze.h5"
    with h5py.File(path, "w") as f:
        for i, subject in enumerate(["p00", "p00", "p01"]):
            key = f"{i:04d}"
            f[f"{subject}/image/{key}"] = rgb[i][..., ::-1]
            f[f"{subject}/gaze/{key}"] = gaze[i]
    ds = open_dataset(path)
    assert isinstance(ds, MPIIFaceGaze)
    assert ds.subjects.tolist() == ["p00", "p00", "p01"]
    np.testing.assert_array_equal(all_images(ds), rgb)
    np.testing.assert_allclose(ds.gaze, gaze, rtol=1e-6)


def test_mpiifacegaze_reads_images_on_access_not_at_construction(tmp_path):
    write_mat73(tmp_path / "p00.mat", faces_rgb(2), gaze_labels(2))
    ds = MPIIFaceGaze(tmp_path)
    replacement = faces_rgb(2, seed=8)
    with h5py.File(tmp_path / "p00.mat", "r+") as f:
        f["Data/data"][...] = matlab_face_array(replacement).transpose(3, 2, 1, 0)
    np.testing.assert_array_equal(ds[0].image, replacement[0])


def test_mpiifacegaze_refuses_two_files_for_one_subject(tmp_path):
    write_mpii_h5(tmp_path / "p00.h5", faces_rgb(1), gaze_labels(1))
    write_mat5(tmp_path / "p00.mat", faces_rgb(1), gaze_labels(1))
    with pytest.raises(DatasetError, match="p00.h5 and p00.mat"):
        MPIIFaceGaze(tmp_path)


# ---------------------------------------------------------------- folder + CSV


def make_csv_dataset(folder, header="image,subject,pitch,yaw", values=None):
    rgb = faces_rgb(3, seed=7)
    names = ["a/0.png", "a/1.png", "b/0.png"]
    for name, image in zip(names, rgb, strict=True):
        save_png(folder / name, image)
    values = values or ["0.1,-0.2", "-0.3,0.4", "0.0,1.5"]
    subjects = ["alice", "alice", "bob"]
    write_csv(folder, [f"{n},{s},{v}" for n, s, v in zip(names, subjects, values, strict=True)], header)
    return rgb


def test_folder_csv_reads_rgb_radians_and_subjects(tmp_path):
    rgb = make_csv_dataset(tmp_path)
    ds = open_dataset(tmp_path)
    assert isinstance(ds, FolderCsvDataset)
    assert ds.subjects.tolist() == ["alice", "alice", "bob"]
    np.testing.assert_array_equal(all_images(ds), rgb)
    assert tuple(ds[2].image[0, 0]) == BLUE_RGB
    np.testing.assert_allclose(ds[1].gaze, [-0.3, 0.4], rtol=1e-6)
    assert len(FolderCsvDataset(tmp_path / "labels.csv", subjects=["bob"])) == 1


def test_folder_csv_degree_columns(tmp_path):
    make_csv_dataset(tmp_path, "image,subject,pitch_deg,yaw_deg", ["10,-20", "0,0", "-90,180"])
    ds = FolderCsvDataset(tmp_path)
    np.testing.assert_allclose(ds.gaze[0], np.deg2rad([10.0, -20.0]), rtol=1e-6)
    np.testing.assert_allclose(ds.gaze[2], [-np.pi / 2, np.pi], rtol=1e-6)


@pytest.mark.parametrize(
    "header, missing",
    [
        ("image,pitch,yaw,subjectid", "subject"),
        ("image,subject,pitch", "yaw"),
        ("file,subject,pitch,yaw", "image"),
    ],
)
def test_folder_csv_names_the_missing_column(tmp_path, header, missing):
    write_csv(tmp_path, ["x.png,s,0,0,0"], header)
    with pytest.raises(DatasetError, match=f"missing column '{missing}'"):
        FolderCsvDataset(tmp_path)


@pytest.mark.parametrize(
    "values, column, problem",
    [
        (["0.1,-0.2", "abc,0.4", "0,0"], "pitch", "'abc' is not a number"),
        (["0.1,-0.2", "0.3,", "0,0"], "yaw", "empty cell"),
        (["0.1,-0.2", "0.3,0.1", "2.0,0"], "pitch", "outside \\+-90 degrees"),
        (["0.1,-0.2", "0.3,0.1", "0,nan"], "yaw", "not a finite number"),
    ],
)
def test_folder_csv_bad_values_name_file_line_and_column(tmp_path, values, column, problem):
    make_csv_dataset(tmp_path, values=values)
    bad_line = 2 + next(i for i, v in enumerate(values) if v not in ("0.1,-0.2", "0.3,0.1"))
    with pytest.raises(DatasetError, match=f"labels.csv, line {bad_line}, column '{column}': .*{problem}"):
        FolderCsvDataset(tmp_path)


def test_folder_csv_degrees_out_of_range(tmp_path):
    make_csv_dataset(tmp_path, "image,subject,pitch_deg,yaw_deg", ["10,-20", "0,190", "0,0"])
    with pytest.raises(DatasetError, match="line 3, column 'yaw_deg'.*outside \\+-180 degrees"):
        FolderCsvDataset(tmp_path)


def test_folder_csv_missing_and_unreadable_images(tmp_path):
    make_csv_dataset(tmp_path)
    (tmp_path / "b" / "0.png").unlink()
    with pytest.raises(DatasetError, match=r"line 4: image file .*b/0.png not found"):
        FolderCsvDataset(tmp_path)
    (tmp_path / "b" / "0.png").write_bytes(b"not a png at all")
    ds = FolderCsvDataset(tmp_path)
    with pytest.raises(DatasetError, match=r"b/0.png: not an image"):
        ds[2]


def test_folder_csv_missing_labels_file(tmp_path):
    with pytest.raises(DatasetError, match="labels.csv: file not found"):
        FolderCsvDataset(tmp_path)


# ---------------------------------------------------------------- dispatch and damaged files


def test_open_dataset_dispatches_by_layout(tmp_path):
    (tmp_path / "eth").mkdir()
    (tmp_path / "mpii").mkdir()
    write_eth(tmp_path / "eth" / "subject0000.h5", faces_rgb(1), gaze_labels(1))
    write_mpii_h5(tmp_path / "mpii" / "p00.h5", faces_rgb(1), gaze_labels(1))
    assert isinstance(open_dataset(tmp_path / "eth"), ETHXGaze)
    assert isinstance(open_dataset(tmp_path / "eth" / "subject0000.h5"), ETHXGaze)
    assert isinstance(open_dataset(str(tmp_path / "mpii")), MPIIFaceGaze)


def test_open_dataset_unknown_layout_lists_accepted_ones(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DatasetError) as err:
        open_dataset(tmp_path)
    message = str(err.value)
    assert "labels.csv" in message and "p00.h5" in message and "subject0000.h5" in message
    with pytest.raises(DatasetError, match="no such file or folder"):
        open_dataset(tmp_path / "absent")


@pytest.mark.parametrize("name", ["subject0000.h5", "p00.h5", "p00.mat"])
def test_truncated_hdf5_gives_one_line_error_naming_the_file(tmp_path, name):
    path = tmp_path / name
    if name.startswith("subject"):
        write_eth(path, faces_rgb(4), gaze_labels(4))
    elif name.endswith(".h5"):
        write_mpii_h5(path, faces_rgb(4), gaze_labels(4))
    else:
        write_mat73(path, faces_rgb(4), gaze_labels(4))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputFileError) as err:
        materialize(open_dataset(tmp_path))
    message = str(err.value)
    assert name in message and "truncated or corrupt" in message and "\n" not in message


def test_corrupt_v5_mat_gives_input_file_error(tmp_path):
    (tmp_path / "p00.mat").write_bytes(b"MATLAB 5.0 MAT-file" + bytes(200))
    with pytest.raises(InputFileError, match="p00.mat: cannot read this MATLAB file"):
        MPIIFaceGaze(tmp_path)


# ---------------------------------------------------------------- splits


def tiny_dataset(subject_sizes):
    subjects = [s for s, n in subject_sizes.items() for _ in range(n)]
    n = len(subjects)
    return ArrayGazeDataset(np.zeros((n, 2, 2, 3), np.uint8), np.zeros((n, 2), np.float32), subjects)


def test_leave_subjects_out_separates_people(tmp_path):
    ds = tiny_dataset({"a": 3, "b": 2, "c": 4})
    train, test = leave_subjects_out(ds, ["b", "c"])
    assert set(test.subjects) == {"b", "c"} and set(train.subjects) == {"a"}
    assert sorted([*train.indices, *test.indices]) == list(range(len(ds)))
    train, test = leave_subjects_out(ds, "a")
    assert len(test) == 3 and len(train) == 6


@pytest.mark.parametrize(
    "held_out, match",
    [
        (["a", "zz"], "unknown test subject.*zz"),
        ([], "no test subjects"),
        (["a", "b"], "no subject to train"),
    ],
)
def test_leave_subjects_out_errors(held_out, match):
    with pytest.raises(DatasetError, match=match):
        leave_subjects_out(tiny_dataset({"a": 1, "b": 1}), held_out)


def test_leave_subjects_out_on_a_lazy_reader(tmp_path):
    write_eth(tmp_path / "subject0000.h5", faces_rgb(2), gaze_labels(2))
    write_eth(tmp_path / "subject0001.h5", faces_rgb(3, seed=1), gaze_labels(3))
    train, test = leave_subjects_out(ETHXGaze(tmp_path), ["subject0001"])
    assert len(train) == 2 and len(test) == 3
    np.testing.assert_array_equal(test[0].image, faces_rgb(3, seed=1)[0])


@settings(max_examples=40, deadline=None)
@given(n_subjects=st.integers(2, 12), k=st.integers(2, 12), seed=st.integers(0, 2**16))
def test_subject_folds_test_every_subject_exactly_once(n_subjects, k, seed):
    k = min(k, n_subjects)
    ds = tiny_dataset({f"s{i}": 1 + i % 3 for i in range(n_subjects)})
    folds = subject_folds(ds, k, seed)
    tested = [s for fold in folds for s in fold.test_subjects]
    assert sorted(tested) == sorted(f"s{i}" for i in range(n_subjects))
    sizes = [len(fold.test_subjects) for fold in folds]
    assert max(sizes) - min(sizes) <= 1
    for fold in folds:
        assert not set(fold.train.subjects) & set(fold.test.subjects)
        assert len(fold.train) + len(fold.test) == len(ds)
    assert split_subjects(reversed(ds.subjects), k, seed) == [f.test_subjects for f in folds]


def test_subject_folds_rejects_more_folds_than_subjects():
    with pytest.raises(DatasetError, match="cannot make 4 subject folds from 3"):
        subject_folds(tiny_dataset({"a": 1, "b": 1, "c": 1}), 4)


def test_mpiifacegaze_protocol_tests_p00_to_p14_in_turn():
    ds = tiny_dataset({f"p{i:02d}": 2 for i in range(15)})
    splits = mpiifacegaze_protocol(ds)
    assert [s.test_subjects for s in splits] == [(f"p{i:02d}",) for i in range(15)]
    assert all(len(s.test) == 2 and len(s.train) == 28 for s in splits)
    partial = tiny_dataset({"p00": 1, "p03": 1, "p07": 1})
    with pytest.raises(DatasetError, match="lacks p01"):
        mpiifacegaze_protocol(partial)
    assert [s.test_subjects for s in mpiifacegaze_protocol(partial, require_all=False)] == [
        ("p00",),
        ("p03",),
        ("p07",),
    ]
    assert len(leave_one_subject_out(partial)) == 3
