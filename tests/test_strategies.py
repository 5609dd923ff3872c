"""Every strategy does exactly what it says, on a short fit on real data.

The checks read the strategy's ``plan`` directly, never the code under test's own bookkeeping:
frozen parameters bitwise unchanged, trained ones changed, BatchNorm statistics of frozen blocks
unchanged, optimizer parameters == requires_grad parameters (by identity) at every epoch, and every
group's lr == its planned peak lr times the scheduler's factor at every step.
"""
from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint

from xfer import build, target_stage
from xfer.callbacks import EpochSeed
from xfer.data import ImageDataModule, TextDataModule
from xfer.models.adapters import ImageAdapter, TextGridAdapter
from xfer.models.heads import LinearHead
from xfer.models.module import TransferModule
from xfer.models.lr_schedule import PeakScaledLR
from xfer.models.trunks import CNNTrunk, ResNetTrunk
from xfer.freezing import (AlignRefine, Finetune, FreezeFirstK, FreezingCallback, FrozenRandom, GradualUnfreeze, Joint,
                             L2SP, LayerwiseLR, LinearProbe, LPFT, NormOnly, Scratch, FreezingError,
                             Surgical, param_groups)
from xfer.freezing.groups import NORM_TYPES, norm_and_bias_params
from xfer.freezing.random_first_k import RandomFirstK
from xfer.data.joint import JointDataModule
from xfer.models.joint import JointTransferModule

EPOCHS = 4
OPTIM = {"lr": 3e-3, "trunk_lr": 1e-3, "weight_decay": 1e-2, "schedule": "cosine", "warmup_fraction": 0.1,
         "betas": [0.9, 0.999], "label_smoothing": 0.0, "plateau_factor": 0.5, "plateau_patience": 1}

STRATEGIES = {
    "scratch": lambda **kw: Scratch(**kw),
    "frozen_random": lambda **kw: FrozenRandom(**kw),
    "finetune": lambda **kw: Finetune(**kw),
    "linear_probe": lambda **kw: LinearProbe(**kw),
    "freeze_first_k": lambda **kw: FreezeFirstK(k=2, **kw),
    "surgical": lambda **kw: Surgical(blocks=[1, 3], **kw),
    "gradual_unfreeze": lambda **kw: GradualUnfreeze(every_n_epochs=1, unfreeze_lr_scale=0.5, **kw),
    "lp_ft": lambda **kw: LPFT(probe_epochs=2, lr_factor=0.3, **kw),
    "layerwise_lr": lambda **kw: LayerwiseLR(decay=0.5, **kw),
    "norm_only": lambda **kw: NormOnly(**kw),
    "l2sp": lambda **kw: L2SP(alpha=0.1, **kw),
    "align_refine": lambda **kw: AlignRefine(align_epochs=2, **kw),
    "joint": lambda **kw: Joint(lam=0.5, **kw),
    "random_first_k": lambda **kw: RandomFirstK(k=2, **kw),
}


@pytest.fixture(scope="module")
def text_dm():
    dm = TextDataModule("rt_sentiment", fraction=0.03, batch_size=32, eval_batch_size=256, seed=0)
    dm.setup()
    return dm


@pytest.fixture(scope="module")
def image_dm():
    dm = ImageDataModule("mnist5k", fraction=0.08, batch_size=32, eval_batch_size=256, seed=0)
    dm.setup()
    return dm


def make_module(strategy, text_dm, image_dm, optim=OPTIM, trunk_cls=CNNTrunk):
    torch.manual_seed(0)
    trunk = trunk_cls(8, (8, 16, 16, 16))
    adapter = TextGridAdapter(text_dm.spec, trunk.in_channels, embed_dim=16)
    head = LinearHead(trunk.out_features, text_dm.spec.num_classes, dropout=0.3)
    groups = lambda m: param_groups(m, strategy, optim, 0)  # noqa: E731
    dm = text_dm
    if isinstance(strategy, Joint):
        src_adapter = ImageAdapter(image_dm.spec, trunk.in_channels)
        src_head = LinearHead(trunk.out_features, image_dm.spec.num_classes)
        module = JointTransferModule(adapter, trunk, head, 2, optim, groups, source_adapter=src_adapter,
                                     source_head=src_head, lam=strategy.lam)
        dm = JointDataModule(text_dm, image_dm)
    else:
        module = TransferModule(adapter, trunk, head, 2, optim, groups)
    if isinstance(strategy, AlignRefine):
        strategy.attach_source_features(torch.randn(128, trunk.out_features))
    return module, dm


