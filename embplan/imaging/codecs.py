"""Compressed DICOM pixel data: which decoder a transfer syntax needs, and an error that says how to get it.

pydicom decodes the native (uncompressed) syntaxes, Deflate and RLE Lossless itself; JPEG-LS comes with highdicom's
``pyjpegls``. JPEG Lossless (Process 14, selection value 1, ``1.2.840.10008.1.2.4.70`` -- the lossless syntax most
PACS archives store CT in), JPEG baseline/extended and JPEG 2000 need pylibjpeg with its libjpeg and openjpeg
plugins: the optional extra ``embplan[dicom-codecs]`` (``pip install "embplan[dicom-codecs]"``), which the
``test`` extra includes. Without it, :func:`require_decoder` raises an :class:`~embplan.errors.ImagingError` that
names the file, the transfer syntax and the extra -- before any pixel is touched.
"""

from __future__ import annotations

from typing import Any

from ..errors import ImagingError

__all__ = ["CODECS_EXTRA", "require_decoder", "decoder_status", "require_little_endian"]

#: The optional extra that installs the JPEG decoders (pyproject.toml ``[project.optional-dependencies]``).
CODECS_EXTRA = "dicom-codecs"


def decoder_status(transfer_syntax_uid: str) -> tuple[bool, str]:
    """(available, detail) for decoding pixel data in ``transfer_syntax_uid`` with the installed pydicom plugins;
    ``detail`` lists what is missing (pydicom's own words) when nothing can decode it."""
    from pydicom.pixels import get_decoder
    from pydicom.uid import UID

    uid = UID(str(transfer_syntax_uid))
    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        return False, "pydicom has no decoder for this transfer syntax"
    if decoder.is_available:
        return True, ""
    missing = getattr(decoder, "missing_dependencies", []) or []
    return False, "; ".join(str(m) for m in missing) or "no decoder plugin installed"


def require_decoder(ds: Any, src: Any) -> None:
    """Raise ImagingError when the pixel data of ``ds`` (file ``src``) are compressed in a syntax that no installed
    plugin decodes; the message names the transfer syntax (name and UID) and the ``dicom-codecs`` extra."""
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if ts is None or not getattr(ts, "is_compressed", False):
        return
    ok, detail = decoder_status(ts)
    if ok:
        return
    raise ImagingError(
        f"{src}: pixel data in transfer syntax {ts.name} ({ts}) need a decoder that is not installed ({detail}); "
        f'install the optional extra: pip install "embplan[{CODECS_EXTRA}]" (pylibjpeg, pylibjpeg-libjpeg, '
        "pylibjpeg-openjpeg)"
    )


def require_little_endian(ds: Any, src: Any, reader: str) -> None:
    """Raise ImagingError when ``ds`` is in the retired Explicit VR Big Endian syntax and ``reader`` (highdicom)
    cannot parse it; the message says how to convert the file."""
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if ts is not None and not getattr(ts, "is_little_endian", True):
        raise ImagingError(
            f"{src}: transfer syntax {ts.name} ({ts}, retired in PS3.5) is not read by {reader}; convert the file to "
            "little endian first (dcmtk: dcmconv +te IN OUT; gdcm: gdcmconv --explicit IN OUT)"
        )
