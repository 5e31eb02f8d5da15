"""A small JPEG Lossless encoder (ITU-T T.81 Annex H, process 14, first-order prediction = selection value 1) for the
tests: DICOM transfer syntax 1.2.840.10008.1.2.4.70, the usual lossless syntax of PACS archives. pydicom 3 has no
encoder for it; the tests decode what this writes with pylibjpeg-libjpeg (an independent decoder) and compare.

One component, precision 8..16 bits, point transform 0, one Huffman table in which each of the 17 difference
categories (SSSS 0..16) has a 5-bit code (T.81 H.1.2.2: category 16 carries no extra bits).
"""

from __future__ import annotations

import numpy as np

JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload


def encode_frame(pixels: np.ndarray, precision: int = 16) -> bytes:
    """One grayscale frame (rows, cols) of unsigned integers < 2**precision as a JPEG Lossless SV1 codestream."""
    px = np.asarray(pixels)
    if px.ndim != 2 or px.min() < 0 or px.max() >= 2**precision:
        raise ValueError("pixels: a 2-D array of unsigned values below 2**precision")
    rows, cols = px.shape
    x = px.astype(np.int64)
    pred = np.empty_like(x)
    pred[0, 0] = 1 << (precision - 1)  # T.81 H.1.1: first sample of the scan
    pred[0, 1:] = x[0, :-1]  # first row: the sample to the left
    pred[1:, 0] = x[:-1, 0]  # first column: the sample above
    pred[1:, 1:] = x[1:, :-1]  # selection value 1: Ra (left)
    diff = (x - pred) % 65536  # T.81 H.1.2.1: modulo 2**16
    diff = np.where(diff >= 32768, diff - 65536, diff)  # -32767..32768
    mag = np.abs(diff)
    ssss = np.zeros_like(mag)
    nz = mag > 0
    ssss[nz] = np.floor(np.log2(mag[nz])).astype(np.int64) + 1
    extra = np.where(diff >= 0, diff, diff + (1 << ssss) - 1) & ((1 << ssss) - 1)
    extra = np.where(ssss == 16, 0, extra)
    nbits = np.where(ssss == 16, 0, ssss)
    out = bytearray()
    acc, n = 0, 0
    for s, e, b in zip(ssss.ravel().tolist(), extra.ravel().tolist(), nbits.ravel().tolist(), strict=True):
        acc = (acc << (5 + b)) | (s << b) | e
        n += 5 + b
        while n >= 8:
            n -= 8
            byte = (acc >> n) & 0xFF
            out.append(byte)
            if byte == 0xFF:
                out.append(0x00)  # byte stuffing
        acc &= (1 << n) - 1
    if n:
        byte = ((acc << (8 - n)) | ((1 << (8 - n)) - 1)) & 0xFF  # pad with 1-bits
        out.append(byte)
        if byte == 0xFF:
            out.append(0x00)
    bits = [0] * 16
    bits[4] = 17  # 17 codes of length 5
    dht = bytes([0x00]) + bytes(bits) + bytes(range(17))
    sof = bytes([precision]) + rows.to_bytes(2, "big") + cols.to_bytes(2, "big") + bytes([1, 1, 0x11, 0])
    sos = bytes([1, 1, 0x00, 1, 0, 0x00])  # Ns=1, C1 tables 0/0, Ss=1 (predictor 1), Se=0, Ah/Al=0
    return b"\xff\xd8" + _segment(0xC3, sof) + _segment(0xC4, dht) + _segment(0xDA, sos) + bytes(out) + b"\xff\xd9"


def compress_dataset(ds, precision: int | None = None) -> None:
    """Replace the native (unsigned, 16-bit) Pixel Data of ``ds`` by JPEG Lossless SV1 frames, in place."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import UID

    frames = int(ds.get("NumberOfFrames", 1) or 1)
    arr = np.frombuffer(ds.PixelData, dtype="<u2").reshape(frames, ds.Rows, ds.Columns)
    prec = precision or int(ds.BitsStored)
    ds.PixelData = encapsulate([encode_frame(f, prec) for f in arr])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = UID(JPEG_LOSSLESS_SV1)
