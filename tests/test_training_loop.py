"""training.loop: the records it resumes from, including the shipped runs packed before the one loop."""
import json

from training.loop import epoch_means, log_from_record, new_log


def test_the_loops_own_record_round_trips():
    log = {**new_log({"x": 1}), "rows": [{"epoch": 0, "batch_idx": 0, "a": 1.5}], "seconds": 2.0}
    got, epoch, step, phase = log_from_record({"log_json": json.dumps(log), "epoch": 1, "step": 0,
                                               "phase": "train"}, None)
    assert got == log and (epoch, step, phase) == (1, 0, "train")


def test_a_gan_record_of_the_previous_layout_is_read():
    """v1 / v4 shipped runs packed before the one loop: history rows, seconds, cpu_seconds, init_done."""
    rec = {"history": [{"epoch": 0, "idx": 0, "d_loss": 1.0}], "epoch": 2, "step": 0, "init_done": {"g": "base"},
           "seconds": 12.5, "cpu_seconds": 20.0}
    log, epoch, step, phase = log_from_record(rec, {"g": "fresh"})
    assert log["rows"] == rec["history"] and log["seconds"] == 12.5 and log["cpu_seconds"] == 20.0
    assert log["init_done"] == {"g": "base"} and (epoch, step, phase) == (2, 0, "train")
    assert log["best"] is None and log["tests"] == []


def test_a_v3_record_of_the_previous_layout_is_read():
    """v3 shipped runs packed before the one loop: the history as JSON, with a phase."""
    hist = {"rows": [{"epoch": 0, "batch_idx": 0, "n": 8, "mse": 1.0}], "epoch_rows": [{"epoch": 0}],
            "tests": [{"epoch": 0, "passes": 1}], "best": {"epoch": 0, "score": [1, 0.5]}, "seconds": 3.0,
            "test_seconds": 1.0, "seconds_total": 4.5, "init_done": {"dense0": "regress"}}
    log, epoch, step, phase = log_from_record({"history_json": json.dumps(hist), "epoch": 3, "step": 0,
                                               "phase": "train"}, {"dense0": "other"})
    assert log["best"] == hist["best"] and log["tests"] == hist["tests"] and log["rows"] == hist["rows"]
    assert log["init_done"] == {"dense0": "regress"} and "seconds_total" not in log and epoch == 3


def test_epoch_means_weight_by_batch_size():
    rows = [{"epoch": 0, "batch_idx": 0, "n": 8, "mse": 1.0}, {"epoch": 0, "batch_idx": 1, "n": 2, "mse": 6.0},
            {"epoch": 1, "batch_idx": 0, "n": 8, "mse": 9.0}]
    assert epoch_means(rows, 0) == {"epoch": 0, "batch_idx": "-", "mse": 2.0}
