"""The plan writer's own chunk encoder (issue 16) against libhdf5's filter pipeline, byte for byte."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from embplan.io import h5chunks as H

SHAPE = (30, 41, 57)
CHUNKS = (8, 16, 16)


def _data(kind: str) -> np.ndarray:
    rng = np.random.default_rng(11)
    return {
        "float64": lambda: rng.gamma(2.0, 30.0, SHAPE),
        "float32": lambda: rng.random(SHAPE).astype(np.float32),
        "int16": lambda: rng.integers(-1000, 3000, SHAPE).astype(np.int16),
        "bool": lambda: rng.random(SHAPE) < 0.3,
        "zeros": lambda: np.zeros(SHAPE),
        # all-ones bytes: every 16-bit word is 0xFFFF, so both Fletcher sums are multiples of 65535
        "ones_bytes": lambda: np.full(SHAPE, -1, dtype=np.int64).view(np.float64),
    }[kind]()


@pytest.mark.parametrize("kind", ["float64", "float32", "int16", "bool", "zeros", "ones_bytes"])
def test_chunks_equal_libhdf5_byte_for_byte(tmp_path, kind):
    """Every chunk libhdf5 writes (gzip 1, shuffle, Fletcher-32) is the chunk encode_chunk makes, and libhdf5's
    stored checksum is fletcher32 of the compressed bytes (odd lengths included)."""
    a = _data(kind)
    with h5py.File(tmp_path / "ref.h5", "w") as f:
        d = f.create_dataset("a", data=a, chunks=CHUNKS, compression="gzip", compression_opts=1, shuffle=True,
                             fletcher32=True)
        odd = 0
        for off in H._chunks(a.shape, CHUNKS):
            mask, ref = d.id.read_direct_chunk(off)
            assert mask == 0
            assert H.fletcher32(ref[:-4]) == int.from_bytes(ref[-4:], "little")
            assert H.encode_chunk(H._block(a, off, CHUNKS), 1) == ref
            odd += (len(ref) - 4) % 2
    if kind in ("float64", "float32"):
        assert odd > 0  # the odd-length branch was exercised


@pytest.mark.parametrize("kind", ["float64", "bool", "int16"])
@pytest.mark.parametrize("threads", [1, 3])
def test_write_arrays_reads_back_with_the_standard_filters(tmp_path, kind, threads):
    a = _data(kind)
    with h5py.File(tmp_path / "w.h5", "w") as f:
        (d,) = H.write_arrays([(f, "a", a)], 1, threads=threads)
        assert d.compression == "gzip" and d.shuffle and d.fletcher32
    with h5py.File(tmp_path / "w.h5", "r") as f:
        got = f["a"][...]
    assert got.dtype == a.dtype and np.array_equal(got, a)


def test_a_damaged_chunk_fails_hdf5s_own_checksum(tmp_path):
    a = _data("float64")
    path = tmp_path / "w.h5"
    with h5py.File(path, "w") as f:
        (d,) = H.write_arrays([(f, "a", a)], 1, threads=2)
        offset = d.id.get_chunk_info(0).byte_offset
    raw = bytearray(path.read_bytes())
    raw[offset + 100] ^= 0x01
    path.write_bytes(bytes(raw))
    with h5py.File(path, "r") as f, pytest.raises(OSError):
        f["a"][...]


@pytest.mark.parametrize(("shape", "itemsize", "expected"), [
    ((200, 200, 267), 8, (2, 200, 267)),  # ~1 MiB of whole planes
    ((300, 512, 512), 8, (1, 512, 512)),  # one 2 MiB plane (under the 4 MiB ceiling)
    ((10, 1024, 1024), 8, (1, 128, 1024)),  # an 8 MiB plane: split along y into 1 MiB
    ((5, 7, 9), 1, (5, 7, 9)),  # small: one chunk
    ((100,), 8, (100,)),
])
def test_chunk_shape(shape, itemsize, expected):
    got = H.chunk_shape(shape, itemsize)
    assert got == expected
    assert int(np.prod(got)) * itemsize <= H.CHUNK_MAX_BYTES


# ------------------------------------------------------------------------------------------------------ reading
@pytest.mark.parametrize("kind", ["float64", "float32", "int16", "bool", "ones_bytes"])
@pytest.mark.parametrize("writer", ["h5py", "embplan"])
def test_read_array_decodes_what_either_writer_wrote(tmp_path, kind, writer):
    """Plan files of earlier versions were written by h5py (88 kB chunks), current ones by write_arrays: the
    pool decoder reads both, equal to h5py's own read, edge chunks included."""
    from concurrent.futures import ThreadPoolExecutor

    a = _data(kind)
    with h5py.File(tmp_path / "w.h5", "w") as f:
        if writer == "h5py":
            f.create_dataset("a", data=a, chunks=CHUNKS, compression="gzip", compression_opts=1, shuffle=True,
                             fletcher32=True)
        else:
            H.write_arrays([(f, "a", a)], 1, threads=2)
    with h5py.File(tmp_path / "w.h5", "r") as f, ThreadPoolExecutor(2) as pool:
        assert H._pipeline_ok(f["a"])
        got = H.read_array(f["a"], pool)
        ref = f["a"][()]
    assert got.dtype == ref.dtype == a.dtype
    assert np.array_equal(got, ref, equal_nan=kind == "ones_bytes") and got.tobytes() == a.tobytes()


