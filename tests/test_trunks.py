"""Ecosystem trunks (trunk=torchvision, trunk=timm) and the pretrained_image adapter, offline: block maps,
weights files loaded bit for bit, one-line errors, and every strategy on a torchvision trunk."""
from __future__ import annotations

import hashlib
import urllib.error
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import QUICK, RunFailed, load_results, results_files, run_in_process, run_train
from xfer.data.spec import DataSpec
from xfer.errors import CheckpointError, ConfigError, InputError
from xfer.models import weights as W
from xfer.models.adapters import PretrainedImageAdapter, TextFoldAdapter
from xfer.models.ecosystem import TORCHVISION_ARCHS, TorchvisionTrunk

NAMED = ["resnet18", "resnet34", "resnet50", "convnext_tiny", "efficientnet_b0", "mobilenet_v3_small", "vit_b_16"]
# 32x32 images, one thread: the runs below only exercise the machinery
SMALL = ["source.image_size=[32,32]", "trainer.enable_progress_bar=false", "threads=1"]
TV = ["trunk=torchvision", "trunk.arch=resnet18", "adapter@source_adapter=pretrained_image"]
IMG = ["experiment=img2img", *TV, "adapter@target_adapter=pretrained_image", "target.image_size=[32,32]"]
TXT = ["experiment=img2txt", *TV]


def _kw(arch: str) -> dict:
    return {"image_size": 32} if arch.startswith("vit") else {}


def _head(arch: str) -> list[str]:
    family = TORCHVISION_ARCHS[arch]
    return {"resnet": ["fc"], "convnext": ["classifier.2"], "features": ["classifier"], "vit": ["heads"]}[family]


def _one_line(err: BaseException) -> str:
    text = str(err)
    assert "\n" not in text, text
    return text


# -- block maps ------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", list(TORCHVISION_ARCHS))
def test_the_block_map_covers_every_parameter_exactly_once(arch: str):
    """Every parameter and buffer of the torchvision model, less its classifier, lies in exactly one block;
    built with random weights (on the meta device: the same code, without the cost; two small archs on the
    CPU, and run)."""
    from torchvision.models import get_model

    device = "cpu" if arch in ("resnet18", "mobilenet_v3_small") else "meta"
    with torch.device(device):
        trunk = TorchvisionTrunk(arch, **_kw(arch))
        model = get_model(arch, **_kw(arch))
    in_blocks = [p for b in trunk.blocks for _, p in b.named_parameters(remove_duplicate=False)]
    assert len({id(p) for p in in_blocks}) == len(in_blocks), "a parameter lies in two blocks"
    assert {id(p) for p in in_blocks} == {id(p) for p in trunk.parameters()}
    head = _head(arch)
    wanted = [k for k in model.state_dict() if not any(k == h or k.startswith(h + ".") for h in head)]
    # trunk keys -> model keys is one to one and onto the model's non-classifier state
    assert sorted(trunk.model_keys.values()) == sorted(wanted)
    assert len(set(trunk.model_keys.values())) == len(trunk.model_keys) == len(trunk.state_dict())
    n_model = sum(p.numel() for n, p in model.named_parameters() if not any(n.startswith(h + ".") for h in head))
    assert sum(p.numel() for p in in_blocks) == n_model
    assert trunk.in_channels == 3 and trunk.out_features > 0 and len(trunk.blocks) >= 5
    if device == "cpu":
        with torch.no_grad():
            out = trunk.eval()(torch.randn(2, 3, 32, 32))
        assert out.shape == (2, trunk.out_features)


