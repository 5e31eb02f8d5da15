"""Writing large HDF5 arrays on several threads: the chunks are filtered (shuffle, deflate, Fletcher-32) here, in a
thread pool, and stored with ``write_direct_chunk`` (issue 16).

libhdf5 runs its filter pipeline on the calling thread and h5py holds the GIL while it does, so a plan file's
arrays (about 600 MB of voxel data on the 1.5 mm phantom) were compressed on one core. This module produces the
bytes libhdf5's own pipeline produces -- the same three filters in the same order, as declared on the dataset --
and lets readers (h5py, h5dump, HDFView, any HDF5 library) decode them with the standard filters:

- shuffle (HDF5 filter 2): byte ``j`` of every element, for ``j`` = 0 .. size-1, one after the other;
- deflate (filter 1): a zlib stream (RFC 1950) at the dataset's level, which is what ``compress2`` writes in
  ``H5Zdeflate.c``; :mod:`zlib` releases the GIL while it compresses, so the pool's threads run in parallel;
- Fletcher-32 (filter 3): ``H5_checksum_fletcher32`` (``H5checksum.c``) of the compressed bytes, appended as 4
  little-endian bytes. That function sums 16-bit big-endian words (an odd last byte is the high byte of a word)
  with end-around-carry folding, which equals the plain sums modulo 65535 written in ``1 .. 65535`` (0 only for
  all-zero input); :func:`fletcher32` computes it so, vectorised.

tests/io/test_h5chunks.py checks chunk for chunk that the bytes equal libhdf5's for float64, float32, int16 and
bool chunks, and that a damaged chunk fails HDF5's own checksum on read.
"""

from __future__ import annotations

import os
import sys
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import h5py
import numpy as np

try:  # h5py's global lock: every call into libhdf5 holds it (libhdf5 is not thread-safe)
    from h5py._objects import phil as _HDF5_LOCK
except ImportError:  # pragma: no cover - every h5py 3.x has it
    import threading

    _HDF5_LOCK = threading.RLock()

__all__ = ["CHUNK_TARGET_BYTES", "ChunkError", "chunk_shape", "decode_chunk", "encode_chunk", "fletcher32", "read_array",
           "write_arrays", "writer_threads"]

#: Target size of one chunk: whole z-planes up to about 1 MiB (a 512 x 512 float64 plane, 2 MiB, is one chunk).
#: Large enough that the per-chunk Python work is negligible (about 50 chunks per array of the 1.5 mm phantom,
#: where h5py's automatic 88 kB chunks made ~1,000), small enough to compress in parallel and to read one plane.
CHUNK_TARGET_BYTES = 1 << 20
#: A chunk is never larger than this: planes bigger than it are split along y.
CHUNK_MAX_BYTES = 4 << 20


def writer_threads() -> int:
    """Threads that compress: the dose engine's thread count (``numba.get_num_threads()``, which ``embplan batch``
    sets per worker) when numba is loaded, else the CPUs this process may use; at most 8."""
    n = 0
    numba = sys.modules.get("numba")
    if numba is not None:
        try:
            n = int(numba.get_num_threads())
        except Exception:  # noqa: BLE001 - a numba without threading layer: fall back to the CPUs
            n = 0
    if n <= 0:
        try:
            n = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):  # pragma: no cover - not Linux
            n = os.cpu_count() or 1
    return max(1, min(8, n))


