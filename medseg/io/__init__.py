"""Clinical file formats in and out: DICOM series as input volumes, DICOM SEG as output and as evaluation input.

Modules: ``dicom_series`` (discover files at any depth, group by series, the series table),
``dicom_checks`` (when a series is a volume: the checks and their tolerances), ``dicom_volume``
(voxels and the RAS affine; the one LPS-to-RAS map), ``dicom_seg`` (write DICOM SEG),
``dicom_seg_read`` (read DICOM SEG onto a voxel grid), ``dicom_libs`` (pydicom/highdicom on demand,
kept quiet). May import: medseg.utils, medseg.errors. Nothing above (no data, training, inference or CLI).
"""
