"""Third-party notices a medseg user cannot act on, kept off the terminal in every process.

MONAI's ``LoadImage`` builds a pydicom reader whenever pydicom is installed (the ``dicom`` extra) and
says, twice per reader and per worker process, that NVIDIA's nvImageCodec is absent; medseg reads
DICOM with highdicom, so the notice means nothing here. Called by the CLI and by the module that
builds the loading transforms, so data-loader and pre-processing worker processes are quiet too.
"""

from __future__ import annotations

import logging
import warnings

__all__ = ["silence_third_party_notices"]


def silence_third_party_notices() -> None:
    """Raise the nvImageCodec plugin's logger to ERROR and ignore its ``UserWarning``; idempotent."""
    logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader", category=UserWarning)