def planned(strategy, module, epoch):
    n = len(module.trunk.blocks)
    return strategy.plan(epoch, n, OPTIM["lr"], OPTIM["trunk_lr"])


def expected_trainable(strategy, module, epoch) -> dict[int, float]:
    """id(param) -> planned peak lr, computed from the plan alone."""
    plan = planned(strategy, module, epoch)
    out: dict[int, float] = {}
    if plan.new_lr is not None:
        parts = [module.adapter] + ([] if plan.head_frozen else [module.head])
        parts += list(getattr(module, "extra_parts", {}).values())
        for part in parts:
            out.update({id(p): plan.new_lr for p in part.parameters()})
    for block, bp in zip(module.trunk.blocks, plan.blocks):
        if bp.mode == "all":
            out.update({id(p): bp.lr for p in block.parameters()})
        elif bp.mode == "norm":
            out.update({id(p): bp.lr for p in norm_and_bias_params(block)})
    return out


class Inspector(Callback):
    """Checks, at every epoch start and after every optimizer step, the optimizer against the plan."""

    def __init__(self, strategy):
        self.strategy = strategy
        self.epochs_checked: list[int] = []
        self.steps_checked = 0

    def _check(self, trainer, module, epoch):
        opt = trainer.optimizers[0]
        want = expected_trainable(self.strategy, module, epoch)
        in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
        with_grad = {id(p) for p in module.parameters() if p.requires_grad}
        assert in_opt == with_grad == set(want), f"epoch {epoch}: optimizer/requires_grad/plan differ"
        sched = next(c.scheduler for c in trainer.lr_scheduler_configs if isinstance(c.scheduler, PeakScaledLR))
        factor = sched.factor()
        for g in opt.param_groups:
            for p in g["params"]:
                assert g["lr"] == pytest.approx(want[id(p)] * factor, rel=1e-9, abs=1e-15), \
                    f"epoch {epoch} group {g['name']}: lr {g['lr']} != {want[id(p)]} * {factor}"

    def on_train_epoch_start(self, trainer, module):
        self._check(trainer, module, trainer.current_epoch)
        self.epochs_checked.append(trainer.current_epoch)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self._check(trainer, module, trainer.current_epoch)
        self.steps_checked += 1


def fit(module, dm, strategy, epochs=EPOCHS, optim=OPTIM, ckpt_path=None, extra=()):
    inspector = Inspector(strategy)
    callbacks = [EpochSeed(0), FreezingCallback(strategy, optim), *strategy.callbacks(), inspector, *extra]
    trainer = pl.Trainer(accelerator="cpu", max_epochs=epochs, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=bool(extra), deterministic=True,
                         limit_train_batches=4, limit_val_batches=1, num_sanity_val_steps=0, callbacks=callbacks)
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path, weights_only=True)
    return trainer, inspector


def snapshot(module):
    params = {id(p): p.detach().clone() for p in module.parameters()}
    stats = {id(m): (m.running_mean.clone(), m.running_var.clone()) for m in module.trunk.modules()
             if isinstance(m, torch.nn.BatchNorm2d)}
    return params, stats


@pytest.mark.parametrize("bn_policy", ["frozen", "train"])
@pytest.mark.parametrize("name", list(STRATEGIES))
def test_strategy_trains_exactly_what_it_plans(name, bn_policy, text_dm, image_dm):
    if bn_policy == "train" and name in ("scratch", "finetune", "layerwise_lr", "l2sp", "norm_only", "joint"):
        pytest.skip("nothing is frozen: the BatchNorm policy has nothing to act on")
    strategy = STRATEGIES[name](bn_policy=bn_policy)
    module, dm = make_module(strategy, text_dm, image_dm)
    before, stats_before = snapshot(module)
    trainer, inspector = fit(module, dm, strategy)
    assert inspector.epochs_checked == list(range(EPOCHS)) and inspector.steps_checked > EPOCHS

    ever = set().union(*(expected_trainable(strategy, module, e) for e in range(EPOCHS)))
    for pname, p in module.named_parameters():
        if id(p) in ever:
            assert not torch.equal(p.detach(), before[id(p)]), f"{name}: {pname} should have trained"
        else:
            assert torch.equal(p.detach(), before[id(p)]), f"{name}: frozen {pname} changed"
    # BatchNorm statistics of blocks frozen for the whole run, under the frozen policy
    for i, block in enumerate(module.trunk.blocks):
        always_frozen = all(planned(strategy, module, e).blocks[i].mode == "frozen" for e in range(EPOCHS))
        for m in block.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                same = torch.equal(m.running_mean, stats_before[id(m)][0]) and \
                    torch.equal(m.running_var, stats_before[id(m)][1])
                assert same == always_frozen, f"{name}: block {i} running stats same={same}"