def test_the_family_block_maps_are_the_documented_ones():
    with torch.device("meta"):
        resnet = TorchvisionTrunk("resnet18")
        vit = TorchvisionTrunk("vit_b_16", image_size=32)
        convnext = TorchvisionTrunk("convnext_tiny")
        mobile = TorchvisionTrunk("mobilenet_v3_small")
    assert list(resnet.blocks[0]._modules) == ["conv1", "bn1", "relu", "maxpool"]
    assert [resnet.model_keys[f"blocks.{i}.0.conv1.weight"] for i in range(1, 5)] == \
        [f"layer{i}.0.conv1.weight" for i in range(1, 5)]
    assert {vit.model_keys[k] for k in vit.state_dict() if k.startswith("blocks.0.")} == \
        {"conv_proj.weight", "conv_proj.bias", "class_token", "encoder.pos_embedding"}
    assert len(vit.blocks) == 13 and vit.model_keys["blocks.12.1.weight"] == "encoder.ln.weight"
    assert len(convnext.blocks) == 5 and convnext.model_keys["blocks.4.norm.weight"] == "classifier.0.weight"
    assert len(mobile.blocks) == 13 and mobile.out_features == 576


# -- weights ---------------------------------------------------------------------------------------
def _random_state(arch: str = "resnet18", seed: int = 123) -> dict[str, torch.Tensor]:
    from torchvision.models import get_model

    torch.manual_seed(seed)
    return get_model(arch).state_dict()


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_a_weights_file_loads_bit_for_bit(tmp_path: Path, suffix: str):
    state = _random_state()
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    torch.manual_seed(0)  # another random init: every value must come from the file
    trunk = TorchvisionTrunk("resnet18", weights=str(path))
    own = trunk.state_dict()
    assert len(own) == len(state) - 2  # all but fc.weight, fc.bias
    for key, value in own.items():
        assert torch.equal(value, state[trunk.model_keys[key]]), key
    assert trunk.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    record = trunk.describe()
    assert record["arch"] == "resnet18" and record["sha256"] == trunk.weights_sha256
    assert record["weights_file"] == str(path.resolve())
    # random weights and files: ImageNet statistics, no resize
    assert trunk.preprocessing == {"mean": W.IMAGENET_MEAN, "std": W.IMAGENET_STD, "size": None, "channels": 3}


def test_a_weights_file_without_its_classifier_or_with_another_one_loads(tmp_path: Path):
    state = _random_state()
    headless = {k: v for k, v in state.items() if not k.startswith("fc.")}
    torch.save(headless, tmp_path / "a.pth")
    other = {**state, "fc.weight": torch.zeros(10, 512), "fc.bias": torch.zeros(10)}
    torch.save({"state_dict": other}, tmp_path / "b.pt")  # wrapped, 10 classes
    for name in ("a.pth", "b.pt"):
        trunk = TorchvisionTrunk("resnet18", weights=str(tmp_path / name))
        assert torch.equal(trunk.blocks[0].conv1.weight, state["conv1.weight"])


def test_a_weights_file_for_another_architecture_names_the_first_mismatching_key(tmp_path: Path):
    torch.save(_random_state("mobilenet_v3_small"), tmp_path / "mobilenet.pth")
    with pytest.raises(CheckpointError) as err:
        TorchvisionTrunk("resnet18", weights=str(tmp_path / "mobilenet.pth"))
    assert _one_line(err.value) == (f"trunk.weights={tmp_path / 'mobilenet.pth'} does not fit torchvision resnet18: "
                                    f"conv1.weight is in torchvision resnet18 but not in the weights file")
    # same keys, another shape: the shape is named
    state = _random_state()
    state["layer2.0.conv1.weight"] = torch.zeros(128, 64, 1, 1)
    torch.save(state, tmp_path / "shape.pth")
    with pytest.raises(CheckpointError, match=r"layer2\.0\.conv1\.weight is \[128, 64, 1, 1\] in the weights file "
                                              r"but \[128, 64, 3, 3\] in torchvision resnet18"):
        TorchvisionTrunk("resnet18", weights=str(tmp_path / "shape.pth"))


