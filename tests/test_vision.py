"""Real-image datamodules without downloads: folders of generated PNGs, and clear errors for missing data."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
import torch
from PIL import Image

from lit_gan.data.vision import ImageFolder, TorchvisionImages


def write_pngs(folder, count, mode="RGB", size=(40, 30)):
    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(0)
    for i in range(count):
        channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
        pixels = torch.randint(0, 256, (size[1], size[0], channels), generator=generator, dtype=torch.uint8)
        Image.fromarray(pixels.squeeze(-1).numpy(), mode=mode).save(folder / f"{mode}_{i}.png")


def test_an_image_folder_of_generated_pngs_loads_as_square_tensors_in_range(tmp_path):
    write_pngs(tmp_path / "a", 5, "RGB")
    write_pngs(tmp_path / "b" / "deeper", 3, "L")
    write_pngs(tmp_path / "b", 2, "RGBA")
    datamodule = ImageFolder(root=str(tmp_path), resolution=16, channels=3, batch_size=4, num_workers=0)
    batches = list(datamodule.train_dataloader())
    assert len(batches) == 2  # 10 images, full batches of 4
    assert batches[0].shape == (4, 3, 16, 16)
    assert -1.0 <= batches[0].min() and batches[0].max() <= 1.0


def test_symlinked_sub_folders_are_read_and_a_link_loop_ends(tmp_path):
    write_pngs(tmp_path / "storage" / "cats", 3, "RGB")
    write_pngs(tmp_path / "root" / "dogs", 2, "RGB")
    (tmp_path / "root" / "cats").symlink_to(tmp_path / "storage" / "cats", target_is_directory=True)
    (tmp_path / "root" / "dogs" / "loop").symlink_to(tmp_path / "root", target_is_directory=True)
    files = ImageFolder(root=str(tmp_path / "root"), num_workers=0).files()
    assert sorted(f.relative_to(tmp_path / "root").as_posix() for f in files) == [
        "cats/RGB_0.png", "cats/RGB_1.png", "cats/RGB_2.png", "dogs/RGB_0.png", "dogs/RGB_1.png"]


@pytest.mark.parametrize("make", [lambda root: ImageFolder(root=root, resolution=0),
                                  lambda root: TorchvisionImages(root=root, resolution=-3)], ids=["folder", "torchvision"])
def test_an_image_size_below_one_is_refused(make, tmp_path):
    with pytest.raises(ValueError, match="data.resolution=(0|-3) is not valid: expected"):
        make(str(tmp_path))


def test_an_empty_folder_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match="data.root=.* is not valid: expected a folder containing image files"):
        ImageFolder(root=str(tmp_path), num_workers=0).train_dataloader()


def test_a_missing_folder_is_refused(tmp_path):
    with pytest.raises(ValueError, match="expected an existing folder of images"):
        ImageFolder(root=str(tmp_path / "nowhere"), num_workers=0).train_dataloader()


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_a_missing_torchvision_dataset_says_where_it_looked_and_how_to_provide_it(name, tmp_path):
    datamodule = TorchvisionImages(name=name, root=str(tmp_path / "data"), download=False, num_workers=0)
    with pytest.raises(ValueError) as error:
        datamodule.prepare_data()
    message = str(error.value)
    folder = {"mnist": "MNIST/raw", "cifar10": "cifar-10-batches-py"}[name]  # where torchvision reads them
    assert f"in {(tmp_path / 'data').resolve() / folder} " in message
    assert "data.download=true" in message and name in message


def test_downloading_celeba_without_gdown_says_to_install_it(tmp_path):
    """torchvision fetches CelebA from Google Drive through gdown; the message said to set the flag already set."""
    pytest.importorskip("torchvision")
    if importlib.util.find_spec("gdown") is not None:
        pytest.skip("gdown is installed: the download would go to the network")
    datamodule = TorchvisionImages(name="celeba", root=str(tmp_path / "data"), download=True, num_workers=0)
    with pytest.raises(ValueError, match=r"data.download=True is not valid for celeba without the gdown package: "
                                         r"expected `pip install gdown`"):
        datamodule.prepare_data()


def write_mnist(root: Path, train: int, test: int) -> None:
    """A tiny MNIST in torchvision's raw idx layout (it reads these files without checksums)."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    generator = torch.Generator().manual_seed(0)
    for prefix, count in (("train", train), ("t10k", test)):
        pixels = torch.randint(0, 256, (count, 28, 28), generator=generator, dtype=torch.uint8)
        header = (2051).to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in (count, 28, 28))
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(header + pixels.numpy().tobytes())
        labels = (2049).to_bytes(4, "big") + count.to_bytes(4, "big") + bytes(count)
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(labels)