@pytest.mark.parametrize("schedule", ["cosine", "constant", "plateau"])
def test_groups_added_mid_training_follow_every_scheduler(schedule, text_dm, image_dm):
    optim = {**OPTIM, "schedule": schedule, "plateau_patience": 0, "plateau_factor": 0.5}
    strategy = GradualUnfreeze(every_n_epochs=1, unfreeze_lr_scale=0.5)
    module, dm = make_module(strategy, text_dm, image_dm, optim)
    trainer, inspector = fit(module, dm, strategy, optim=optim)
    names = [g["name"] for g in trainer.optimizers[0].param_groups]
    assert names == ["adapter", "head", "trunk.3", "trunk.2", "trunk.1"]
    sched = trainer.lr_scheduler_configs[0].scheduler
    if schedule == "plateau":  # patience 0: the factor moved on some epoch, and the added groups followed
        assert sched.plateau_scale < 1.0 or sched.plateau_best is not None


def test_resnet_trunk_works_with_block_strategies(text_dm, image_dm):
    strategy = FreezeFirstK(k=3)
    module, dm = make_module(strategy, text_dm, image_dm, trunk_cls=ResNetTrunk)
    before, _ = snapshot(module)
    fit(module, dm, strategy, epochs=1)
    assert all(torch.equal(p, before[id(p)]) for b in module.trunk.blocks[:3] for p in b.parameters())
    assert not all(torch.equal(p, before[id(p)]) for p in module.trunk.blocks[3].parameters())


# -- the pure group builder, alone --------------------------------------------------------------
def test_param_groups_is_a_pure_function_of_model_and_plan(text_dm, image_dm):
    module, _ = make_module(Finetune(), text_dm, image_dm)
    groups = param_groups(module, FreezeFirstK(k=2), OPTIM)
    assert [g["name"] for g in groups] == ["adapter", "head", "trunk.2", "trunk.3"]
    assert [g["lr"] for g in groups] == [3e-3, 3e-3, 1e-3, 1e-3]
    assert all(p.requires_grad for g in groups for p in g["params"])  # and nothing was frozen by it
    assert param_groups(module, FreezeFirstK(k=2), OPTIM)[2]["params"] == groups[2]["params"]

    lw = param_groups(module, LayerwiseLR(decay=0.5), OPTIM)
    assert [g["lr"] for g in lw[2:]] == pytest.approx([1e-3 / 8, 1e-3 / 4, 1e-3 / 2, 1e-3])

    norm = param_groups(module, NormOnly(), OPTIM)
    trunk_params = [p for g in norm[2:] for p in g["params"]]
    owners = {id(p): m for m in module.trunk.modules() for p in m.parameters(recurse=False)}
    assert trunk_params and all(isinstance(owners[id(p)], NORM_TYPES) or p.ndim == 1 for p in trunk_params)
    assert not any(p.ndim == 4 for p in trunk_params)  # no conv weights

    gu = GradualUnfreeze(every_n_epochs=2, unfreeze_lr_scale=0.1)
    assert [g["name"] for g in param_groups(module, gu, OPTIM, epoch=0)] == ["adapter", "head"]
    e4 = param_groups(module, gu, OPTIM, epoch=4)
    assert [g["name"] for g in e4] == ["adapter", "head", "trunk.2", "trunk.3"]
    assert e4[-1]["lr"] == pytest.approx(1e-4)

    lpft = param_groups(module, LPFT(probe_epochs=1, lr_factor=0.1), OPTIM, epoch=1)
    assert [g["lr"] for g in lpft] == pytest.approx([3e-4, 3e-4] + [1e-4] * 4)
    assert param_groups(module, L2SP(), OPTIM)[-1]["weight_decay"] == 0.0
    align = param_groups(module, AlignRefine(align_epochs=1), OPTIM, epoch=0)
    assert [g["name"] for g in align] == ["adapter"]


