"""Clinical file formats in and out: DICOM series as input volumes, DICOM SEG as output and as evaluation input.

May import: medseg.utils, medseg.errors. Nothing above (no dataset reader, training, inference or CLI).
"""