@pytest.mark.parametrize("fid_split, real_count", [(None, 12), ("test", 5)])
def test_the_fid_reference_split_is_chosen_apart_from_the_training_split(tmp_path, fid_split, real_count):
    write_mnist(tmp_path, train=12, test=5)
    datamodule = TorchvisionImages(name="mnist", root=str(tmp_path), num_workers=0, fid_split=fid_split)
    datamodule.prepare_data()
    assert len(datamodule.train_dataset()) == 12  # trains on the training images either way
    metric = datamodule.evaluation_metric()
    assert len(metric.real) == real_count and metric.cache_name.startswith(f"mnist-{fid_split or 'train'}-28px")


def broken_folder(root: Path) -> Path:
    """Good PNGs of every mode, plus a truncated PNG, a text file named .jpg and an empty .png."""
    write_pngs(root, 4, "RGB")
    write_pngs(root / "gray", 2, "L")
    write_pngs(root / "alpha", 2, "RGBA")
    good = (root / "RGB_0.png").read_bytes()
    (root / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "notes.jpg").write_text("this is not an image")
    (root / "empty.png").write_bytes(b"")
    return root


def test_unreadable_files_are_skipped_with_one_counted_warning(tmp_path):
    datamodule = ImageFolder(root=str(broken_folder(tmp_path / "images")), resolution=8, batch_size=4, num_workers=0)
    with pytest.warns(UserWarning, match=r"skipping 3 unreadable file\(s\) of 11 \(empty.png, notes.jpg, truncated.png\)"):
        files = datamodule.files()
    assert len(files) == 8
    batches = list(datamodule.train_dataloader())  # grayscale, RGBA and RGB mixed, all as 3 channels
    assert [b.shape for b in batches] == [(4, 3, 8, 8), (4, 3, 8, 8)]


def test_unreadable_files_fail_the_run_when_asked(tmp_path):
    datamodule = ImageFolder(root=str(broken_folder(tmp_path / "images")), resolution=8, num_workers=0,
                             bad_files="fail")
    with pytest.raises(ValueError, match=r"expected only readable images, but .*empty.png is not .*3 such file"):
        datamodule.files()


def test_an_image_folder_read_in_grey_and_in_colour_keeps_two_fid_caches(tmp_path):
    """The cached real features are the folder's images as the run reads them: channels and size apart."""
    write_pngs(tmp_path / "images", 4, "RGB")

    def cache_name(**read):
        return ImageFolder(root=str(tmp_path / "images"), num_workers=0, **read).evaluation_metric().cache_name

    names = {cache_name(channels=1, resolution=16), cache_name(channels=3, resolution=16),
             cache_name(channels=3, resolution=32)}
    assert len(names) == 3
    assert cache_name(channels=3, resolution=16) == cache_name(channels=3, resolution=16)


def test_the_unreadable_file_list_is_reused_however_the_folder_is_named(tmp_path, monkeypatch):
    """Scanned once through a relative path, then read through the absolute one (another working directory):
    the cached list still names the same files."""
    import lit_gan.data.vision as vision

    broken_folder(tmp_path / "images")
    decoded = []
    decode = vision.unreadable
    monkeypatch.setattr(vision, "unreadable", lambda path: decoded.append(path) or decode(path))  # counts, decodes
    monkeypatch.chdir(tmp_path)
    with pytest.warns(UserWarning, match="skipping 3 unreadable"):
        relative = ImageFolder(root="images", resolution=8, num_workers=0).files()
    assert len(decoded) == 11  # every file, once
    with pytest.warns(UserWarning, match="skipping 3 unreadable"):
        absolute = ImageFolder(root=str(tmp_path / "images"), resolution=8, num_workers=0).files()
    assert len(decoded) == 11  # from the cache: nothing decoded again
    assert [p.resolve() for p in relative] == [p.resolve() for p in absolute] and len(absolute) == 8


