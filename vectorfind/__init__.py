"""VectorFind-v9 direction algorithms (spec 02 §3–§5, 02a): sampling of mid vectors and property
scores, the 16 groups, the SVM and gradient methods and their mix, the original's direction
file format, the edit, and the case test with the original's output files.

Algorithms only: no stage I/O, no profiles. Generators and judges come in through the
protocols of :mod:`vectorfind.protocols`.

Modules: ``protocols`` (words, MidGenerator, PropertyScorer) · ``sampling`` · ``groups`` ·
``svm`` · ``gradient`` · ``methods`` (svm / gradient / mixed end to end) · ``directions``
(vector CSVs, DirectionSet, ``apply``) · ``cases`` (the case test) · ``files`` (the original's file names
and headers).
"""