def test_read_array_leaves_other_pipelines_to_hdf5(tmp_path):
    a = _data("float64")
    with h5py.File(tmp_path / "w.h5", "w") as f:
        f.create_dataset("gzip_only", data=a, chunks=CHUNKS, compression="gzip")
        f.create_dataset("contiguous", data=a)
    from concurrent.futures import ThreadPoolExecutor

    with h5py.File(tmp_path / "w.h5", "r") as f, ThreadPoolExecutor(2) as pool:
        for name in ("gzip_only", "contiguous"):
            assert not H._pipeline_ok(f[name])
            assert np.array_equal(H.read_array(f[name], pool), a)


@pytest.mark.parametrize("damage", ["checksum", "body", "short"])
def test_decode_chunk_refuses_a_damaged_chunk(damage):
    block = _data("float64")[:8, :16, :16].copy()
    payload = bytearray(H.encode_chunk(block, 1))
    if damage == "checksum":
        payload[-1] ^= 0xFF
    elif damage == "body":
        payload[20] ^= 0x10
    else:
        payload = payload[:3]
    with pytest.raises(H.ChunkError):
        H.decode_chunk(bytes(payload), (8, 16, 16), np.dtype(np.float64))
    # a valid deflate stream of the wrong size (with a valid checksum) is refused too
    import zlib

    z = zlib.compress(b"\0" * 100, 1)
    with pytest.raises(H.ChunkError, match="inflates"):
        H.decode_chunk(z + H.fletcher32(z).to_bytes(4, "little"), (8, 16, 16), np.dtype(np.float64))


def test_writer_threads_follow_the_dose_engines_thread_count():
    """embplan batch gives each worker a share of the CPUs through numba's thread count; the writer uses it."""
    import numba

    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        assert H.writer_threads() == 1
    finally:
        numba.set_num_threads(before)
    assert H.writer_threads() == min(8, before)


def test_files_written_and_read_from_several_threads_at_once(tmp_path):
    """embplan batch on thread workers writes plan files from several threads at once: every direct chunk call
    holds h5py's lock (h5py 3.10 did not take it for them; libhdf5 is not thread-safe and its state was corrupted:
    'ring type mismatch', failed writes, a segfault)."""
    from concurrent.futures import ThreadPoolExecutor

    arrays = [_data(k) for k in ("float64", "float32", "int16", "bool")]

    def one(i: int) -> bool:
        path = tmp_path / f"t{i}.h5"
        with h5py.File(path, "w") as f:
            H.write_arrays([(f, f"a{j}", a) for j, a in enumerate(arrays)], 1, threads=2)
        with h5py.File(path, "r") as f, ThreadPoolExecutor(2) as pool:
            return all(np.array_equal(H.read_array(f[f"a{j}"], pool), a) for j, a in enumerate(arrays))

    with ThreadPoolExecutor(4) as workers:
        assert all(workers.map(one, range(16)))