def chunk_shape(shape: Sequence[int], itemsize: int) -> tuple[int, ...]:
    """Chunks of whole planes (the first axis) adding up to about :data:`CHUNK_TARGET_BYTES`; a plane above
    :data:`CHUNK_MAX_BYTES` is split along the second axis. For 1-D and 2-D arrays: rows likewise."""
    shape = tuple(int(n) for n in shape)
    if not shape or 0 in shape:
        raise ValueError(f"chunk_shape: no chunks for shape {shape}")
    plane = int(np.prod(shape[1:], dtype=np.int64)) * itemsize
    if plane <= CHUNK_MAX_BYTES or len(shape) == 1:
        n0 = max(1, min(shape[0], CHUNK_TARGET_BYTES // max(plane, 1)))
        return (n0, *shape[1:])
    row = int(np.prod(shape[2:], dtype=np.int64)) * itemsize
    n1 = max(1, min(shape[1], CHUNK_TARGET_BYTES // max(row, 1)))
    return (1, n1, *shape[2:])


def fletcher32(data: bytes | memoryview) -> int:
    """HDF5's Fletcher-32 of ``data`` (``H5_checksum_fletcher32``): see the module docstring."""
    raw = memoryview(data).cast("B")
    if len(raw) % 2:
        raw = memoryview(bytes(raw) + b"\0")
    w = np.frombuffer(raw, dtype=">u2").astype(np.int64)  # 16-bit big-endian words
    m = w.size
    if m == 0 or not w.any():
        return 0
    s1 = int(w.sum())
    # sum2 adds the running sum1 after every word: word i (0-based) enters it m - i times, so
    # sum2 = m * s1 - sum(i * w_i); int64 holds sum(i * w_i) for chunks up to 2**21 words (CHUNK_MAX_BYTES)
    # and beyond, in blocks
    t = 0
    for b0 in range(0, m, 1 << 21):
        blk = w[b0:b0 + (1 << 21)]
        t += int(np.dot(blk, np.arange(b0, b0 + blk.size, dtype=np.int64)))
    s2 = m * s1 - t
    return ((1 + (s2 - 1) % 65535) << 16) | (1 + (s1 - 1) % 65535)


def encode_chunk(block: np.ndarray, level: int, *, shuffle: bool = True, checksum: bool = True) -> bytes:
    """The bytes libhdf5 stores for one full chunk ``block`` with shuffle, deflate at ``level`` and Fletcher-32."""
    raw = np.ascontiguousarray(block)
    size = raw.dtype.itemsize
    if shuffle and size > 1:
        body = raw.reshape(-1).view(np.uint8).reshape(-1, size).T.tobytes()
    else:
        body = raw.tobytes()
    z = zlib.compress(body, level)
    return z + fletcher32(z).to_bytes(4, "little") if checksum else z


def _chunks(shape: tuple[int, ...], chunks: tuple[int, ...]) -> Iterator[tuple[int, ...]]:
    """Offsets of every chunk, in C order."""
    grids = np.meshgrid(*[np.arange(0, n, c) for n, c in zip(shape, chunks, strict=True)], indexing="ij")
    yield from zip(*(g.reshape(-1).tolist() for g in grids), strict=True)


def _block(data: np.ndarray, offset: tuple[int, ...], chunks: tuple[int, ...]) -> np.ndarray:
    """The chunk at ``offset``, padded with zeros (HDF5's default fill value) where it passes the array's edge."""
    sl = tuple(slice(o, min(o + c, n)) for o, c, n in zip(offset, chunks, data.shape, strict=True))
    part = data[sl]
    if part.shape == chunks:
        return part
    out = np.zeros(chunks, dtype=data.dtype)
    out[tuple(slice(0, s) for s in part.shape)] = part
    return out


def _write_chunk(dset: h5py.Dataset, offset: tuple[int, ...], payload: bytes) -> None:
    """One direct chunk write under h5py's lock: h5py 3.10 does not take it for the low-level chunk calls, and two
    threads writing plan files at once (``embplan batch`` on thread workers) corrupted libhdf5's state."""
    with _HDF5_LOCK:
        dset.id.write_direct_chunk(offset, payload)


def write_arrays(items: Sequence[tuple[h5py.Group, str, np.ndarray]], level: int, *,
                 threads: int | None = None) -> list[h5py.Dataset]:
    """Create one dataset per ``(parent, name, array)`` (non-empty, at least 1-D; gzip ``level``, shuffle,
    Fletcher-32, chunks of :func:`chunk_shape`) and fill it with chunks encoded on ``threads`` threads (default
    :func:`writer_threads`); the HDF5 calls stay on this thread. Returns the datasets, in order."""
    dsets: list[h5py.Dataset] = []
    jobs: list[tuple[h5py.Dataset, np.ndarray, tuple[int, ...], tuple[int, ...]]] = []
    for parent, name, array in items:
        data = np.ascontiguousarray(array)
        if data.ndim == 0 or data.size == 0:
            raise ValueError(f"write_arrays: {name} is empty or 0-d")
        chunks = chunk_shape(data.shape, data.dtype.itemsize)
        dset = parent.create_dataset(name, shape=data.shape, dtype=data.dtype, chunks=chunks, compression="gzip",
                                     compression_opts=level, shuffle=True, fletcher32=True)
        dsets.append(dset)
        jobs.extend((dset, data, off, chunks) for off in _chunks(data.shape, chunks))

    def encode(job: tuple[Any, np.ndarray, tuple[int, ...], tuple[int, ...]]) -> bytes:
        _, data, off, chunks = job
        return encode_chunk(_block(data, off, chunks), level)

    n = threads or writer_threads()
    if n <= 1:
        for job in jobs:
            _write_chunk(job[0], job[2], encode(job))
        return dsets
    with ThreadPoolExecutor(max_workers=n, thread_name_prefix="embplan-h5") as pool:
        # map keeps the order and runs ahead of the writer; encoded chunks are small (compressed)
        for job, payload in zip(jobs, pool.map(encode, jobs), strict=True):
            _write_chunk(job[0], job[2], payload)
    return dsets


# ------------------------------------------------------------------------------------------------------- reading
#: HDF5 filter ids of the pipeline this module writes, in pipeline order: shuffle, deflate, Fletcher-32.
_PIPELINE = (2, 1, 3)


class ChunkError(ValueError):
    """A chunk that does not decode (checksum, decompression or size); the caller names the dataset."""


def _pipeline_ok(dset: h5py.Dataset) -> bool:
    """Whether ``dset`` is chunked with exactly this module's filters and a native-order numeric dtype, every
    chunk allocated: then :func:`read_array` may decode it itself."""
    if dset.chunks is None or dset.dtype.byteorder == ">" or dset.dtype.kind not in "biuf":
        return False
    with _HDF5_LOCK:
        dcpl = dset.id.get_create_plist()
        ids = tuple(dcpl.get_filter(i)[0] for i in range(dcpl.get_nfilters()))
    if ids != _PIPELINE:
        return False
    expected = 1
    for n, c in zip(dset.shape, dset.chunks, strict=True):
        expected *= -(-n // c)
    with _HDF5_LOCK:
        return int(dset.id.get_num_chunks()) == expected


def decode_chunk(payload: bytes, chunks: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """One chunk of this module's pipeline back to an array of ``chunks`` (checksum checked first, the inflated
    size capped at the chunk's bytes); :class:`ChunkError` when it does not decode."""
    if len(payload) < 5:
        raise ChunkError("chunk shorter than its checksum")
    body, stored = payload[:-4], int.from_bytes(payload[-4:], "little")
    if fletcher32(body) != stored:
        raise ChunkError("Fletcher-32 checksum mismatch")
    size = dtype.itemsize
    nbytes = int(np.prod(chunks, dtype=np.int64)) * size
    d = zlib.decompressobj()
    try:
        raw = d.decompress(body, nbytes)
    except zlib.error as exc:
        raise ChunkError(f"deflate: {exc}") from exc
    if len(raw) != nbytes or d.unconsumed_tail or not d.eof:
        raise ChunkError(f"inflates to other than the chunk's {nbytes} bytes")
    b = np.frombuffer(raw, dtype=np.uint8)
    if size > 1:
        b = b.reshape(size, -1).T.copy()
    out = b.view(dtype).reshape(chunks) if dtype.kind != "b" else (b != 0).reshape(chunks)
    return out


def read_array(dset: h5py.Dataset, pool: ThreadPoolExecutor | None = None) -> np.ndarray:
    """The whole dataset, its chunks decoded on ``pool`` when it has this module's pipeline (any plan file
    embplan writes, and h5py-written gzip + shuffle + Fletcher-32 files), else read by h5py. Raises
    :class:`ChunkError` (decoding) or ``OSError`` (h5py) for a damaged chunk."""
    if pool is None or not _pipeline_ok(dset):
        return np.asarray(dset[()])
    shape, chunks, dtype = tuple(dset.shape), tuple(dset.chunks), np.dtype(dset.dtype)
    out = np.empty(shape, dtype=dtype)
    offsets = list(_chunks(shape, chunks))

    def one(off: tuple[int, ...], payload: bytes) -> None:
        block = decode_chunk(payload, chunks, dtype)
        sl = tuple(slice(o, min(o + c, n)) for o, c, n in zip(off, chunks, shape, strict=True))
        out[sl] = block[tuple(slice(0, s.stop - s.start) for s in sl)]

    futures: list[Any] = []
    for off in offsets:  # the file is read on this thread (h5py), the chunks decoded on the pool meanwhile
        with _HDF5_LOCK:
            mask, payload = dset.id.read_direct_chunk(off)
        if mask != 0:  # a chunk stored with a filter skipped: let libhdf5 decode the dataset
            for fut in futures:
                fut.cancel()
            return np.asarray(dset[()])
        futures.append(pool.submit(one, off, payload))
    for fut in futures:
        fut.result()
    return out
