"""Datasets: the one dataset reader (MSD and nnU-Net v2 layouts), integrity checks, synthetic data.

May import: medseg.utils, medseg.transforms, medseg.metrics, medseg.io, medseg.errors.
"""
