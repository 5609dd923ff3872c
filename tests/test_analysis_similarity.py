"""Representation similarity per trunk block at a run's end: linear CKA of the trunk at the start against
the fine-tuned one and of the source model against the target one, in results.json, files and TensorBoard."""
from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import QUICK, run_in_process
from xfer.data.text import PAD, UNK, fit_tokenizer
from xfer.report.plots import read_scalar

FEW = ["analysis.similarity.examples=64"]


def test_frozen_blocks_keep_cka_1_trained_ones_move_and_every_output_agrees(home: Path):
    r = run_in_process(["experiment=img2img", *QUICK, *FEW, "strategy=freeze_first_k", "strategy.k=2",
                        "trainer.max_epochs=2"], home)
    sim, run_dir = r["target"]["similarity"], Path(r["run_dir"])
    assert sim["examples"] == 64 and sim["blocks"] == [f"{i}:ConvBlock" for i in range(4)]
    moved = sim["initial_vs_final"]
    assert moved[0] == pytest.approx(1.0, abs=1e-6) and moved[1] == pytest.approx(1.0, abs=1e-6)  # frozen, BN too
    assert moved[3] < 0.999, moved  # trained two epochs
    matrix = sim["matrices"]["initial_vs_final"]
    assert [matrix[i][i] for i in range(4)] == moved
    # img2img: the source adapter reads the target's digits, so source vs target is measured too
    assert sim["source_vs_final"] is not None and sim["source_note"] is None
    with open(run_dir / "similarity" / "cka.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 * 16 and {r_["comparison"] for r_ in rows} == {"initial_vs_final", "source_vs_final"}
    assert float(next(x for x in rows if x["comparison"] == "initial_vs_final" and x["block_a"] == "3:ConvBlock"
                      and x["block_b"] == "3:ConvBlock")["cka"]) == pytest.approx(moved[3], abs=1e-6)
    assert (run_dir / "similarity" / "cka.png").stat().st_size > 1000
    [(_, logged)] = read_scalar(run_dir, "cka/initial_vs_final/block3")
    assert logged == pytest.approx(moved[3], abs=1e-6)
    with np.load(run_dir / "similarity" / "features.npz") as npz:
        assert npz["block3"].shape[0] == 64 and int(npz["examples"]) == 64


def test_cross_modal_source_similarity_is_na_and_zero_examples_turn_it_off(home: Path):
    r = run_in_process(["experiment=img2txt", *QUICK, *FEW], home)
    sim = r["target"]["similarity"]
    assert sim["source_vs_final"] is None and "source mnist5k is image, target rt_sentiment is text" in sim["source_note"]
    assert list(sim["matrices"]) == ["initial_vs_final"]
    off = run_in_process(["experiment=img2img", *QUICK, "analysis.similarity.examples=0"], home)
    assert off["target"]["similarity"] is None and not (Path(off["run_dir"]) / "similarity").exists()


def test_the_source_adapter_reads_target_text_through_its_own_vocabulary():
    from xfer.data.text import id_translator

    source_tok = fit_tokenizer(["the cat sat", "a dog ran"], 100, 1, True, 6)
    target_tok = fit_tokenizer(["dog bites man", "the man sat"], 100, 1, True, 4)
    source, target = SimpleNamespace(tokenizer=source_tok, max_len=6), SimpleNamespace(tokenizer=target_tok, max_len=4)
    ids = torch.tensor([e.ids for e in target_tok.encode_batch(["the dog bites", "man"])])
    out = id_translator(source, target)(ids)
    words = [[source_tok.id_to_token(int(i)) for i in row] for row in out]
    assert words == [["the", "dog", UNK, PAD, PAD, PAD], [UNK, PAD, PAD, PAD, PAD, PAD]]
    short = SimpleNamespace(tokenizer=source_tok, max_len=2)
    assert id_translator(short, target)(ids).shape == (2, 2)

