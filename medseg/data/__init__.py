"""Datasets: the one dataset reader, integrity checks, synthetic data, DICOM, transform pipelines."""
