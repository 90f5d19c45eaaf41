"""Filter CNNs (gender, quality, age, glasses), their K-fold training, and the property CNN.

* :mod:`cnn.filter_cnns`: the four nets (``FilterCNN``, crops, layer shapes);
* :mod:`cnn.kfold`: K-fold training with early stopping, success thresholds and retries, logs;
* :mod:`cnn.property_score_cnn`: the property-score CNN.
The stage that uses them is :mod:`stages.filtering` (``run_cnn.py``).
"""
from .filter_cnns import PROPERTIES, FilterCNN, arch_info, crop_box
from .kfold import FoldFailedError, FoldSettings

__all__ = ["PROPERTIES", "FilterCNN", "arch_info", "crop_box", "FoldFailedError", "FoldSettings"]
