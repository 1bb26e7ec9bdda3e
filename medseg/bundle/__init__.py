"""MONAI bundles: the CT organ/lesion bundle template, export of training runs, offline verification."""