def test_a_weights_file_that_is_missing_or_unsafe_is_one_line(tmp_path: Path):
    with pytest.raises(CheckpointError, match="no such file"):
        TorchvisionTrunk("resnet18", weights=str(tmp_path / "nope.pth"))

    class Evil:
        def __reduce__(self):
            return (print, ("ran",))

    torch.save({"conv1.weight": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError) as err:
        TorchvisionTrunk("resnet18", weights=str(tmp_path / "evil.pth"))
    assert "not a safe weights file" in _one_line(err.value)


def test_a_wrong_arch_lists_close_matches_and_the_supported_ones():
    with pytest.raises(ConfigError) as err:
        TorchvisionTrunk("resnet81")
    text = _one_line(err.value)
    assert text.startswith("trunk.arch=resnet81 is not a supported torchvision trunk (did you mean resnet18")
    assert "allowed: " in text and all(a in text for a in NAMED)


def test_an_unknown_weights_name_lists_the_allowed_ones_for_that_arch():
    with pytest.raises(ConfigError) as err:
        TorchvisionTrunk("resnet50", weights="IMAGENET1K_V3")
    assert _one_line(err.value) == ("trunk.weights=IMAGENET1K_V3 is not a weights name of resnet50 (did you mean "
                                    "IMAGENET1K_V2, IMAGENET1K_V1?); allowed: DEFAULT, IMAGENET1K_V1, IMAGENET1K_V2, "
                                    "a file (trunk.weights=/path/to/file.pth) or null")
    assert isinstance(err.value, InputError) and err.value.exit_code == 2


@pytest.fixture
def hub(tmp_path: Path, monkeypatch) -> Path:
    """An empty torch hub cache; any download attempt fails the test unless a test patches it."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def no_download(url, dst):
        raise AssertionError(f"tried to download {url}")

    monkeypatch.setattr(W, "_download", no_download)
    return tmp_path / "hub" / "checkpoints"


def test_a_weights_name_missing_from_the_hub_cache_fails_at_once_offline(hub: Path, monkeypatch):
    with pytest.raises(ConfigError) as err:
        TorchvisionTrunk("resnet18", weights="IMAGENET1K_V1", download=False)
    assert _one_line(err.value) == (f"trunk.weights=IMAGENET1K_V1: resnet18-f37072fd.pth (ResNet18_Weights."
                                    f"IMAGENET1K_V1) is not in the hub cache {hub} and trunk.download=false; put the "
                                    f"file there, or pass a file instead: trunk.weights=/path/to/file.pth")
    tried = []

    def offline(url, dst):
        tried.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(W, "_download", offline)
    with pytest.raises(ConfigError) as err:
        TorchvisionTrunk("resnet18", weights="DEFAULT")
    text = _one_line(err.value)
    assert tried == ["https://download.pytorch.org/models/resnet18-f37072fd.pth"]
    assert f"is not in the hub cache {hub} and could not be downloaded (URLError: [Errno -3]" in text
    assert text.endswith("pass a file instead: trunk.weights=/path/to/file.pth")


def test_a_weights_name_in_the_hub_cache_loads_with_its_preprocessing(hub: Path):
    hub.mkdir(parents=True)
    state = _random_state()  # stands in for the real file: only its name is looked up
    torch.save(state, hub / "resnet18-f37072fd.pth")
    trunk = TorchvisionTrunk("resnet18", weights="ResNet18_Weights.IMAGENET1K_V1", download=False)
    assert torch.equal(trunk.blocks[4][1].conv2.weight, state["layer4.1.conv2.weight"])
    assert trunk.weights.name == "ResNet18_Weights.IMAGENET1K_V1"
    assert trunk.weights_sha256 == hashlib.sha256((hub / "resnet18-f37072fd.pth").read_bytes()).hexdigest()
    assert trunk.preprocessing == {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225), "size": (224, 224),
                                   "channels": 3}
    assert TorchvisionTrunk("resnet18", weights="IMAGENET1K_V1", input_size=[64, 64],
                            download=False).preprocessing["size"] == (64, 64)


def test_the_cache_key_holds_the_weights_sha256():
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from xfer.argv import CONF_DIR
    from xfer.source_stage import source_key

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = compose("train", overrides=["trunk=torchvision", "trunk.weights=/w/r18.pth"])
    assert len({source_key(cfg, "a" * 64), source_key(cfg, "b" * 64), source_key(cfg)}) == 3
    assert source_key(cfg, None) == source_key(cfg)  # trunks without a weights file: keys as before


# -- the pretrained_image adapter --------------------------------------------------------------------
def _image_spec(channels: int = 1) -> DataSpec:
    return DataSpec(name="digits", modality="image", num_classes=2, channels=channels, image_size=(28, 28),
                    mean=(0.13,) * channels, std=(0.3,) * channels)


def test_the_pretrained_image_adapter_converts_repeats_resizes_and_normalises():
    pre = {"mean": (0.5, 0.4, 0.3), "std": (0.2, 0.25, 0.5), "size": (32, 32), "channels": 3}
    adapter = PretrainedImageAdapter(_image_spec(1), 3, pre)
    assert sum(p.numel() for p in adapter.parameters()) == 6  # the identity affine
    assert not list(PretrainedImageAdapter(_image_spec(1), 3, pre, affine=False).parameters())
    x = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)
    out = adapter(x)
    assert out.shape == (2, 3, 32, 32) and out.dtype == torch.float32
    ref = nn.functional.interpolate(x.float().repeat(1, 3, 1, 1) / 255, size=(32, 32), mode="bilinear",
                                    align_corners=False)
    ref = (ref - torch.tensor(pre["mean"]).view(1, 3, 1, 1)) / torch.tensor(pre["std"]).view(1, 3, 1, 1)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    same = PretrainedImageAdapter(_image_spec(3), 3, {**pre, "size": None})(x.repeat(1, 3, 1, 1))
    assert same.shape == (2, 3, 28, 28)  # no size: no resize
    with pytest.raises(ValueError, match="has 2 channels, the trunk takes 3"):
        PretrainedImageAdapter(_image_spec(2), 3, pre)
    with pytest.raises(ValueError, match="trunk=torchvision or trunk=timm"):
        PretrainedImageAdapter(_image_spec(1), 32, None)


def test_text_fold_feeds_a_torchvision_resnet18():
    spec = DataSpec(name="text", modality="text", num_classes=2, vocab_size=50, seq_len=48, pad_id=0)
    trunk = TorchvisionTrunk("resnet18")
    adapter = TextFoldAdapter(spec, out_channels=trunk.in_channels)
    out = trunk(adapter(torch.randint(0, 50, (4, 48))))
    assert out.shape == (4, 512)
    out.sum().backward()
    assert adapter.embedding.weight.grad is not None


# -- runs ------------------------------------------------------------------------------------------
@pytest.mark.slow  # a subprocess (8 s); the errors themselves are tested in-process above; make test-full
def test_a_wrong_arch_from_the_command_line_is_one_line_exit_2(home: Path):
    proc = run_train([*TXT, "trunk.arch=resnet81", *QUICK], home, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "trunk.arch=resnet81 is not a supported torchvision trunk" in errors[0]
    assert not list((home / "logs").rglob("checkpoints/*/*.ckpt"))  # nothing trained


def test_an_image_target_runs_in_process_with_a_weights_file(home: Path, tmp_path: Path):
    torch.save(_random_state(), tmp_path / "r18.pth")
    out = run_in_process([*IMG, f"trunk.weights={tmp_path / 'r18.pth'}", "strategy=freeze_first_k",
                          "strategy.k=1", "debug=fast", *SMALL], home)
    assert out["status"] == "ok"
    assert out["trunk"]["arch"] == "resnet18"
    assert out["trunk"]["sha256"] == hashlib.sha256((tmp_path / "r18.pth").read_bytes()).hexdigest()
    assert load_results(results_files(home)[0])["trunk"] == out["trunk"]
    assert out["params"]["trunk_trainable"] < out["params"]["total"]  # the stem stayed frozen


def test_a_text_target_runs_in_process(home: Path):
    out = run_in_process([*TXT, "strategy=linear_probe", "debug=fast", *SMALL], home)
    assert out["status"] == "ok" and out["trunk"]["weights"] is None
    assert out["params"]["trunk_trainable"] == 0


@pytest.mark.slow  # ~15 fast_dev_runs in one process each; make test-full
@pytest.mark.parametrize("overrides", [IMG, TXT], ids=["image_target", "text_target"])
def test_every_strategy_runs_with_a_torchvision_trunk(home: Path, overrides: list[str]):
    from xfer.argv import config_groups

    strategies = config_groups()["strategy"]
    run_train(["-m", *overrides, "strategy=glob(*)", "trainer.fast_dev_run=true", *SMALL], home, timeout=1800)
    runs = [load_results(p) for p in results_files(home)]
    assert sorted(r["strategy"]["name"] for r in runs) == sorted(strategies)
    assert all(r["status"] == "ok" for r in runs), [r.get("error") for r in runs]


@pytest.mark.slow  # ~30 s: 86M parameters on one thread
def test_a_small_vit_runs(home: Path):
    out = run_in_process([*IMG, "trunk.arch=vit_b_16", "trunk.image_size=32", "strategy=layerwise_lr",
                          "debug=fast", *SMALL], home)
    assert out["status"] == "ok" and out["trunk"]["arch"] == "vit_b_16"


@pytest.mark.slow  # 5 s; make test-full
def test_convnext_tiny_runs(home: Path):
    out = run_in_process([*IMG, "trunk.arch=convnext_tiny", "strategy=gradual_unfreeze", "debug=fast", *SMALL],
                         home)
    assert out["status"] == "ok" and out["trunk"]["arch"] == "convnext_tiny"


@pytest.mark.slow  # ~1 min: two gloo processes; make test-full
def test_ddp_cpu_with_a_torchvision_trunk_and_a_frozen_stem(home: Path):
    quick = [q for q in QUICK if not q.startswith("threads")]
    proc = run_train([*TXT, "source.image_size=[32,32]", "strategy=freeze_first_k", "strategy.k=1",
                      "trainer=ddp_cpu", "trainer.max_epochs=2", *quick], home, timeout=900)
    [run] = [load_results(p) for p in results_files(home)]
    assert run["status"] == "ok", (run.get("error"), proc.stderr[-4000:])
    assert run["trunk"]["arch"] == "resnet18"
    assert 0 < run["params"]["trunk_trainable"] < run["params"]["total"]
    assert "DDP replicas hold different weights" not in proc.stdout + proc.stderr
    assert len(list((home / "cache" / "trunks").glob("*/source_model.safetensors"))) == 1


# -- timm (optional extra) -------------------------------------------------------------------------
def _timm():
    return pytest.importorskip("timm")


@pytest.mark.parametrize("arch,args", [("resnet18", None), ("vit_tiny_patch16_224", {"img_size": 32}),
                                       ("mobilenetv3_small_100", None)])
def test_timm_block_map_covers_every_parameter_exactly_once(arch: str, args):
    t = _timm()
    from xfer.models.ecosystem import TimmTrunk

    trunk = TimmTrunk(arch, model_args=args)
    model = t.create_model(arch, num_classes=0, **(args or {}))
    in_blocks = [p for b in trunk.blocks for _, p in b.named_parameters(remove_duplicate=False)]
    assert len({id(p) for p in in_blocks}) == len(in_blocks)
    assert sum(p.numel() for p in in_blocks) == sum(p.numel() for p in model.parameters())
    assert len(trunk.state_dict()) == len(model.state_dict())
    assert len(trunk.blocks) >= 3
    with torch.no_grad():
        assert trunk.eval()(torch.randn(2, 3, 32, 32)).shape == (2, trunk.out_features)


def test_timm_loads_a_file_bit_for_bit_and_refuses_another_arch(tmp_path: Path):
    t = _timm()
    from xfer.models.ecosystem import TimmTrunk

    torch.manual_seed(5)
    state = t.create_model("resnet18").state_dict()
    torch.save(state, tmp_path / "r18.pth")
    torch.manual_seed(0)
    trunk = TimmTrunk("resnet18", weights=str(tmp_path / "r18.pth"))
    loaded = trunk._model.state_dict()
    assert all(torch.equal(loaded[k], state[k]) for k in loaded)
    assert trunk.weights_sha256 == hashlib.sha256((tmp_path / "r18.pth").read_bytes()).hexdigest()
    torch.save(t.create_model("resnet34").state_dict(), tmp_path / "r34.pth")
    with pytest.raises(CheckpointError) as err:
        TimmTrunk("resnet18", weights=str(tmp_path / "r34.pth"))
    assert _one_line(err.value) == (f"trunk.weights={tmp_path / 'r34.pth'} does not fit timm resnet18: "
                                    f"layer1.2.conv1.weight is in the weights file but not in timm resnet18")
    with pytest.raises(ConfigError, match=r"trunk.arch=resnet81 is not a supported timm trunk"):
        TimmTrunk("resnet81")
    with pytest.raises(ConfigError, match=r"trunk.weights=nope is not a pretrained tag of timm resnet18; allowed: pretrained, a1_in1k"):
        TimmTrunk("resnet18", weights="nope")


def test_a_timm_trunk_runs(home: Path):
    _timm()
    out = run_in_process(["experiment=img2img", "trunk=timm", "trunk.arch=resnet18",
                          "adapter@source_adapter=pretrained_image", "adapter@target_adapter=pretrained_image",
                          "target.image_size=[32,32]", "strategy=freeze_first_k", "strategy.k=1", "debug=fast",
                          *SMALL], home)
    assert out["status"] == "ok" and out["trunk"]["library"] == "timm"


@pytest.mark.parametrize("strategy", ["scratch", "frozen_random"])
def test_the_random_controls_start_from_random_weights_with_the_pretrained_preprocessing(tmp_path: Path, strategy):
    """scratch and frozen_random are controls: with trunk.weights set they must not start from those weights."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from xfer.argv import CONF_DIR
    from xfer.target_stage import seeded_trunk

    state = _random_state()
    torch.save(state, tmp_path / "r18.pth")

    def trunk(*overrides: str):
        GlobalHydra.instance().clear()
        with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
            cfg = compose("train", overrides=[*TV, f"trunk.weights={tmp_path / 'r18.pth'}", "trunk.input_size=[40,40]",
                                              *overrides])
        return cfg, *seeded_trunk(cfg)

    cfg, control, rng = trunk(f"strategy={strategy}")
    assert cfg.random_trunk is True and cfg.source_stage.enabled is False
    _, pretrained, _ = trunk("strategy=finetune")
    _, random, random_rng = trunk("trunk.weights=null")  # the library's random init, under the same seed
    assert torch.equal(rng, random_rng)  # and what the run draws next is the same too
    for (k, a), b, r in zip(control.state_dict().items(), pretrained.state_dict().values(), random.state_dict().values()):
        assert torch.equal(a, r), k
    assert not all(torch.equal(a, b) for a, b in zip(control.state_dict().values(), pretrained.state_dict().values()))
    assert control.preprocessing == pretrained.preprocessing and control.preprocessing["size"] == (40, 40)
    info = control.describe()
    assert info["weights"] is None and info["sha256"] is None
    assert info["random_init"] is True and info["preprocessing_from"] == str(tmp_path / "r18.pth")
    assert "random_init" not in pretrained.describe() and pretrained.describe()["sha256"]


@pytest.mark.parametrize("experiment", ["imagenet2txt", "imagenet2img"])
def test_the_imagenet_experiments_run_with_a_weights_file_and_fail_at_once_without_one(home: Path, tmp_path: Path,
                                                                                       hub: Path, experiment: str):
    """For online users, their weights download; here a file stands in for them (what an offline user does)."""
    from test_images import write_folder

    extra = [f"target.reader.path={write_folder(tmp_path / 'photos')}", "target.image_size=[32,32]",
             "target.num_workers=2"] if experiment == "imagenet2img" else []
    with pytest.raises(RunFailed, match="exit 2"):
        run_in_process([f"experiment={experiment}", "trunk.download=false", *extra], home)
    torch.save(_random_state(), tmp_path / "r18.pth")
    out = run_in_process([f"experiment={experiment}", f"trunk.weights={tmp_path / 'r18.pth'}", "trunk.input_size=[32,32]",
                          "debug=fast", *extra, *SMALL[1:]], home)
    assert out["status"] == "ok" and out["source"] is None and out["trunk"]["arch"] == "resnet18"
    assert out["trunk"]["sha256"] == hashlib.sha256((tmp_path / "r18.pth").read_bytes()).hexdigest()
