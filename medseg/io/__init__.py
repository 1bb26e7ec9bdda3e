"""Clinical file formats in and out: DICOM series as input volumes, DICOM SEG as output and as evaluation input.

May import: medseg.utils, medseg.errors, medseg.data (label names). Nothing above (no training, inference or CLI).
"""
