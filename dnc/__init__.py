"""DNC Stack: train, export and serve Deep Nearest Centroid vision models, under one importable name.

The layers keep their folders at the top of the repository (core/, training/, export/, serving/, clients/);
they install as `dnc.core`, `dnc.training`, `dnc.export`, `dnc.serving` and `dnc.clients` (pyproject.toml
maps each), so nothing of the project takes a generic top-level name such as `training` in site-packages.
Imports flow one way along the data: core <- training <- export <- serving <- clients; core/ needs no torch.
"""
