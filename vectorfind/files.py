"""The original's VectorFind-v9 output files: names, exact headers and value rules (02a §D, M22–M25).

Frames are built here; ``write_*`` helpers write them atomically with pandas' default float
text (as the original). Per method:

* SVM test: ``test_result.csv``, ``test_statistics.csv``, ``latent_codes_part1.csv`` … (no suffix);
  per case ``test_{i:04d}/case_{i:03d}_{vi:03d}_result.csv``;
* gradient and mixed tests: the same names with the suffix ``_{point}_{n//1000}K``; per case
  ``test_{i:04d}/case_{i:04d}_result.csv``;
* aggregate logs (``test_result/``) with a leading unnamed index column, one row per run.

Value rules: corrs rounded to 4 dp (signed); ``passed`` "O"/"X"; ``sum_abs_corr`` = sum of the
rounded |r|, rounded to 4 dp; statistics means over the rounded corrs, rounded to 4 dp,
``passed_ratio`` unrounded; aggregate ``k`` = int(round(n·ratio)), ``time`` = round(s, 2),
``*_mean_corr`` = abs(round(mean, 4)), ``sum_mean_corr`` = their unrounded float sum; QA rows
have "-" for accuracies / MSEs. Latent codes are rounded to 4 dp.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from pipeline.io import atomic_write_text

from .cases import CaseResult, check_method
from .protocols import CONTROLLED

CASE_COLUMNS = ["pm_idx", "eyes_pm", "mouth_pm", "pose_pm", "eyes_score", "mouth_score", "pose_score"]
RESULT_COLUMNS = {
    "svm": ["case", "vector_no", "passed", "group_name", "eyes_corr", "mouth_corr", "pose_corr", "sum_abs_corr"],
    "gradient": ["case", "passed", "eyes_corr", "mouth_corr", "pose_corr", "sum_abs_corr"],
    "mixed": ["case", "svm_group_name", "passed", "eyes_corr", "mouth_corr", "pose_corr", "sum_abs_corr"],
}
STATISTICS_COLUMNS = ["eyes_corr_mean", "mouth_corr_mean", "pose_corr_mean", "sum_abs_corr_mean", "passed",
                      "passed_ratio"]
CORR_TAIL = ["eyes_mean_corr", "mouth_mean_corr", "pose_mean_corr", "sum_mean_corr"]
AGGREGATE_COLUMNS = {
    "svm": ["n", "k", "time", "svm_eyes_acc", "svm_mouth_acc", "svm_pose_acc"] + CORR_TAIL,
    "gradient": ["n", "time", "nn_eyes_mse", "nn_mouth_mse", "nn_pose_mse"] + CORR_TAIL,
    "mixed": ["n", "k", "time", "nn_eyes_mse", "svm_mouth_acc", "svm_pose_acc"] + CORR_TAIL,
}
REPORT_DIR, QA_REPORT_DIR = "image_generation_report", "final_vector_test_report"
CASE_ROOT = "inference_test_after_training"


# ------------------------------------------------------------------------------- names

def result_suffix(method: str, point: str, n: int) -> str:
    """"" for the SVM writer, ``_{point}_{n//1000}K`` for gradient and mixed."""
    return "" if check_method(method) == "svm" else f"_{point}_{n // 1000}K"


def report_file_names(method: str, point: str, n: int) -> dict:
    s = result_suffix(method, point, n)
    return {"test_result": f"test_result{s}.csv", "test_statistics": f"test_statistics{s}.csv",
            "latent_codes_part1": f"latent_codes_part1{s}.csv", "latent_codes_part2": f"latent_codes_part2{s}.csv",
            "latent_codes_all": f"latent_codes_all{s}.csv"}


def case_folder(case: int) -> str:
    return f"test_{case:04d}"


def case_file_name(method: str, case: int, vector_no: int = 0) -> str:
    if check_method(method) == "svm":
        return f"case_{case:03d}_{vector_no:03d}_result.csv"
    return f"case_{case:04d}_result.csv"


def case_image_name(method: str, case: int, pm_idx: int, vector_no: int = 0) -> str:
    if check_method(method) == "svm":
        return f"case_{case:03d}_{vector_no:03d}_pm_{pm_idx:03d}.jpg"
    return f"case_{case:04d}_pm_{pm_idx:04d}.jpg"


def original_image_name(case: int, vector_no: int = 0) -> str:
    return f"original_case_{case:02d}_{vector_no:02d}.jpg"


def aggregate_file_name(method: str, point: str, final: bool = False, qa: bool = False) -> str:
    """The aggregate log's name: sweeps ``test_result_{svm|gradient}_{point}.csv`` / mixed
    ``test_result_final.csv``; finals ``test_result_true_final.csv`` (mixed) or
    ``test_result_true_final_svm_ms2.csv``; QA runs add ``_qa``."""
    check_method(method)
    if not final and not qa:
        return "test_result_final.csv" if method == "mixed" else f"test_result_{method}_{point}.csv"
    base = "test_result_true_final" if method == "mixed" else f"test_result_true_final_{method}_ms2"
    return base + ("_qa" if qa else "") + ".csv"


# ------------------------------------------------------------------------------- frames

def case_frame(result: CaseResult) -> pd.DataFrame:
    return result.table[CASE_COLUMNS].copy()


def _r4(x: float) -> float:
    return round(float(x), 4)


def result_frame(method: str, results: Sequence[CaseResult]) -> pd.DataFrame:
    rows = []
    for r in results:
        c = {p: _r4(r.corr[p]) for p in CONTROLLED}
        row = {"case": r.case, "passed": "O" if r.passed else "X", **{f"{p}_corr": c[p] for p in CONTROLLED},
               "sum_abs_corr": _r4(sum(abs(c[p]) for p in CONTROLLED))}
        if method == "svm":
            row.update(vector_no=0, group_name=r.group)
        elif method == "mixed":
            row["svm_group_name"] = r.group
        rows.append(row)
    return pd.DataFrame(rows, columns=RESULT_COLUMNS[check_method(method)])


def statistics_frame(results: Sequence[CaseResult]) -> pd.DataFrame:
    c = {p: np.array([_r4(r.corr[p]) for r in results]) for p in CONTROLLED}
    sums = np.array([_r4(sum(abs(c[p][i]) for p in CONTROLLED)) for i in range(len(results))])
    passed = int(sum(r.passed for r in results))
    row = {**{f"{p}_corr_mean": _r4(np.mean(c[p])) for p in CONTROLLED}, "sum_abs_corr_mean": _r4(np.mean(sums)),
           "passed": passed, "passed_ratio": passed / len(results)}
    return pd.DataFrame([row], columns=STATISTICS_COLUMNS)


def latent_frames(z: np.ndarray, label: np.ndarray) -> dict:
    z4, l4 = np.round(np.asarray(z, np.float64), 4), np.round(np.asarray(label, np.float64), 4)
    return {"latent_codes_part1": pd.DataFrame(z4), "latent_codes_part2": pd.DataFrame(l4),
            "latent_codes_all": pd.DataFrame(np.concatenate([z4, l4], axis=1))}


def aggregate_row(method: str, n: int, seconds: float, statistics: pd.DataFrame, *, ratio: float = 0.2,
                  quality: dict | None = None) -> dict:
    """One aggregate-log row. ``quality``: property -> SVM accuracy or NN test MSE (mixed: eyes MSE,
    mouth / pose accuracy); None writes "-" (QA runs)."""
    check_method(method)
    row = {"n": int(n), "time": round(float(seconds), 2)}
    if method in ("svm", "mixed"):
        row["k"] = int(round(n * ratio))
    for col in AGGREGATE_COLUMNS[method][3 if method != "gradient" else 2:-4]:
        prop = col.split("_")[1]
        row[col] = "-" if quality is None else quality[prop]
    means = {p: abs(_r4(statistics[f"{p}_corr_mean"].iloc[0])) for p in CONTROLLED}
    row.update({f"{p}_mean_corr": means[p] for p in CONTROLLED})
    row["sum_mean_corr"] = means["eyes"] + means["mouth"] + means["pose"]
    return {c: row[c] for c in AGGREGATE_COLUMNS[method]}


# ------------------------------------------------------------------------------- writers

def _write(path: Path, df: pd.DataFrame, index: bool) -> Path:
    atomic_write_text(path, df.to_csv(index=index, lineterminator="\n"))
    return path


def write_case(case_root: str | os.PathLike, method: str, result: CaseResult) -> Path:
    """``{case_root}/test_{i:04d}/case_…_result.csv`` (no index)."""
    path = Path(case_root) / case_folder(result.case) / case_file_name(method, result.case)
    return _write(path, case_frame(result), index=False)


def write_test_report(folder: str | os.PathLike, method: str, point: str, n: int,
                      results: Sequence[CaseResult]) -> dict:
    """test_result, test_statistics and the three latent-code files; returns name -> path."""
    names = report_file_names(method, point, n)
    z = np.stack([r.z for r in results])
    label = np.stack([r.label for r in results])
    frames = {"test_result": (result_frame(method, results), False),
              "test_statistics": (statistics_frame(results), True),
              **{k: (v, False) for k, v in latent_frames(z, label).items()}}
    return {k: _write(Path(folder) / names[k], df, idx) for k, (df, idx) in frames.items()}


def append_aggregate(path: str | os.PathLike, method: str, row: dict) -> pd.DataFrame:
    """Append one row to an aggregate log (created with its header if absent; leading index)."""
    path = Path(path)
    new = pd.DataFrame([row], columns=AGGREGATE_COLUMNS[check_method(method)])
    if path.exists():
        old = pd.read_csv(path, index_col=0)
        if list(old.columns) != AGGREGATE_COLUMNS[method]:
            raise ValueError(f"{path}: columns {list(old.columns)} are not the {method} log's "
                             f"{AGGREGATE_COLUMNS[method]}")
        new = pd.concat([old, new], ignore_index=True)
    _write(path, new, index=True)
    return new
