"""vectorfind: groups, top/bottom sets, the vector CSV format and the float64 edit arithmetic."""
import numpy as np
import pandas as pd
import pytest
import torch

from vectorfind.directions import (DirectionSet, apply, parse_vector_csv, stored_vector, unit_float32,
                                   vector_csv_text, vector_file_name)
from vectorfind.groups import (GROUP_ORDER, V9_MEDIANS, Medians, group_counts, group_names, nominal_k, top_bottom,
                               top_k)


def test_group_order_is_the_originals():
    assert GROUP_ORDER == ("hhhh", "hhhl", "hhlh", "hhll", "hlhh", "hlhl", "hllh", "hlll",
                           "lhhh", "lhhl", "lhlh", "lhll", "llhh", "llhl", "lllh", "llll")


def test_group_names_ties_go_high_and_letter_order():
    m = V9_MEDIANS
    scores = {"hair_color": np.array([m.hair_color, m.hair_color - 1e-4, 5.0], np.float32),
              "hair_length": np.array([0.0, 9.0, m.hair_length], np.float32),
              "background_mean": np.array([9.0, 0.0, -9.0], np.float32),
              "hairstyle": np.array([-1.0, 1.0, m.hairstyle], np.float32)}
    # medians taken as float32 values so that a score equal to the median is an exact tie
    names = group_names(scores, Medians(**{k: float(np.float32(v)) for k, v in m.as_dict().items()}))
    assert names.tolist() == ["hlhl", "lhlh", "hhlh"]
    assert group_counts(names)["hlhl"] == 1 and sum(group_counts(names).values()) == 3


def test_medians_rule_and_table_round_trip():
    scores = {p: np.array([0.12344, 0.12346, 1.0, -2.0], np.float32) for p in
              ("hair_color", "hair_length", "background_mean", "hairstyle")}
    med = Medians.from_scores(scores)
    # rounded to 4 dp before the median: median(-2, 0.1234, 0.1235, 1) = 0.12345 -> 0.1235 (unrounded scores would give 0.12345)
    assert med.hair_color == 0.1235 and med.hairstyle == 0.1235
    table = V9_MEDIANS.to_table({"hair_color": -0.1891, "hair_length": 0.3456, "background_mean": 0.4024,
                                 "hairstyle": 0.082})
    assert list(table.columns) == ["value_type", "hair_color", "hair_length", "background_score", "hairstyle"]
    assert Medians.from_table(table) == V9_MEDIANS


def test_top_bottom_stable_sort_and_k():
    assert top_k(4) == 1 and top_k(10) == 2 and top_k(14) == 2 and top_k(1) == 1
    assert nominal_k(4000) == 800 and nominal_k(20000) == 4000
    values = np.array([5, 1, 3, 3, 3, 0, 9, 3, 3, 3, 3], np.float32)
    idx = np.array([1, 2, 3, 4, 7, 8, 9, 10])          # group members in sampling order; scores 1,3,3,3,3,3,3,3
    top, bottom = top_bottom(idx, values, 0.25)         # k = 2
    assert top.tolist() == [2, 3]                       # ties: earliest sampled first in the descending list
    assert bottom.tolist() == [1, 10]                   # last of the descending list: one tie (10) and the min (1)
    one_t, one_b = top_bottom(np.array([6]), values)
    assert one_t.tolist() == one_b.tolist() == [6]


def test_vector_csv_format_exact_header_and_row():
    v = unit_float32(np.arange(1, 6, dtype=np.float64))
    text = vector_csv_text(v)
    lines = text.splitlines()
    assert lines[0] == ",0,1,2,3,4"
    assert lines[1].split(",")[0] == "0" and len(lines) == 2
    back = parse_vector_csv(text)
    assert back.dtype == np.float64
    # float32 text -> float64: close to the float32 value, exact float32 after a cast back
    assert np.array_equal(back.astype(np.float32), v)
    assert np.abs(back - v.astype(np.float64)).max() < 1e-7
    assert np.isclose(np.linalg.norm(back), 1.0, atol=1e-6)
    assert vector_file_name("eyes", "mapping_split2", "hhhl") == "eyes_change_mapping_split2_vector_hhhl.csv"