def test_16_bit_images_are_scaled_not_clipped_and_the_transform_pickles(tmp_path):
    import pickle

    import numpy as np

    # A 16-bit ramp, 0 .. 65535: PIL's convert("L") alone would clip nearly all of it to white.
    ramp = np.linspace(0, 65535, 16 * 16).round().astype(np.uint16).reshape(16, 16)
    tmp_path.mkdir(exist_ok=True)
    Image.fromarray(ramp).save(tmp_path / "ramp16.png")
    write_pngs(tmp_path, 3, "L", size=(16, 16))
    for channels in (1, 3):
        datamodule = ImageFolder(root=str(tmp_path), resolution=16, channels=channels, batch_size=1, num_workers=0)
        dataset = datamodule.train_dataset()
        image = dataset[[f.name for f in dataset.files].index("ramp16.png")]
        expected = torch.from_numpy(ramp / 65535 * 2 - 1).float()
        assert image.shape == (channels, 16, 16)
        torch.testing.assert_close(image[0], expected, atol=1 / 127.5 + 1e-6, rtol=0)  # 8-bit rounding
        assert pickle.loads(pickle.dumps(dataset)).transform is not None  # spawn/forkserver workers get a copy


def test_32_bit_and_float_images_are_scaled_by_their_depth_and_unconvertible_ones_are_skipped(tmp_path):
    import numpy as np

    ramp = np.linspace(0, 255, 16 * 16).reshape(16, 16)
    Image.fromarray(ramp.astype(np.int32), mode="I").save(tmp_path / "int32.tif")  # 8-bit values in 32 bits
    Image.fromarray(ramp.astype(np.float32), mode="F").save(tmp_path / "float.tif")  # 0..255 as floats
    Image.new("LAB", (16, 16)).save(tmp_path / "lab.tif")  # decodes, but converts to neither L nor RGB
    datamodule = ImageFolder(root=str(tmp_path), resolution=16, channels=1, batch_size=1, num_workers=0)
    with pytest.warns(UserWarning, match=r"skipping 1 unreadable file\(s\) of 3 \(lab.tif\)"):
        dataset = datamodule.train_dataset()
    expected = torch.from_numpy(ramp / 255 * 2 - 1).float()
    for name in ("int32.tif", "float.tif"):  # were read as 16-bit: nearly black
        image = dataset[[f.name for f in dataset.files].index(name)]
        torch.testing.assert_close(image[0], expected, atol=1 / 127.5 + 1e-6, rtol=0)


