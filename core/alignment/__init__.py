"""Stage 1 of M3FM, MultiMedCLIP: one embedding space for images and reports of every language.

:mod:`~m3fm.alignment.model` holds the towers, :mod:`~m3fm.alignment.losses` the contrastive and
pivot terms, :mod:`~m3fm.alignment.data` the training pairs and batch plan,
:mod:`~m3fm.alignment.task` the task the generic training loop runs, and
:mod:`~m3fm.alignment.retrieval` the evaluation.
"""
