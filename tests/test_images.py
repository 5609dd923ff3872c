"""Image data at real sizes: lazy decoding (image_folder's in_memory), train-time augmentation (the augment
config group), and both end to end."""
from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from conftest import run_in_process
from xfer.data import ImageDataModule
from xfer.data.augment import Augment, Augmented, PadCrop
from xfer.data.image_files import ImageFiles
from xfer.data.readers_image import read_image_folder
from xfer.errors import DataError
from xfer.failure import one_line

CONF = Path(__file__).resolve().parents[1] / "conf"


def write_folder(root: Path, per_class: int = 12, classes=("ant", "bee", "cow"), size=(20, 14)) -> Path:
    """Class folders of random RGB images in mixed sizes and formats."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            arr = rng.integers(0, 256, size=(size[0] + i % 3, size[1] + i % 2, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / c / f"{i}.{'png' if i % 2 else 'jpg'}")
    return root


def augment(name: str) -> Augment:
    return instantiate(OmegaConf.load(CONF / "augment" / f"{name}.yaml"), _convert_="all")


def module(root: Path, in_memory, **kw) -> ImageDataModule:
    dm = ImageDataModule("image_folder", reader=partial(read_image_folder, str(root), in_memory=in_memory),
                         image_size=[16, 16], batch_size=8, **kw)
    dm.setup()
    return dm


# -- lazy decoding ----------------------------------------------------------------------------------
def test_a_lazy_read_serves_the_same_batches_as_an_in_memory_one(tmp_path):
    root = write_folder(tmp_path)
    eager, lazy = module(root, True), module(root, False)
    assert not eager.lazy and lazy.lazy and isinstance(lazy.datasets["train"], ImageFiles)
    assert eager.spec == lazy.spec  # shape, class names, and the mean and std (all 28 train images sampled)
    for s in ("train", "val", "test"):
        assert np.array_equal(eager.indices[s], lazy.indices[s])  # the same split, the same rows
        for a, b in zip(eager._loader(s, train=s == "train"), lazy._loader(s, train=s == "train")):
            assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
            assert b[0].dtype == torch.uint8 and b[0].shape[1:] == (3, 16, 16)
    chunks = list(zip(eager.inputs("train", 5, limit=12), lazy.inputs("train", 5, limit=12)))
    assert [len(a) for a, _ in chunks] == [5, 5, 2] and all(torch.equal(a, b) for a, b in chunks)


def test_lazy_batches_decode_in_dataloader_workers(tmp_path):
    root = write_folder(tmp_path)
    eager, lazy = module(root, True), module(root, False, num_workers=2)
    got = torch.cat([x for x, _ in lazy.val_dataloader()])
    assert torch.equal(got, eager.datasets["val"].tensors[0])


def test_in_memory_auto_decides_by_the_decoded_size(tmp_path):
    root = write_folder(tmp_path)  # 36 files x 3 x 16 x 16 bytes = 27 KiB decoded
    small = read_image_folder(str(root), image_size=[16, 16], in_memory="auto", in_memory_limit_mb=1)
    big = read_image_folder(str(root), image_size=[16, 16], in_memory="auto", in_memory_limit_mb=0.02)
    assert isinstance(small.splits["train"][0], np.ndarray) and small.decode is None
    assert isinstance(big.splits["train"][0], list) and big.decode is not None
    # without image_size the first image's size stands in for the estimate; lazily it must be set
    assert read_image_folder(str(tmp_path), in_memory="auto", image_size=[16, 16]).decode is None
    with pytest.raises(DataError, match=r"needs a fixed size; set source\.image_size=\[H, W\]"):
        read_image_folder(str(root), in_memory=False)
    with pytest.raises(DataError, match=r"in_memory='yes'; allowed: auto, true or false"):
        read_image_folder(str(root), in_memory="yes")


def test_in_memory_auto_reads_lazily_what_the_memory_cannot_hold(tmp_path, monkeypatch):
    """Under in_memory_limit_mb but over what this machine has free: auto reads lazily (with a fixed size)
    rather than stopping; in_memory=true is refused in one line, naming the setting."""
    import xfer.machine as machine
    from xfer.errors import ConfigError

    root = write_folder(tmp_path)  # 27 KiB decoded, 54 KiB with the stacking copy
    monkeypatch.setattr(machine, "available_memory", lambda: (40 * 2**10, "MemAvailable"))
    auto = read_image_folder(str(root), image_size=[16, 16], in_memory="auto", in_memory_limit_mb=1)
    assert isinstance(auto.splits["train"][0], list) and auto.decode is not None
    with pytest.raises(ConfigError, match=r"^source\.image_size=\[16, 16\]: 36 images of 3 x 16 x 16 decoded"):
        read_image_folder(str(root), image_size=[16, 16], in_memory=True)


def test_a_file_that_cannot_be_decoded_lazily_stops_the_run_naming_it(tmp_path):
    root = write_folder(tmp_path)
    (root / "ant" / "zz_broken.png").write_bytes(b"\x89PNG cut short")
    eager = module(root, True)
    assert eager.dropped == {"corrupt_image": 1}  # the in-memory read skips and counts it
    lazy = ImageDataModule("image_folder", image_size=[16, 16], num_workers=1, split_seed=3,
                           reader=partial(read_image_folder, str(root), in_memory=False))
    with pytest.raises(DataError) as err:
        lazy.setup()
        for split in ("train", "val", "test"):
            for _ in lazy._loader(split, train=False):
                pass
    # raised in a worker, it still reads as one line naming the file
    assert one_line(err.value).startswith("data set 'image_folder': cannot decode ")
    assert "zz_broken.png" in one_line(err.value) and "in_memory=true" in one_line(err.value)


# -- augmentation -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["flip_crop", "randaugment", "trivialaugment"])
@pytest.mark.parametrize("channels", [1, 3])
def test_each_augment_changes_images_one_by_one_and_keeps_their_shape(name, channels):
    torch.manual_seed(0)
    one = torch.randint(0, 256, (channels, 24, 24), dtype=torch.uint8)
    batch = one.expand(16, -1, -1, -1).contiguous()
    out = augment(name)(batch)
    assert out.shape == batch.shape and out.dtype == torch.uint8
    assert not torch.equal(out, batch)  # it does something
    assert len({o.numpy().tobytes() for o in out}) > 1  # and not the same thing to every image


def test_none_is_no_augmentation_and_pad_crop_keeps_the_pixels():
    assert not augment("none") and augment("flip_crop")
    image = torch.arange(36, dtype=torch.uint8).view(1, 6, 6)
    assert torch.equal(PadCrop(0)(image), image)
    torch.manual_seed(1)
    shifted = [PadCrop(2)(image) for _ in range(20)]
    padded = torch.nn.functional.pad(image[None].float(), (2, 2, 2, 2), mode="reflect")[0].to(torch.uint8)
    windows = {padded[:, t:t + 6, l:l + 6].numpy().tobytes() for t in range(5) for l in range(5)}
    assert all(s.shape == image.shape and s.numpy().tobytes() in windows for s in shifted)  # a shifted window
    assert len({s.numpy().tobytes() for s in shifted}) > 5  # of random offsets
    with pytest.raises(ValueError, match="padding=-1"):
        PadCrop(-1)


def test_only_training_batches_are_augmented_and_an_epoch_reseed_repeats_them(tmp_path):
    root = write_folder(tmp_path)
    plain, aug = module(root, True), module(root, True, augment=augment("flip_crop"))
    assert isinstance(aug.served("train", True), Augmented) and not isinstance(aug.served("val", False), Augmented)
    for s in ("val", "test"):
        for a, b in zip(plain._loader(s, False), aug._loader(s, False)):
            assert torch.equal(a[0], b[0])

    def first_batch(dm):
        torch.manual_seed(7)
        return next(iter(dm.train_dataloader()))

    (xp, yp), (xa, ya) = first_batch(plain), first_batch(aug)
    assert torch.equal(yp, ya) and not torch.equal(xp, xa)  # the same examples, augmented
    assert torch.equal(first_batch(aug)[0], xa)  # the same seed, the same augmentation
    lazy = module(root, False, augment=augment("flip_crop"))
    assert torch.equal(first_batch(lazy)[0], xa)  # lazily read, augmented alike


def test_an_augment_that_changes_the_size_is_refused():
    from torchvision.transforms import v2

    with pytest.raises(ValueError, match=r"changed the image size from \(1, 8, 8\)"):
        Augment([v2.CenterCrop(4)])(torch.zeros(2, 1, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="not a transform"):
        Augment([3])


# -- end to end -------------------------------------------------------------------------------------
RUN = ["experiment=img2img", "target=image_folder", "target.classes=null", "target.samples_per_class=null",
       "target.image_size=[16,16]", "target.val_fraction=0.25",
       "target.test_fraction=0.25", "source_stage.enabled=false", "strategy=scratch", "trainer.max_epochs=2",
       "trainer.enable_progress_bar=false", "threads=1"]


def test_a_lazy_augmented_image_folder_target_trains_like_the_in_memory_one(tmp_path):
    root = write_folder(tmp_path / "images", per_class=16)
    args = [*RUN, f"target.reader.path={root}", "augment@target.augment=flip_crop"]
    eager = run_in_process([*args, "target.reader.in_memory=true"], tmp_path / "a")
    lazy = run_in_process([*args, "target.reader.in_memory=false"], tmp_path / "b")
    a, b = eager["target"], lazy["target"]
    # the same batches, the same augmentation: the same weights, so the same test loss to the last bit
    assert a["test"] == b["test"] and a["best_val"] == b["best_val"] and a["sizes"] == b["sizes"] == \
        {"train": 24, "val": 12, "test": 12}
    saved = json.loads((Path(lazy["run_dir"]) / "results.json").read_text())
    assert saved["target"]["test"] == b["test"]
    plain = run_in_process([*RUN, f"target.reader.path={root}", "target.reader.in_memory=false"], tmp_path / "c")
    assert plain["target"]["test"]["test/loss"] != b["test"]["test/loss"]  # the augmentation took part


def test_the_cache_key_holds_the_augmentation_not_how_the_images_are_read():
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    from xfer.argv import CONF_DIR
    from xfer.source_stage import source_key

    def key(*overrides: str, drop_augment: bool = False) -> str:
        GlobalHydra.instance().clear()
        with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
            cfg = compose("train", overrides=["source=image_folder", "source.reader.path=/x", *overrides])
        if drop_augment:  # a config from before the augment group
            with open_dict(cfg):
                del cfg.source.augment
        return source_key(cfg)

    assert key() == key(drop_augment=True)  # augment=none keeps the keys of trunks cached before it existed
    assert key("augment@source.augment=flip_crop") != key()
    assert key("source.reader.in_memory=false") == key("source.reader.in_memory_limit_mb=5") == key()


@pytest.mark.parametrize("override,message", [
    ("target.augment=flip", r"target\.augment=flip: must be an augment config; choose one with augment@target\.augment="),
    ("+target.augment.transforms.0.num_opz=3", r"target\.augment\.transforms\[0\]\.num_opz is not a known key "
                                               r"\(did you mean target\.augment\.transforms\[0\]\.num_ops\?\)"),
    ("target.reader.in_memory=sometimes", r"target\.reader\.in_memory=sometimes.*true or false.*auto"),
])
def test_a_bad_augment_or_in_memory_setting_is_one_line(override, message):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from xfer.argv import CONF_DIR
    from xfer.errors import ConfigError
    from xfer.schema import validate

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = compose("train", overrides=["experiment=img2img", "target=image_folder", "target.reader.path=/x",
                                          "augment@target.augment=randaugment", override])
    with pytest.raises(ConfigError, match=message):
        validate(cfg)


def test_a_class_index_the_data_set_lacks_is_named_on_its_side(tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from xfer import build
    from xfer.argv import CONF_DIR

    root = write_folder(tmp_path)
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = compose("train", overrides=["experiment=img2img", "target=image_folder", f"target.reader.path={root}"])
    with pytest.raises(DataError, match=r"^target\.classes has \[5, 6, 7, 8, 9\], but data set 'image_folder' has 3 "
                                        r"classes; allowed: label indices 0\.\.2$"):
        build.datamodule(cfg.target, 0)
