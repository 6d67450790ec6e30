"""Nothing lost: kill -9 and SIGTERM a real training process, then resume it to the end."""

import os
import signal

import numpy as np
import pytest
# Shared with tests/test_distribute.py, test_run_dir.py and test_finetune.py (which import them
# from here or from helpers).
from helpers import (ROOT, checkpoint_values, latest_step, make_folder_dataset,  # noqa: F401
                     start, train_command, wait_for_step)


@pytest.mark.slow
def test_kill_and_sigterm_then_resume_continues_from_saved_state(tmp_path):
    data_root = make_folder_dataset(str(tmp_path / "data"))
    model_dir = tmp_path / "run"
    log_path = tmp_path / "log.txt"
    # The run that goes straight through trains meanwhile, in its own process: on the 2 CI
    # cores both runs progress at once (each start is ~10 s of single-threaded imports and
    # tracing), instead of one after the other.
    straight = tmp_path / "straight"
    with open(tmp_path / "straight.txt", "w") as straight_log:
        reference = start(train_command(data_root, straight), straight_log)
    try:
        with open(log_path, "w") as log:
            # 1. kill -9 after a checkpoint at step >= 4.
            process = start(train_command(data_root, model_dir), log)
            killed_at = wait_for_step(process, model_dir, 4)
            process.send_signal(signal.SIGKILL)
            process.wait(30)
            killed_at = latest_step(model_dir)
            assert 4 <= killed_at < 12  # 48 images / batch 8 x 2 epochs = 12 steps
            # 2. resume; SIGTERM once it has saved a later checkpoint: it saves and exits 143.
            process = start(train_command(data_root, model_dir), log)
            wait_for_step(process, model_dir, killed_at + 2)
            process.send_signal(signal.SIGTERM)
            assert process.wait(120) == 143
            terminated_at = latest_step(model_dir)
            assert killed_at + 2 <= terminated_at <= 12
            # 3. resume to the end.
            process = start(train_command(data_root, model_dir), log)
            assert process.wait(300) == 0
        text = log_path.read_text()
        assert f"resumed from {model_dir}/ckpt-{killed_at} at step {killed_at}" in text
        assert f"at step {terminated_at}" in text
        assert latest_step(model_dir) == 12
        assert os.path.exists(model_dir / "export" / "model.keras")

        final = checkpoint_values(str(model_dir / "ckpt-12"))
        assert any("ema" in name for name in final) and any("rng" in name for name in final)
        iterations = [value for name, value in final.items()
                      if name.startswith("optimizer/_iterations")]
        assert iterations and int(iterations[0]) == 12  # optimizer position == step after two resumes
        assert int(final["step/.ATTRIBUTES/VARIABLE_VALUE"]) == 12

        # Same step, optimiser state, EMA, RNG and data position: in deterministic mode the run
        # that was killed and terminated ends bit-identical to one that ran straight through.
        assert reference.wait(300) == 0, (tmp_path / "straight.txt").read_text()[-3000:]
    finally:
        if reference.poll() is None:
            reference.kill()
            reference.wait()
    expected = checkpoint_values(str(straight / "ckpt-12"))
    compared = [name for name in expected if name.startswith(("model", "optimizer", "ema", "rng"))]
    assert len(compared) > 100
    for name in compared:
        np.testing.assert_array_equal(final[name], expected[name], err_msg=name)
