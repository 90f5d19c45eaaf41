"""What the face editor edits with: the generators, the direction sets and the judges of a profile.

The editor writes no editing code: every image comes from :func:`editing.edit.edit` with an
:class:`editing.directions.EditDirections` set. This module only finds the sets and loads them.

Choices (one per method and generator), found at start:

* ``v3_label``: the shipped (or the data root's) FineTune-v3 with the label as control
  (:func:`editing.label.label_directions`; α in label units);
* ``sefa``: SeFa on the v9 generator (no data: fitted when first chosen on ``sefa_pick`` samples
  scored by the fit judge, then calibrated on 4 cases by the truth judge, :mod:`editing.calibrate`);
* ``board:<method>``: every direction set of a leaderboard folder (``<data root>/leaderboard/methods/
  <method>/directions``, written by ``run_direction_leaderboard.py``; its α scale is the board's);
* ``vectorfind:<run>``: every stage-7 run (``<data root>/stage7/runs/<run>``) with SVM vectors
  (``property_score_vectors/``) or gradient MLPs (``models/``): the adapters of
  :mod:`editing.vectorfind_adapter`; α = ±1 is the largest step of stage 7's α grid (times its α scale).

The v9 generator is the data root's stage-6 output, else v9 made from the shipped FineTune-v1
(as stage 7's ``shipped-v1``). Judges: the independent evaluator (synthface) and the property CNN.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from editing.calibrate import calibrate
from editing.directions import MANIFEST, W_SPACES, EditDirections
from editing.edit import edit, render
from editing.label import label_directions
from editing.sefa import fit_sefa
from editing.vectorfind_adapter import case_groups, from_direction_set, from_nets
from pipeline.checkpoint import read_checkpoint
from pipeline.io import InputError
from pipeline.shipped import full_state
from stylegan.sampling import latent_z
from stylegan_modified.loading import load_generator as load_conditional
from vectorfind.cases import ALPHA_GRIDS
from vectorfind.directions import DirectionSet
from vectorfind.gradient import GradientNets
from vectorfind.groups import Medians
from vectorfind.protocols import CONTROLLED

from stages.bases import base_generator_state, build_configs
from stages.leaderboard import EDIT_SET
from stages.vectorfind import NN_FILE
from stages.vectorfind_inputs import SHIPPED_V1, build_scorers
from stages.vectorfind_inputs import load_generator as load_v9

DEFAULT_V9 = "stage6/v9/generator.pth"   # the stage-6 run's output; when absent: shipped-v1 (a note says so)
STAGE1_SEED = 0            # seed n = the z of stage-1 image n (stage 1's default seed)
CALIBRATION_CASES = 4
CONDITIONAL_SUFFIX = "_conditional"
TARGET_STDS = 1.5          # α = ±1 moves the property by this many stds of the truth judge (as the board)


@dataclass
class Choice:
    key: str                   # "v3_label", "sefa", "board:interfacegan", "vectorfind:svm_w_n4000_x1.5"
    generator: str             # "v3" or "v9"
    title: str
    source: str                # where the set comes from
    loader: object = None      # () -> EditDirections
    ds: EditDirections | None = None
    groups_from: str | None = None    # judge whose scores give the SVM group of a case
    medians: Medians | None = None
    note: str = ""
    conditional: bool = False   # always edits conditionally (a board's *_conditional row)

    def describe(self, num_layers: int) -> dict:
        ds = self.ds
        layered = ds is not None and (ds.space in W_SPACES or ds.space == "gradient")
        return {"key": self.key, "generator": self.generator, "title": self.title, "source": self.source,
                "loaded": ds is not None, "layers": layered, "num_layers": num_layers,
                "default_layers": [list(ds.layers[p]) if p in ds.layers else [0, num_layers] for p in CONTROLLED]
                if ds is not None else None,
                "conditional": bool(ds is not None and ds.space != "label" and not self.conditional),
                "space": ds.space if ds is not None else None, "note": self.note,
                "properties": list(ds.properties) if ds is not None else list(CONTROLLED)}


@dataclass
class Rendered:
    images: torch.Tensor
    z: np.ndarray
    label: np.ndarray          # the generator's input label (v3: the edited label)
    base_label: np.ndarray
    group: str | None
    measured: dict             # judge -> {property: value}
    ms: dict = field(default_factory=dict)


class EditorModels:
    """Loads lazily, renders one image at a time (a lock: the generators are shared, and StyleSpace
    edits hook the synthesis modules while they run)."""

    def __init__(self, profile, *, v9_source: str = DEFAULT_V9, board_dir: str | None = None,
                 stage7_dir: str | None = None, judges=("evaluator", "property_cnn"), sefa_pick: int = 64,
                 seed: int = 0):
        self.profile, self.seed, self.sefa_pick = profile, int(seed), int(sefa_pick)
        self.gcfg, _ = build_configs(profile)
        self.lock = threading.RLock()
        self._gens: dict = {}
        self._groups: dict = {}
        self.notes: list[str] = []
        path = Path(v9_source)
        path = path if path.is_absolute() else profile.data_root / path
        if v9_source not in (SHIPPED_V1, DEFAULT_V9) and not path.is_file():
            raise InputError(f"v9 generator {path} not found (give a v9 checkpoint, or {SHIPPED_V1})")
        self.v9_source = v9_source if v9_source == SHIPPED_V1 or path.is_file() else SHIPPED_V1
        if self.v9_source != v9_source:
            self.notes.append(f"v9: {path} not found, using v9 made from the shipped FineTune-v1 (shipped-v1)")
        self.judges, self.judge_notes = {}, {}
        # the property CNN has no hairstyle output (only SVM groups need it): from the evaluator on a
        # world, else from stages 3-4's parser
        hairstyle = "evaluator" if "world_seed" in profile else "parsing"
        for name in judges:
            try:
                self.judges[name] = build_scorers(profile, [name], hairstyle_judge=hairstyle)[0][name]
            except Exception as exc:               # noqa: BLE001 - a missing judge is shown, not fatal
                self.judge_notes[name] = str(exc)
        if not self.judges:
            raise InputError(f"no judge available for profile {profile.name}: {self.judge_notes}")
        self.truth = "evaluator" if "evaluator" in self.judges else next(iter(self.judges))
        self.choices = self._find_choices(Path(board_dir) if board_dir else profile.data_root / "leaderboard",
                                          Path(stage7_dir) if stage7_dir else profile.data_root / "stage7" / "runs")

    # ------------------------------------------------------------------ generators
    @property
    def z_dim(self) -> int:
        return int(self.gcfg.z_dim)

    @property
    def num_layers(self) -> int:
        return int(self.gcfg.num_layers)

    def generator(self, which: str):
        with self.lock:
            if which not in self._gens:
                self._gens[which] = self._load_generator(which)
            return self._gens[which]

    def _load_generator(self, which: str):
        if which == "v9":
            return load_v9(self.profile, self.v9_source)[0].g.eval().requires_grad_(False)
        local = self.profile.data_root / "stage5" / "v3" / "generator.pth"
        if local.is_file():
            return load_conditional(local, self.gcfg, "v3").eval().requires_grad_(False)
        shipped = self.profile.path(self.profile.get("stage5", {}).get("shipped", "")) if self.profile.get("stage5") else None
        partial = Path(shipped) / "v3" / "generator.pth.partial.pth" if shipped else None
        if partial is None or not partial.is_file():
            raise InputError(f"no FineTune-v3 generator: {local} not found and no shipped v3 (stage5.shipped)")
        base, _ = base_generator_state(self.profile)
        state = full_state(read_checkpoint(partial), base, "FineTune-v3 generator")
        return load_conditional(state, self.gcfg, "v3").eval().requires_grad_(False)

    def generator_source(self, which: str) -> str:
        if which == "v9":
            return self.v9_source
        local = self.profile.data_root / "stage5" / "v3" / "generator.pth"
        return str(local) if local.is_file() else "shipped FineTune-v3 (stage5.shipped/v3)"

    # ------------------------------------------------------------------ choices
    def _find_choices(self, board: Path, stage7: Path) -> dict:
        out = {}
        has_v3 = (self.profile.data_root / "stage5" / "v3" / "generator.pth").is_file() or bool(
            self.profile.get("stage5", {}).get("shipped"))
        if has_v3:
            out["v3_label"] = Choice("v3_label", "v3", "v3 label (FineTune-v3)", "the generator's own label",
                                     loader=lambda: label_directions(self.generator("v3").spec.label_names))
        out["sefa"] = Choice("sefa", "v9", "SeFa (v9, fitted here)", f"closed form on the v9 generator; picked on "
                             f"{self.sefa_pick} samples", loader=self._fit_sefa)
        for mdir in sorted(board.glob("methods/*")) if board.is_dir() else []:
            c = self._board_choice(board, mdir)
            if c is not None:
                out[c.key] = c
        for run in sorted(stage7.iterdir()) if stage7.is_dir() else []:
            c = self._stage7_choice(run)
            if c is not None:
                out[c.key] = c
        return out

    def _board_choice(self, board: Path, mdir: Path) -> Choice | None:
        """A finished board method: its calibrated set ``edit_set/`` (the set and α scales the row
        edited with); for boards written before that folder existed, the fitted ``directions/`` (a
        ``*_conditional`` row edits with its base method's set) and the scales in ``result.json``."""
        name = mdir.name
        conditional = name.endswith(CONDITIONAL_SUFFIX)
        folder = board / "methods" / (name[:-len(CONDITIONAL_SUFFIX)] if conditional else name) / "directions"
        if name == "v3_label" or not (folder / MANIFEST).is_file():
            return None                                 # v3 label: offered once, on FineTune-v3

        # the set exactly as the row edited (α scales included); boards from before edit_set/ existed:
        # the fitted set with the scales of result.json
        source = mdir / EDIT_SET if (mdir / EDIT_SET / MANIFEST).is_file() else folder

        def load():
            ds = EditDirections.load(source)
            if source == folder:
                try:
                    ds.scales.update({p: float(v) for p, v in
                                      json.loads((mdir / "result.json").read_text())["scales"].items()})
                except (OSError, ValueError, KeyError):
                    pass                                # an unfinished board row: the set's own scales (or 1)
            return ds
        c = Choice(f"board:{name}", "v9", f"{name} (leaderboard)", str(source), loader=load,
                   note=self._board_note(board), conditional=conditional)
        if name.startswith("vectorfind_svm"):
            c.groups_from = self._board_fit_judge(board)
        return c

    def _board_note(self, board: Path) -> str:
        try:
            gen = json.loads((board / "metrics.json").read_text())["generator"]
        except (OSError, ValueError, KeyError):
            return ""
        return f"fitted on {gen}"

    def _board_fit_judge(self, board: Path) -> str:
        try:
            return json.loads((board / "metrics.json").read_text())["settings"]["fit_judge"]
        except (OSError, ValueError, KeyError):
            return self.truth

    def _stage7_choice(self, run: Path) -> Choice | None:
        try:
            m = json.loads((run / "metrics.json").read_text())
        except (OSError, ValueError):
            return None
        method, point = m.get("method"), m.get("point")
        if method not in ("svm", "gradient"):
            return None                                # mixed: an SVM and a gradient set at once (not offered)
        grid = ALPHA_GRIDS[method]
        scale = {p: float(m.get("alpha_scale", 1.0)) * max(abs(a) for a in grid[p]) for p in CONTROLLED}

        def load():
            if method == "svm":
                ds = from_direction_set(DirectionSet.load(run / "property_score_vectors", point), {"run": str(run)})
            else:
                nets = GradientNets.from_state_dicts(point, {p: torch.load(run / "models" / NN_FILE.format(p=p),
                                                                           weights_only=True) for p in CONTROLLED})
                ds = from_nets(nets, {"run": str(run)})
            ds.scales = dict(scale)
            return ds
        c = Choice(f"vectorfind:{run.name}", "v9", f"VectorFind {method} at {point}, n = {m.get('n')} (stage 7)",
                   str(run), loader=load, note=f"fitted on {m.get('generator', {}).get('source', '?')}")
        if method == "svm":
            c.groups_from = m.get("fit_judge", "property_cnn")
            c.medians = Medians(**m["medians"]) if m.get("medians") else None
        return c

    def _fit_sefa(self) -> EditDirections:
        g = self.generator("v9")
        fit_judge = self.judges.get("property_cnn") or self.judges[self.truth]
        ds = fit_sefa(g, fit_judge, n_pick=self.sefa_pick, seed=self.seed)
        z = latent_z(range(CALIBRATION_CASES), self.z_dim, 9303)
        label = np.zeros((len(z), g.spec.label_dim), np.float32)
        truth = self.judges[self.truth]
        zs = latent_z(range(32), self.z_dim, 9304)          # the truth's spread of each property
        base = truth(render(g, zs, np.zeros((len(zs), g.spec.label_dim), np.float32)))
        for p in ds.properties:
            calibrate(g, ds, truth, z, label, target=TARGET_STDS * float(np.std(base[p])), properties=(p,))
        return ds

    def choice(self, key: str) -> Choice:
        c = self.choices[key]
        with self.lock:
            if c.ds is None:
                t0 = time.perf_counter()
                c.ds = c.loader()
                c.load_seconds = time.perf_counter() - t0
            if c.groups_from and c.medians is None and c.ds.meta.get("medians"):
                c.medians = Medians(**c.ds.meta["medians"])
        return c

    # ------------------------------------------------------------------ one image
    def z_of_seed(self, seed: int) -> np.ndarray:
        return latent_z([int(seed)], self.z_dim, STAGE1_SEED)[0]

    def render(self, key: str, z: np.ndarray, base_label: np.ndarray | None, alphas: dict, layers=None,
               conditional: bool = False) -> Rendered:
        c = self.choice(key)
        g = self.generator(c.generator)
        z = np.asarray(z, np.float32).reshape(1, -1)
        label = (np.zeros((1, g.spec.label_dim), np.float32) if base_label is None
                 else np.asarray(base_label, np.float32).reshape(1, -1))
        ms = {}
        with self.lock:
            t0 = time.perf_counter()
            group = None
            if c.groups_from and c.medians is not None:      # the case's group, read from its unedited image
                key_ = (key, z.tobytes(), label.tobytes())
                if key_ not in self._groups:
                    scorer = self.judges.get(c.groups_from) or self.judges[self.truth]
                    if len(self._groups) > 256:
                        self._groups.clear()
                    self._groups[key_] = str(case_groups(scorer(render(g, z, label)), c.medians)[0])
                group = self._groups[key_]
            kw = {"layers": {p: tuple(r) for p, r in layers.items()}} if layers else {}
            res = edit(g, z, label, {p: float(a) for p, a in alphas.items() if p in c.ds.properties}, c.ds,
                       conditional=bool((conditional or c.conditional) and c.ds.space != "label"), group=group, **kw)
            t1 = time.perf_counter()
            measured = {}
            for name, judge in self.judges.items():
                vals = judge.judge.measure(res.images)
                measured[name] = {p: float(np.asarray(vals[p]).reshape(-1)[0]) for p in CONTROLLED}
            t2 = time.perf_counter()
        ms.update(edit=1000 * (t1 - t0), measure=1000 * (t2 - t1))
        used = res.mid.numpy() if c.ds.space == "label" else label
        return Rendered(res.images, z[0], np.asarray(used, np.float32)[0], label[0], group, measured, ms)