def test_load_a_file_written_in_the_originals_format(tmp_path):
    """Build the files the way the original's pandas call would, then load and apply them."""
    rng = np.random.default_rng(3)
    dim = 1024
    written = {}
    for p in ("eyes", "mouth", "pose"):
        for g in GROUP_ORDER:
            coef = rng.standard_normal(dim)
            v = np.array(coef, dtype=np.float32)
            v = v / np.linalg.norm(v)
            pd.DataFrame(np.array([v])).to_csv(tmp_path / f"{p}_change_mapping_split2_vector_{g}.csv")
            written[(p, g)] = v
    ds = DirectionSet.load(tmp_path, "mapping_split2", dim=dim)
    assert len(ds.vectors) == 48 and ds.dim == dim
    d = ds.for_group("lllh")
    assert np.array_equal(d["mouth"].astype(np.float32), written[("mouth", "lllh")])
    mid = rng.standard_normal((2, dim)).astype(np.float32)
    edited = apply(mid, {"eyes": 1.2, "mouth": -0.9, "pose": 0.6}, d)
    ref = (mid.astype(np.float64) + 1.2 * d["eyes"] + -0.9 * d["mouth"] + 0.6 * d["pose"]).astype(np.float32)
    assert np.array_equal(edited, ref)
    # save -> same bytes as the original's writer
    out = tmp_path / "out"
    ds.save(out)
    for name in ("pose_change_mapping_split2_vector_hhhh.csv", "eyes_change_mapping_split2_vector_llll.csv"):
        assert (out / name).read_bytes() == (tmp_path / name).read_bytes()


def test_load_errors_name_the_file(tmp_path):
    pd.DataFrame(np.ones((2, 3), np.float32)).to_csv(tmp_path / "eyes_change_w_vector_hhhh.csv")
    with pytest.raises(ValueError, match="eyes_change_w_vector_hhhh.csv.*one data row"):
        DirectionSet.load(tmp_path, "w", properties=("eyes",), groups=("hhhh",))
    with pytest.raises(FileNotFoundError, match="eyes_change_w_vector_hhhl.csv"):
        DirectionSet.load(tmp_path, "w", properties=("eyes",), groups=("hhhl",))
    pd.DataFrame(np.ones((1, 3), np.float32)).to_csv(tmp_path / "mouth_change_w_vector_hhhh.csv", index=False)
    with pytest.raises(ValueError, match="header"):
        DirectionSet.load(tmp_path, "w", properties=("mouth",), groups=("hhhh",))


def test_apply_float64_arithmetic_differs_from_float32_and_keeps_order():
    rng = np.random.default_rng(0)
    dim = 512
    dirs = {p: stored_vector(unit_float32(rng.standard_normal(dim))) for p in ("eyes", "mouth", "pose")}
    mid = (rng.standard_normal((200, dim)) * 3).astype(np.float32)
    al = {"eyes": -1.2, "mouth": 1.8, "pose": -0.6}
    got = apply(mid, al, dirs)
    ref = np.empty_like(mid)
    for i in range(len(mid)):                  # element by element in Python floats (= float64)
        row = [float(x) for x in mid[i]]
        for p in ("eyes", "mouth", "pose"):
            row = [r + al[p] * float(v) for r, v in zip(row, dirs[p])]
        ref[i] = np.array(row, dtype=np.float64).astype(np.float32)
    assert np.array_equal(got, ref)
    f32 = mid + np.float32(al["eyes"]) * dirs["eyes"].astype(np.float32)
    f32 = f32 + np.float32(al["mouth"]) * dirs["mouth"].astype(np.float32)
    f32 = f32 + np.float32(al["pose"]) * dirs["pose"].astype(np.float32)
    assert not np.array_equal(got, f32)        # the float32 path rounds differently somewhere
    # per-row alphas and torch input
    a = np.linspace(-1, 1, 200)
    t = apply(torch.from_numpy(mid), {"mouth": a}, dirs)
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32
    assert np.array_equal(t.numpy(), (mid.astype(np.float64) + a[:, None] * dirs["mouth"]).astype(np.float32))
    with pytest.raises(TypeError):
        apply(mid.astype(np.float64), al, dirs)
