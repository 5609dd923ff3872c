"""The speed-ups are exact, and the benchmark's instruments measure what they claim (issue 7)."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import pytorch_lightning as pl
from omegaconf import OmegaConf
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from conftest import ROOT
from xfer.callbacks import EpochSeed
from xfer.data import TextDataModule
from xfer.data.module import EpochShuffle
from xfer.models.adapters import TextFoldAdapter
from xfer.models.fastconv import conv2d, reference_convs
from xfer.models.heads import LinearHead
from xfer.models.module import TransferModule
from xfer.models.trunks import CNNTrunk, ResNetTrunk
from xfer.perf import PeakRSS, plain_fit, train_step_flops, tree_rss

OPTIM = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "optim" / "adamw.yaml"))  # the target recipe


@pytest.fixture(scope="module")
def text_dm():
    dm = TextDataModule("rt_sentiment", fraction=0.05, batch_size=32, eval_batch_size=256, seed=0)
    dm.setup()
    return dm


# -- the shortcut for convolutions on tiny maps is the same convolution -----------------------------
@pytest.mark.parametrize("kernel,bias", [(3, False), (3, True), (1, False), (5, True)])
def test_1x1_map_conv_matches_conv2d_values_and_gradients(kernel, bias):
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 5, kernel, padding=kernel // 2, bias=bias).double()
    x = torch.randn(3, 6, 1, 1, dtype=torch.double, requires_grad=True)
    fast = conv2d(conv, x)
    fast_grads = torch.autograd.grad((fast * torch.arange(fast.numel()).view_as(fast)).sum(),
                                     [x, *conv.parameters()])
    with reference_convs():
        ref = conv2d(conv, x)
    ref_grads = torch.autograd.grad((ref * torch.arange(ref.numel()).view_as(ref)).sum(), [x, *conv.parameters()])
    torch.testing.assert_close(fast, ref)
    for a, b in zip(fast_grads, ref_grads):
        torch.testing.assert_close(a, b)


def test_small_map_conv_takes_the_matmul_path_only_where_it_applies(monkeypatch):
    calls = []
    monkeypatch.setattr(nn.Conv2d, "forward", lambda self, x: calls.append(tuple(x.shape[2:])) or x)
    conv = nn.Conv2d(4, 4, 3, padding=1)
    for hw in [(1, 1), (2, 2), (1, 3), (6, 8)]:
        conv2d(conv, torch.randn(2, 4, *hw))
    conv2d(nn.Conv2d(4, 4, 3, padding=1, stride=2), torch.randn(2, 4, 1, 1))
    conv2d(nn.Conv2d(4, 4, 3, padding=0), torch.randn(2, 4, 1, 1))
    with reference_convs():
        conv2d(conv, torch.randn(2, 4, 1, 1))
    # only the 1x1 map with same-size padding and stride 1 skips the conv kernel
    assert calls == [(2, 2), (1, 3), (6, 8), (1, 1), (1, 1), (1, 1)]


@pytest.mark.parametrize("trunk_cls", [CNNTrunk, ResNetTrunk])
def test_trunks_on_text_grids_match_the_reference_convolutions(trunk_cls):
    torch.manual_seed(0)
    trunk = trunk_cls(8, (8, 16, 16, 16)).double()
    x = torch.randn(4, 8, 6, 8, dtype=torch.double)  # 6x8 -> 3x4 -> 2x2 -> 1x1: the last block takes the shortcut
    fast = trunk(x)
    fast_grads = torch.autograd.grad(fast.square().sum(), list(trunk.parameters()))
    with reference_convs():
        ref = trunk(x)
        ref_grads = torch.autograd.grad(ref.square().sum(), list(trunk.parameters()))
    torch.testing.assert_close(fast, ref)
    for a, b in zip(fast_grads, ref_grads):
        torch.testing.assert_close(a, b)


def test_fold_adapter_equals_fold_then_1x1_conv_and_hands_over_channels_last(text_dm):
    torch.manual_seed(0)
    adapter = TextFoldAdapter(text_dm.spec, out_channels=16, embed_dim=12, width=8).eval()
    tokens = text_dm.datasets["train"].tensors[0][:5]
    out = adapter(tokens)
    emb = adapter.embedding(nn.functional.pad(tokens, (0, adapter.pad_tokens), value=adapter.pad_id))
    grid = emb.transpose(1, 2).reshape(5, 12, adapter.rows, adapter.width)
    torch.testing.assert_close(out, adapter.stem(grid), rtol=1e-5, atol=1e-6)
    assert out.is_contiguous(memory_format=torch.channels_last)


# -- the data path ------------------------------------------------------------------------------------
def test_batched_loader_gives_the_same_batches_as_per_sample_collation(text_dm):
    data = text_dm.datasets["train"]
    fast = text_dm.train_dataloader()
    slow = DataLoader(TensorDataset(*data.tensors), batch_size=text_dm.batch_size, sampler=EpochShuffle(len(data), 0))
    for epoch in (0, 3):
        fast.sampler.set_epoch(epoch)
        slow.sampler.set_epoch(epoch)
        pairs = list(zip(fast, slow, strict=True))
        assert len(pairs) == len(fast) > 1
        for (xa, ya), (xb, yb) in pairs:
            assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_text_is_tokenised_once_however_many_epochs(monkeypatch, tmp_path):
    from xfer.data import text

    calls = []
    real = text.encode_texts
    monkeypatch.setattr(text, "encode_texts", lambda tok, texts: calls.append(len(texts)) or real(tok, texts))
    dm = TextDataModule("rt_sentiment", fraction=0.02, batch_size=64, seed=0)
    module = _module(dm)
    trainer = pl.Trainer(accelerator="cpu", max_epochs=3, logger=False, enable_progress_bar=False,
                         enable_checkpointing=False, enable_model_summary=False, num_sanity_val_steps=0,
                         limit_val_batches=1, default_root_dir=str(tmp_path))
    trainer.fit(module, datamodule=dm)
    assert trainer.current_epoch == 3 and len(calls) == 3  # train, val and test, once each


# -- the benchmark's plain loop is the same training as Lightning's -----------------------------------
def _module(dm, seed=0):
    dm.setup()
    torch.manual_seed(seed)
    trunk = CNNTrunk(8, (8, 16, 16, 16))
    adapter = TextFoldAdapter(dm.spec, trunk.in_channels, embed_dim=16)
    head = LinearHead(trunk.out_features, dm.spec.num_classes, dropout=0.3)
    return TransferModule(adapter, trunk, head, dm.spec.num_classes, OPTIM)


def test_plain_loop_trains_exactly_what_lightning_trains(text_dm, tmp_path):
    epochs, limit = 2, 5
    lightning = _module(text_dm)
    trainer = pl.Trainer(accelerator="cpu", max_epochs=epochs, logger=False, enable_progress_bar=False,
                         enable_checkpointing=False, enable_model_summary=False, num_sanity_val_steps=0,
                         deterministic=True, gradient_clip_val=1.0, limit_train_batches=limit,
                         limit_val_batches=1, callbacks=[EpochSeed(0)], default_root_dir=str(tmp_path))
    trainer.fit(lightning, datamodule=text_dm)
    plain = _module(text_dm)
    timing = plain_fit(plain, text_dm, epochs, seed=0, gradient_clip_val=1.0, limit_batches=limit)
    assert timing.steps == trainer.global_step == epochs * limit
    assert timing.samples == epochs * limit * text_dm.batch_size
    for (name, a), b in zip(lightning.state_dict().items(), plain.state_dict().values()):
        assert torch.equal(a, b), f"{name} differs between the Lightning fit and the plain loop"


def test_plain_loop_in_bf16_trains_exactly_what_lightning_trains_in_bf16_mixed(text_dm, tmp_path):
    """The GPU bench's pairs hold Lightning's bf16-mixed against plain_fit(bf16=True) with the unfused AdamW
    Lightning then takes: the same work, here checked on the CPU, where autocast is bf16 too."""
    epochs, limit = 1, 4
    lightning = _module(text_dm)
    trainer = pl.Trainer(accelerator="cpu", precision="bf16-mixed", max_epochs=epochs, logger=False,
                         enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False,
                         num_sanity_val_steps=0, deterministic=True, gradient_clip_val=1.0,
                         limit_train_batches=limit, limit_val_batches=1, callbacks=[EpochSeed(0)],
                         default_root_dir=str(tmp_path))
    trainer.fit(lightning, datamodule=text_dm)
    plain = _module(text_dm)
    plain.optim["fused"] = False
    plain_fit(plain, text_dm, epochs, seed=0, gradient_clip_val=1.0, limit_batches=limit, device="cpu", bf16=True)
    reference = _module(text_dm)
    moved = False
    for (name, a), b, c in zip(lightning.state_dict().items(), plain.state_dict().values(),
                               reference.state_dict().values()):
        assert torch.equal(a, b), f"{name} differs between the bf16-mixed fit and the bf16 plain loop"
        moved |= not torch.equal(a, c)
    assert moved  # it trained


def test_make_optimizer_is_fused_unless_mixed_precision_or_switched_off(text_dm):
    module = _module(text_dm)
    assert module.make_optimizer(10)[0].defaults["fused"] is True
    module.optim["fused"] = False
    assert not module.make_optimizer(10)[0].defaults["fused"]
    module.optim["fused"] = "auto"
    trainer = pl.Trainer(accelerator="cpu", precision="bf16-mixed", logger=False, enable_progress_bar=False)
    module.trainer = trainer
    assert not module.make_optimizer(10)[0].defaults["fused"]


# -- instruments ----------------------------------------------------------------------------------------
def test_train_step_flops_counts_forward_and_backward_matmuls():
    model = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 3))
    x, y = torch.randn(16, 8), torch.randint(0, 3, (16,))
    # forward 2*B*(8*4 + 4*3); backward: weight grads of both layers, input grad of the second only
    expected = 2 * 16 * (8 * 4 + 4 * 3) + 2 * 16 * (8 * 4 + 4 * 3) + 2 * 16 * 4 * 3
    assert train_step_flops(model, (x, y)) == expected
    assert all(p.grad is None for p in model.parameters())


def test_peak_rss_sees_memory_in_grandchildren():
    code = ("import subprocess, sys; subprocess.run([sys.executable, '-c', "
            "'import time; b = bytearray(300 * 2**20); time.sleep(1.5)'])")
    proc = subprocess.Popen([sys.executable, "-c", code])
    with PeakRSS(proc.pid, interval=0.02) as mem:
        proc.wait()
    assert mem.peak_total >= 300 * 2**20 and mem.peak_single >= 300 * 2**20
    assert tree_rss(proc.pid) == (0, 0)  # gone: nothing left to count


def test_bench_refuses_an_unknown_section_in_one_line():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--only", "lightning,warp"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: --only 'lightning,warp': unknown section ['warp']; allowed: startup, metrics, lightning, backbones, data, images, diagnostics, e2e, sweep"]


def test_bench_refuses_an_unwritable_out_before_measuring(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("kept")
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--out", str(blocker / "bench.json")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: --out {blocker / 'bench.json'}: cannot write there")
    assert blocker.read_text() == "kept"


def test_bench_splits_a_lightning_plain_ratio_into_training_steps_and_the_rest(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    import bench

    runs = {"lightning": [{"wall_s": 12.0, "train_s": 9.0}, {"wall_s": 11.0, "train_s": 9.9},
                          {"wall_s": 13.0, "train_s": 10.0}],
            "plain": [{"wall_s": 10.0, "train_s": 9.0}, {"wall_s": 10.0, "train_s": 9.0},
                      {"wall_s": 10.0, "train_s": 8.0}]}
    apart = bench.where_apart(runs)
    assert apart["train_ratio"] == pytest.approx(1.1)  # of 1.0, 1.1 and 1.25
    assert apart["outside_train_s"] == pytest.approx({"lightning": 3.0, "plain": 1.0})
    [row] = bench.apart_row({"ratio": 1.2, **apart})
    assert "| 1.100; 3.0 s vs 1.0 s |" in row
    assert bench.apart_row({"ratio": 1.2}) == []  # figures from before the split


def _gpu_dry_run(tmp_path, monkeypatch, *argv: str) -> dict:
    import logging
    import warnings

    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    import bench_gpu

    out = tmp_path / "gpu.json"
    lightning_log = logging.getLogger("pytorch_lightning")
    level = lightning_log.level
    try:
        with warnings.catch_warnings():  # main() quiets warnings and Lightning's log, as a script may
            assert bench_gpu.main(["--dry-run", "--out", str(out), *argv]) == 0
    finally:
        lightning_log.setLevel(level)
    result = json.loads(out.read_text())
    assert result["dry_run"] and not result["skipped"]
    assert result["img2txt"]["ratio"] > 0 and result["img2txt"]["split"]["compute_ms"] > 0
    assert result["img2txt"]["precision"] == "bf16-mixed"
    return result


def test_gpu_bench_dry_run_measures_the_img2txt_section_on_the_cpu(tmp_path, monkeypatch):
    result = _gpu_dry_run(tmp_path, monkeypatch, "--only", "img2txt")
    assert "resnet18" not in result and "loaders" not in result


# slow: on a CPU without native bf16 (AVX2), resnet18's bf16 steps run at a few samples/s, 3 minutes in all
@pytest.mark.slow
def test_gpu_bench_dry_run_measures_every_section_on_the_cpu(tmp_path, monkeypatch):
    result = _gpu_dry_run(tmp_path, monkeypatch)
    sizes = result["resnet18"]["sizes"]
    assert set(sizes) == {"16", "32"}  # a dry run's toy sizes (a GPU run: 64 and 224)
    for c in sizes.values():  # every variant ran, the compiled one included
        assert set(c["samples_per_s"]) == {"contiguous", "channels_last", "compiled"}
        assert all(v > 0 for v in c["samples_per_s"].values()), c
    assert result["resnet18"]["lightning"]["ratio"] > 0
    for workload in ("img2txt", "resnet18_16"):
        feeds = result["loaders"][workload]
        assert set(feeds) == {"on_device", "pinned_workers", "pageable"}
        assert feeds["pinned_workers"]["num_workers"] == 1 and feeds["pageable"]["num_workers"] == 0
        assert all(f["samples_per_s"] > 0 and f["data_ms"] >= 0 for f in feeds.values())
    table = (tmp_path / "gpu.md").read_text()  # _gpu_dry_run's --out is tmp_path / "gpu.json"
    assert table.startswith("**DRY RUN on the CPU") and "torch.compile" in table and "pinned memory" in table


@pytest.mark.parametrize("argv,message", [
    (["--only", "img2txt,warp"], "error: --only 'img2txt,warp': unknown section ['warp']; allowed: img2txt, "
                                 "resnet18, loaders"),
    ([], "error: no GPU is visible to torch (torch.cuda.is_available() is False); allowed: a machine with a CUDA "
         "GPU, or --dry-run to check the script on the CPU"),
])
def test_gpu_bench_refuses_in_one_line(argv, message):
    if not argv and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_gpu.py"), *argv],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [message]


@pytest.mark.slow
def test_bench_quick_measures_every_section(tmp_path):
    out = tmp_path / "bench.json"
    start = time.time()
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    bench = json.loads(out.read_text())
    assert set(bench) >= {"machine", "lightning", "throughput", "data", "images", "e2e", "sweep"}
    assert all(c["images_per_s"] > 0 and c["train_images"] > 200 for c in bench["images"]["cases"].values())
    assert bench["lightning"]["ratio"] > 0 and len(bench["lightning"]["ratios"]) == 3
    for lt in (bench["lightning"], bench["backbones"]["lightning"]):  # where the two loops differ
        assert lt["train_ratio"] > 0 and min(lt["outside_train_s"].values()) > 0
    assert 0 < bench["throughput"]["share_of_matmul"] < 1
    bb = bench["backbones"]
    assert set(bb["sizes"]) == {"32", "64"} and bb["lightning"]["ratio"] > 0 and len(bb["lightning"]["ratios"]) == 3
    for c in bb["sizes"].values():  # 64x64 executes 4x the FLOPs of 32x32, and both are a real share of matmul
        assert min(c["samples_per_s"].values()) > 0 and 0 < c["share_of_matmul"] < 1
    assert 3.5 < bb["sizes"]["64"]["train_flops_per_sample"] / bb["sizes"]["32"]["train_flops_per_sample"] < 4.5
    assert bench["data"]["tokenised_at_setup"] and bench["data"]["ratio_to_steps"] > 1
    assert 0 < bench["e2e"]["warm_first_step_s"] < bench["e2e"]["warm_s"] < time.time() - start
    assert bench["sweep"]["jobs"] == 8 and bench["sweep"]["source_trained"] == {"sequential": 2, "joblib": 2}
    assert bench["sweep"]["peak_rss_mb"] > bench["sweep"]["peak_rss_single_mb"] > 100
    table = out.with_suffix(".md").read_text()
    assert "Lightning / plain loop" in table and "Peak RSS, parallel sweep" in table and "channels-last" in table


# -- per-epoch scores from one update per step ---------------------------------------------------------
@pytest.mark.parametrize("num_classes,absent", [(2, None), (5, 3), (7, 0)])
def test_epoch_stats_match_torchmetrics_accuracy_and_macro_f1(num_classes, absent):
    from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

    from xfer.models.scores import EpochStats

    torch.manual_seed(num_classes)
    stats = EpochStats(num_classes)
    acc, f1 = MulticlassAccuracy(num_classes, average="micro"), MulticlassF1Score(num_classes, average="macro")
    losses, sizes = [], []
    for batch in (17, 64, 3):
        logits, y = torch.randn(batch, num_classes), torch.randint(0, num_classes, (batch,))
        if absent is not None:  # a class that is never the target nor predicted
            y[y == absent] = (absent + 1) % num_classes
            logits[:, absent] = -1e9
        loss = nn.functional.cross_entropy(logits, y)
        stats.update(logits, y, loss)
        acc.update(logits, y), f1.update(logits, y)
        losses.append(float(loss) * batch), sizes.append(batch)
    out = stats.compute()
    torch.testing.assert_close(out["acc"], acc.compute())
    torch.testing.assert_close(out["f1"], f1.compute())
    assert float(out["loss"]) == pytest.approx(sum(losses) / sum(sizes), rel=1e-6)
    assert int(out["confusion"].sum()) == sum(sizes)


def test_a_run_logs_step_losses_every_n_steps_and_epoch_scores(text_dm, tmp_path):
    from pytorch_lightning.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    module = _module(text_dm)
    trainer = pl.Trainer(accelerator="cpu", max_epochs=2, enable_progress_bar=False, enable_checkpointing=False,
                         enable_model_summary=False, num_sanity_val_steps=0, log_every_n_steps=2,
                         limit_train_batches=5, limit_val_batches=2,
                         logger=TensorBoardLogger(str(tmp_path), name="tb", version="t"))
    trainer.fit(module, datamodule=text_dm)
    events = EventAccumulator(str(tmp_path / "tb" / "t"))
    events.Reload()
    steps = {tag: [e.step for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    assert steps["train/loss_step"] == [1, 3, 5, 7, 9]  # every 2nd of 10 steps, as Lightning writes them
    for tag in ("train/loss_epoch", "train/acc", "train/f1", "val/loss", "val/acc", "val/f1"):
        assert len(steps[tag]) == 2, tag  # once per epoch
    assert 0 < events.Scalars("val/acc")[-1].value <= 1



def _python(code: str, **env: str) -> str:
    import os

    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_pandas_loads_when_a_text_reader_runs_not_at_start_up():
    """pandas (~0.4 s, ~60 MiB with pyarrow) is imported by the text readers when they read, so an image
    run never loads it; the readers still work once it is there."""
    code = ("import sys, json, xfer.pipeline; from xfer.data.readers_text import read_csv_text, parse_table; "
            "at_start = [m for m in ('pandas', 'pyarrow') if m in sys.modules]; from pathlib import Path; "
            "frame = parse_table('text,label\\na,x\\nb,y\\n', Path('t.csv'), 'csv'); "
            "print(json.dumps({'at_start': at_start, 'rows': len(frame), 'now': 'pandas' in sys.modules}))")
    got = json.loads(_python(code).splitlines()[-1])
    assert got == {"at_start": [], "rows": 2, "now": True}


def test_a_run_does_not_pay_for_torchmetrics_it_does_not_use_and_gets_the_real_package_when_it_does():
    """xfer defers torchmetrics' __init__ (every metric family, torchvision's models, scipy.signal), which
    Lightning imports only for Metric, MetricCollection and the version. Once a name only __init__ defines
    is read, torchmetrics is what a plain import gives: the same public names, the same classes, one
    logging handler."""
    code = ("import sys, json, xfer.pipeline, pytorch_lightning, xfer.lazy_metrics as lm; "
            "heavy = [m for m in ('torchmetrics.functional', 'scipy.signal', 'torchvision', 'matplotlib') if m in sys.modules]; "
            "loaded = lm.loaded(); import torchmetrics, torchmetrics.metric; "
            "same = torchmetrics.Metric is torchmetrics.metric.Metric; "
            "acc = torchmetrics.classification.MulticlassAccuracy(num_classes=3); "
            "import torch; acc.update(torch.tensor([0, 1, 2, 2]), torch.tensor([0, 1, 1, 2])); "
            "print(json.dumps({'heavy': heavy, 'loaded_at_start': loaded, 'loaded_now': lm.loaded(), 'same': same, "
            "'acc': float(acc.compute()), 'names': sorted(n for n in dir(torchmetrics) if not n.startswith('_')), "
            "'handlers': len(torchmetrics._logger.handlers), 'version': torchmetrics.__version__}))")
    lazy = json.loads(_python(code).splitlines()[-1])
    eager = json.loads(_python(code, XFER_EAGER_TORCHMETRICS="1").splitlines()[-1])
    assert lazy["heavy"] == [] and lazy["loaded_at_start"] is False
    assert set(eager["heavy"]) >= {"torchmetrics.functional", "scipy.signal", "matplotlib"} and eager["loaded_at_start"] is True
    assert lazy["loaded_now"] is True and lazy["same"] is True and lazy["acc"] == eager["acc"] == pytest.approx(5 / 6)  # macro: 1, 1, 1/2
    assert lazy["names"] == eager["names"] and len(lazy["names"]) > 50
    assert lazy["handlers"] == eager["handlers"] == 1 and lazy["version"] == eager["version"]


PLOTS = """
import sys, json, xfer.pipeline, pytorch_lightning
at_start = 'matplotlib' in sys.modules
import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
import numpy as np
import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score
from torchmetrics.utilities.plot import trim_axs, _AX_TYPE
plt.rcParams['lines.linewidth'] = 7.0  # the plot functions draw in matplotlib's default style, whatever is set
acc = MulticlassAccuracy(3)
values = []
for pred in ([0, 1, 2, 2], [0, 1, 1, 2], [2, 1, 1, 0]):
    acc.update(torch.tensor(pred), torch.tensor([0, 1, 1, 2])); values.append(acc.compute())
