"""MONAI bundles: the CT organ/lesion bundle template, export of training runs, offline verification.

May import: medseg.training, medseg.inference and everything below them.
"""
