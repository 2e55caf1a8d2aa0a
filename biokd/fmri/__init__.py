"""Resting-state fMRI (ABIDE Preprocessed): ROI time series, connectivity, connectivity models, continual learning.

Submodules import their heavy dependencies (nilearn, torch) lazily; nothing here imports the core's store.
"""