fig, ax = acc.plot(values)
line = ax.get_lines()[0]
cm = MulticlassConfusionMatrix(3); cm.update(torch.tensor([0, 1, 2, 2]), torch.tensor([0, 1, 1, 2]))
_, cm_ax = cm.plot()
col = MetricCollection([MulticlassAccuracy(3), MulticlassF1Score(3)])
col.update(torch.tensor([0, 1, 2, 2]), torch.tensor([0, 1, 1, 2]))
_, both = plt.subplots(1, 2)
out = col.plot(ax=list(both))
grid = trim_axs(plt.subplots(2, 2)[1], 3)
print(json.dumps({'at_start': at_start, 'y': [float(v) for v in line.get_ydata()], 'width': line.get_linewidth(),
                  'cm': [t.get_text() for t in cm_ax.texts], 'labels': [cm_ax.get_xlabel(), cm_ax.get_ylabel()],
                  'collection': len(out), 'trimmed': len(grid), 'checks': [isinstance(ax, _AX_TYPE), isinstance(grid, _AX_TYPE)],
                  'rc_after': plt.rcParams['lines.linewidth']}))
"""


def test_torchmetrics_plots_import_matplotlib_when_drawn_and_draw_what_an_eager_import_draws():
    """torchmetrics.metric imports torchmetrics.utilities.plot, which imports matplotlib (~0.4 s, ~30 MiB);
    xfer has it bind matplotlib lazily. Its plots are those of a plain import: the values, the style it
    draws in, its isinstance checks on Axes, the confusion matrix's cells."""
    lazy = json.loads(_python(PLOTS).splitlines()[-1])
    eager = json.loads(_python(PLOTS, XFER_EAGER_TORCHMETRICS="1").splitlines()[-1])
    assert lazy.pop("at_start") is False and eager.pop("at_start") is True
    assert lazy == eager
    assert lazy["width"] == 1.5 and lazy["rc_after"] == 7.0  # drawn in the default style; the user's setting back after
    assert lazy["checks"] == [True, False] and lazy["trimmed"] == 3 and lazy["collection"] == 2
    assert len(lazy["cm"]) == 9 and len(lazy["y"]) == 3


def test_the_deferred_plot_module_keeps_its_files_line_numbers():
    """Tracebacks from torchmetrics/utilities/plot.py point at its real lines: the deferred block is as long
    as the one it replaces."""
    code = ("import json, xfer.pipeline, sys; import torchmetrics.utilities.plot as p; "
            "lines = open(p.__file__).read().splitlines(); "
            "print(json.dumps({'mpl': 'matplotlib' in sys.modules, 'defs': [lines[f.__code__.co_firstlineno - 1].split('(')[0] "
            "for f in (p._error_on_missing_matplotlib, p.trim_axs)]}))")
    got = json.loads(_python(code).splitlines()[-1])
    assert got == {"mpl": False, "defs": ["def _error_on_missing_matplotlib", "def trim_axs"]}
