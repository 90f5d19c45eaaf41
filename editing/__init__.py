"""One editing API for every way of finding editing directions (issue 19).

A fitted method is an :class:`editing.directions.EditDirections` (one save / load format); one
call, :func:`editing.edit.edit`, applies any of them to (z, label) and returns the images and the
edited mid vectors. Convention for every method: **+α increases the property**.

Why a package beside :mod:`vectorfind` and not inside it: vectorfind is the reproduction of the
original's VectorFind-v9 (its file names, float64 edit arithmetic, group rules, case test) and
is owned by stage 7; the editing API is ours, spans methods that have nothing to do with
VectorFind (InterFaceGAN, SeFa, GANSpace, StyleSpace, the v3 label), and edits in spaces
vectorfind does not know (per-layer w, style coordinates, labels). It sits on the same floor
and uses vectorfind through adapters (:mod:`editing.vectorfind_adapter`), never copying it.

Modules: ``directions`` (the set, its files, conditional projection) · ``edit`` (the one call,
layer-wise and style-space edits) · ``picking`` (choose a component by its correlation with a
property, samples needed) · ``interfacegan`` · ``sefa`` · ``ganspace`` · ``stylespace`` ·
``vectorfind_adapter`` (SVM and gradient) · ``label`` (the v3 label as reference) ·
``calibrate`` (α scale in truth units).

Algorithms only: no stage I/O beyond the direction files, no profiles; generators are the
StyleGAN-family modules of :mod:`stylegan` / :mod:`stylegan_modified` (``mapping``,
``truncation``, ``synthesis``), scorers are callables images -> {property: [N]} or the merged
CNN's [N, 8] array.
"""