def test_netpbm_images_are_read_and_other_files_are_counted_in_one_warning(tmp_path):
    """ORL and Yale faces are .pgm: they were skipped as not images. Files of other suffixes are named by
    suffix in one warning; hidden ones (.DS_Store, a .git folder) are not counted."""
    ramp = torch.arange(0, 256, 16, dtype=torch.uint8).repeat(16, 1).numpy()
    Image.fromarray(ramp, mode="L").save(tmp_path / "face.pgm")
    Image.fromarray(ramp).convert("RGB").save(tmp_path / "colour.ppm")
    Image.fromarray(ramp).convert("1").save(tmp_path / "bits.pbm")
    for name in ("readme.txt", "labels.txt", "scan.xyz", "LICENSE", ".DS_Store", ".git/config"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("not an image")
    datamodule = ImageFolder(root=str(tmp_path), resolution=16, channels=1, batch_size=3, num_workers=0)
    with pytest.warns(UserWarning, match=r"skipping 4 file\(s\) whose suffix is not an image's "
                                         r"\(\.txt x2, no suffix x1, \.xyz x1\)") as warned:
        files = datamodule.files()
    assert len(warned) == 1 and sorted(f.name for f in files) == ["bits.pbm", "colour.ppm", "face.pgm"]
    (batch,) = datamodule.train_dataloader()
    assert batch.shape == (3, 1, 16, 16)
    expected = torch.from_numpy(ramp / 255 * 2 - 1).float()
    for name in ("colour.ppm", "face.pgm"):
        torch.testing.assert_close(batch[[f.name for f in files].index(name)][0], expected, atol=1e-6, rtol=0)


def test_a_torn_scan_cache_is_scanned_again_and_rewritten(tmp_path):
    """A cache cut short (a crash, or two writers before atomic names of their own) failed every later run."""
    from lit_gan.metrics.digits import cache_directory

    root = broken_folder(tmp_path / "images")
    before = set(cache_directory().glob("folder-scan-*.json"))
    with pytest.warns(UserWarning, match="skipping 3 unreadable"):
        ImageFolder(root=str(root), resolution=8, num_workers=0).files()
    (cache,) = set(cache_directory().glob("folder-scan-*.json")) - before
    cache.write_text(cache.read_text()[:20])
    with pytest.warns(UserWarning, match="skipping 3 unreadable"):
        assert len(ImageFolder(root=str(root), resolution=8, num_workers=0).files()) == 8
    assert len(json.loads(cache.read_text())) == 3


@pytest.mark.parametrize("make, message", [
    (lambda root: ImageFolder(root=root, channels=2), "data.channels=2 is not valid: expected 1 (grayscale) or 3"),
    (lambda root: ImageFolder(root=root, channels=True), "data.channels=True is not valid"),
    (lambda root: TorchvisionImages(root=root, split="training"),
     "data.split='training' is not valid: expected 'train' or 'test'"),
], ids=["channels-2", "channels-bool", "split-training"])
def test_python_arguments_the_command_line_refuses_are_refused_by_their_config_keys(make, message, tmp_path):
    """channels=2 failed only at the first batch; split="training" loaded the test set."""
    with pytest.raises(ValueError, match=re.escape(message)):
        make(str(tmp_path))


def test_a_photo_with_an_exif_orientation_is_read_upright(tmp_path):
    import numpy as np

    # Stored 32 wide x 16 high, dark to bright from left to right, tagged "rotate 90 degrees clockwise to
    # show" (orientation 6, as a phone's portrait photo): upright it is 16 x 32, dark to bright top to bottom.
    ramp = np.tile(np.linspace(0, 255, 32).round().astype(np.uint8), (16, 1))
    exif = Image.Exif()
    exif[0x0112] = 6
    tmp_path.mkdir(exist_ok=True)
    Image.fromarray(ramp, mode="L").save(tmp_path / "portrait.png", exif=exif)
    image = ImageFolder(root=str(tmp_path), resolution=16, channels=1, batch_size=1).train_dataset()[0][0]
    assert image.shape == (16, 16)
    assert (image[:, 1:] == image[:, :1]).all() and (image[1:, 0] > image[:-1, 0]).all()  # varies down, not across


def test_an_image_whose_exif_block_is_malformed_is_skipped_by_the_scan(tmp_path):
    # Pixels fine, EXIF not: the scan passed it and the first batch holding it crashed the run.
    write_pngs(tmp_path, 3, "L", size=(8, 8))
    Image.new("L", (8, 8)).save(tmp_path / "bad_exif.png", exif=b"garbage")
    datamodule = ImageFolder(root=str(tmp_path), resolution=8, channels=1, batch_size=4, num_workers=0)
    with pytest.warns(UserWarning, match=r"skipping 1 unreadable file\(s\) of 4 \(bad_exif.png\)"):
        files = datamodule.files()
    assert sorted(f.name for f in files) == ["L_0.png", "L_1.png", "L_2.png"]
    assert [tuple(image.shape) for image in datamodule.train_dataset()] == [(1, 8, 8)] * 3


def test_a_dark_16_bit_pgm_is_scaled_by_its_declared_depth(tmp_path):
    import numpy as np

    # maxval 65535 with every value <= 255: nearly black, but it read as a bright 8-bit image (the depth was
    # guessed from the values, as for a file that declares none).
    values = (np.arange(64).reshape(8, 8) * 4).astype(">u2")
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "dark.pgm").write_bytes(b"P5\n8 8\n65535\n" + values.tobytes())
    image = ImageFolder(root=str(tmp_path), resolution=8, channels=1, batch_size=1).train_dataset()[0]
    assert image.max() < -0.99  # 252 / 65535 of the way from black: -1 after 8-bit rounding
