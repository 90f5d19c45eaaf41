"""Stage-2 filter CNNs (gender, quality, age, glasses), their K-fold training and the stage itself.

* :mod:`cnn.filter_cnns`: the four nets (``FilterCNN``, crops, layer shapes);
* :mod:`cnn.kfold`: K-fold training with early stopping, success thresholds and retries, logs;
* :mod:`cnn.stage2`: ``run_stage2(profile, Stage2Settings(...))`` — validate inputs, train missing
  folds, score the unlabelled images, merge, filter, report (entry point: ``run_cnn.py``).
"""
from .filter_cnns import PROPERTIES, FilterCNN, arch_info, crop_box
from .kfold import FoldFailedError, FoldSettings
from .stage2 import ImageError, LabelFileError, Stage2Settings, run_stage2

__all__ = ["PROPERTIES", "FilterCNN", "arch_info", "crop_box", "FoldFailedError", "FoldSettings",
           "ImageError", "LabelFileError", "Stage2Settings", "run_stage2"]