@pytest.mark.parametrize("strategy,message", [
    (lambda: FreezeFirstK(k=5), r"strategy.k=5; allowed: an integer 0..4"),
    (lambda: FreezeFirstK(k=-1), r"strategy.k=-1; allowed: an integer 0..4"),
    (lambda: Surgical(blocks=[7]), r"strategy.blocks=\[7\]; allowed: .*0..3"),
    (lambda: LPFT(lr_factor=-0.5), r"strategy.lr_factor=-0.5; allowed: a number > 0"),
    (lambda: LPFT(probe_epochs=0), r"strategy.probe_epochs=0; allowed: an integer >= 1"),
    (lambda: LayerwiseLR(decay=1.5), r"strategy.decay=1.5; allowed: 0 < decay <= 1"),
    (lambda: GradualUnfreeze(unfreeze_lr_scale=0), r"strategy.unfreeze_lr_scale=0; allowed"),
    (lambda: L2SP(alpha=-1), r"strategy.alpha=-1; allowed"),
    (lambda: Joint(lam=0), r"strategy.lam=0; allowed"),
    (lambda: Finetune(bn_policy="sometimes"), r"bn_policy='sometimes'; allowed: frozen, train"),
])
def test_a_strategy_that_cannot_apply_fails_before_training(strategy, message):
    with pytest.raises(FreezingError, match=message):
        strategy().validate(4)


# -- resume across an unfreeze ------------------------------------------------------------------
@pytest.mark.parametrize("resume_epoch", [0, 1])  # 0: before the first unfreeze; 1: after it
def test_resume_across_an_unfreeze_matches_an_uninterrupted_run(resume_epoch, text_dm, image_dm, tmp_path):
    def run(ckpt_path=None, save=False):
        strategy = GradualUnfreeze(every_n_epochs=1)
        module, dm = make_module(strategy, text_dm, image_dm)
        extra = [ModelCheckpoint(dirpath=tmp_path, filename="{epoch}", save_top_k=-1,
                                 every_n_epochs=1)] if save else []
        trainer, _ = fit(module, dm, strategy, epochs=3, ckpt_path=ckpt_path, extra=extra)
        groups = [(g["name"], g["lr"], len(g["params"])) for g in trainer.optimizers[0].param_groups]
        return module.state_dict(), groups

    full, full_groups = run(save=True)
    resumed, resumed_groups = run(ckpt_path=str(tmp_path / f"epoch={resume_epoch}.ckpt"))
    assert resumed_groups == full_groups
    for key, value in full.items():
        assert torch.equal(value, resumed[key]), f"{key} differs after resume from epoch {resume_epoch}"


def test_scratch_trains_its_random_trunk_at_the_new_parts_lr_unless_told(text_dm, image_dm):
    module, _ = make_module(Scratch(), text_dm, image_dm)
    trunk = {g["name"]: g["lr"] for g in param_groups(module, Scratch(), OPTIM) if g["name"].startswith("trunk")}
    assert len(trunk) == 4 and set(trunk.values()) == {OPTIM["lr"]} != {OPTIM["trunk_lr"]}
    own = {g["lr"] for g in param_groups(module, Scratch(trunk_lr=1e-4), OPTIM) if g["name"].startswith("trunk")}
    assert own == {1e-4}
    for bad in (0, "abc", True):
        with pytest.raises(FreezingError, match=f"strategy.trunk_lr={bad!r}|strategy.trunk_lr={bad}"):
            Scratch(trunk_lr=bad)


