"""Weight drift per trunk block, per target epoch: results.json and TensorBoard."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import QUICK, run_in_process
from xfer.report.plots import read_scalar


@pytest.mark.parametrize("strategy, frozen", [(["strategy=finetune"], set()),
                                              (["strategy=freeze_first_k", "strategy.k=2"], {0, 1})])
def test_drift_is_zero_for_frozen_blocks_and_grows_for_trained_ones(home: Path, strategy: list[str], frozen: set):
    r = run_in_process(["experiment=img2img", *[q for q in QUICK if not q.startswith("trainer.max_epochs")], "trainer.max_epochs=2", *strategy], home)
    drift = r["target"]["drift"]
    assert drift["blocks"] == [f"{i}:ConvBlock" for i in range(4)]
    assert [e["epoch"] for e in drift["per_epoch"]] == [0, 1]
    first, second = (e["drift"] for e in drift["per_epoch"])
    for i in range(4):
        if i in frozen:
            assert first[i] == second[i] == 0.0
        else:
            assert 0.0 < first[i] < second[i], (i, first, second)  # a small lr, two epochs: it moves on
    events = read_scalar(Path(r["run_dir"]), "drift/block3")
    # TensorBoard stores float32: compare at its precision (rounding both to 6 places can split a tie)
    assert [v for _, v in events] == pytest.approx([first[3], second[3]], rel=1e-6)


def test_analysis_drift_false_records_none(home: Path):
    r = run_in_process(["experiment=img2img", *QUICK, "analysis.drift=false"], home)
    assert r["target"]["drift"] is None