def test_frozen_random_is_linear_probe_on_the_source_stages_random_start():
    """Same init as the trunk the source stage would train, BatchNorm statistics from one pass over
    the source data, frozen like linear_probe: trained vs random weights is the only difference."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from conftest import ROOT

    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = compose(config_name="train", overrides=["experiment=img2txt", "strategy=frozen_random",
                                                      "target.fraction=0.05", "source.fraction=0.25"])
    strat = build.freezing(cfg.strategy, "frozen_random")
    assert isinstance(strat, FrozenRandom) and not cfg.source_stage.enabled
    plan = strat.plan(0, 4, 1.0, 0.5)
    assert plan == LinearProbe().plan(0, 4, 1.0, 0.5)
    target_dm = build.datamodule(cfg.target, cfg.seed)
    module, _, _ = target_stage.build_target(cfg, strat, target_dm)

    pl.seed_everything(cfg.seed, workers=True, verbose=False)  # as run_source_stage starts
    build.datamodule(cfg.source, cfg.seed)
    start = instantiate(cfg.trunk)
    for (name, got), want in zip(module.trunk.named_parameters(), start.parameters()):
        assert torch.equal(got, want), name  # the very weights the source stage starts from
    norms = [m for m in module.trunk.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    fresh = [m for m in start.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == 4
    for got, init in zip(norms, fresh):
        assert not torch.allclose(got.running_mean, init.running_mean)  # from the source pass, not 0/1
        assert not torch.allclose(got.running_var, init.running_var)
        assert got.momentum == init.momentum  # restored after the exact-average pass
    again, _, _ = target_stage.build_target(cfg, strat, target_dm)
    rng_after = torch.get_rng_state()
    assert all(torch.equal(a, b) for a, b in zip(module.trunk.state_dict().values(),
                                                   again.trunk.state_dict().values()))
    # the pass draws nothing from the RNG the target stage then uses
    target_stage.build_target(cfg, LinearProbe(), target_dm)  # frozen_random without the pass
    assert torch.equal(torch.get_rng_state(), rng_after)

    # the first block's statistics are those of the source images: the exact average over the pass's
    # batches of each batch's per-channel mean of conv(adapter(images)), the adapter on batch statistics
    source = build.datamodule(cfg.source, cfg.seed)
    torch.manual_seed(cfg.seed)
    adapter, _ = build.adapter_and_head(source.spec, start, cfg.source_adapter, cfg.head)
    adapter.train()
    with torch.no_grad():
        means = [start.blocks[0].conv(adapter(chunk)).mean(dim=(0, 2, 3))
                 for chunk in source.datasets["train"].tensors[0].split(512)]
    assert torch.allclose(norms[0].running_mean, torch.stack(means).mean(0), atol=1e-5)
    # BatchNorm in frozen blocks stays put while the target trains: see
    # test_strategy_trains_exactly_what_it_plans[frozen_random-frozen]


def test_random_first_k_is_freeze_first_k_on_the_random_start_with_source_statistics():
    """The control for AnB: the first k blocks are the source stage's random starting weights, frozen, with
    BatchNorm statistics from the source data; the rest train as freeze_first_k's do."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from conftest import ROOT

    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = compose(config_name="train", overrides=["experiment=img2txt", "strategy=random_first_k", "strategy.k=2",
                                                      "target.fraction=0.05", "source.fraction=0.25"])
    strat = build.freezing(cfg.strategy, "random_first_k")
    assert not cfg.source_stage.enabled
    assert strat.plan(0, 4, 1.0, 0.5) == FreezeFirstK(k=2).plan(0, 4, 1.0, 0.5)
    module, _, parts = target_stage.build_target(cfg, strat, build.datamodule(cfg.target, cfg.seed))
    assert parts.norm_stats_source == cfg.source.name
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    start = instantiate(cfg.trunk)
    for (name, got), want in zip(module.trunk.named_parameters(), start.parameters()):
        assert torch.equal(got, want), name
    first = [m for m in module.trunk.blocks[0].modules() if isinstance(m, torch.nn.BatchNorm2d)][0]
    assert not torch.allclose(first.running_mean, torch.zeros_like(first.running_mean))



def test_align_refine_banks_source_features_without_a_graph():
    """The bank of source features is computed once, under no_grad: every align step draws from it, so a
    bank that kept its autograd graph would fail at the second backward pass."""
    from hydra import compose, initialize_config_dir

    from conftest import ROOT

    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = compose(config_name="train", overrides=["experiment=img2txt", "strategy=align_refine",
                                                      "strategy.bank_size=300", "target.fraction=0.05",
                                                      "source.fraction=0.25"])
    source = build.datamodule(cfg.source, cfg.seed)
    pretrained = build.model(source.spec, build.trunk(cfg.trunk), cfg.source_adapter, cfg.head,
                             build.to_dict(cfg.source_stage.optim)).state_dict()
    strat = build.freezing(cfg.strategy, "align_refine")
    module, _, _ = target_stage.build_target(cfg, strat, build.datamodule(cfg.target, cfg.seed), pretrained)
    bank = strat._source_features
    assert bank.shape == (300, module.trunk.out_features) and not bank.requires_grad
    with pytest.raises(FreezingError, match="source_stage.enabled=true"):
        target_stage.build_target(cfg, build.freezing(cfg.strategy, "align_refine"),
                                  build.datamodule(cfg.target, cfg.seed))
