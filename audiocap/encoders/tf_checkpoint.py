"""Reading a TensorFlow checkpoint ("tensor bundle": `PREFIX.index` + `PREFIX.data-00000-of-00001`)
without TensorFlow, for the float tensors of a pretrained encoder.

The index is a LevelDB table (tensorflow/core/lib/io/table_format.txt) mapping each tensor's name to
a `BundleEntryProto` (tensorflow/core/protobuf/tensor_bundle.proto): dtype, shape, shard, offset and
size of its little-endian bytes in the data file. Only uncompressed blocks and one data shard are
read, which is what `tf.train.Checkpoint` and `SavedModel` write; anything else is a CheckpointError.
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from audiocap.errors import CheckpointError

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_BYTES = 48
BLOCK_TRAILER_BYTES = 5  # compression type + crc32c
DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 9: np.int64}  # tensorflow/core/framework/types.proto


def _varint(buffer: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buffer[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if byte < 0x80:
            return value, pos


def _protobuf_fields(buffer: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) pairs of a protobuf message: varints as ints, the rest as bytes."""
    fields, pos = [], 0
    while pos < len(buffer):
        key, pos = _varint(buffer, pos)
        wire = key & 7
        if wire == 0:
            value, pos = _varint(buffer, pos)
        elif wire == 2:
            size, pos = _varint(buffer, pos)
            value, pos = buffer[pos: pos + size], pos + size
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, pos = buffer[pos: pos + size], pos + size
        else:
            raise ValueError(f"protobuf wire type {wire}")
        fields.append((key >> 3, value))
    return fields


def _block_entries(table: bytes, offset: int, size: int) -> list[tuple[bytes, bytes]]:
    """The (key, value) entries of one table block; keys share prefixes with the previous key."""
    if table[offset + size] != 0:
        raise ValueError("compressed table block")
    block = table[offset: offset + size]
    n_restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    end, pos, key, entries = len(block) - 4 * (n_restarts + 1), 0, b"", []
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        value_size, pos = _varint(block, pos)
        key = key[:shared] + block[pos: pos + unshared]
        pos += unshared
        entries.append((key, block[pos: pos + value_size]))
        pos += value_size
    return entries


def _index_entries(table: bytes) -> list[tuple[bytes, bytes]]:
    if len(table) < FOOTER_BYTES or struct.unpack_from("<Q", table, len(table) - 8)[0] != TABLE_MAGIC:
        raise ValueError("not a LevelDB table (bad magic number)")
    footer = table[-FOOTER_BYTES:]
    _, pos = _varint(footer, 0)  # metaindex offset
    _, pos = _varint(footer, pos)  # metaindex size
    index_offset, pos = _varint(footer, pos)
    index_size, _ = _varint(footer, pos)
    entries = []
    for _, handle in _block_entries(table, index_offset, index_size):
        offset, pos = _varint(handle, 0)
        size, _ = _varint(handle, pos)
        entries += _block_entries(table, offset, size)
    return entries


def _tensor(entry: bytes, data: bytes) -> np.ndarray | None:
    """The tensor a BundleEntryProto describes, or None if it is not a plain numeric tensor."""
    fields = dict(_protobuf_fields(entry))
    dtype = DTYPES.get(fields.get(1))
    if dtype is None or fields.get(3, 0) != 0 or 7 in fields:  # strings, other shards, partitioned slices
        return None
    dims = [dict(_protobuf_fields(dim)).get(1, 0) for number, dim in _protobuf_fields(fields.get(2, b""))
            if number == 2]
    offset, size = fields.get(4, 0), fields.get(5, 0)
    if offset + size > len(data) or size != int(np.prod(dims, dtype=np.int64)) * np.dtype(dtype).itemsize:
        raise ValueError("a tensor's bytes lie outside the data file")
    return np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<"), count=size // np.dtype(dtype).itemsize,
                         offset=offset).reshape(dims)


def read_tf_checkpoint(prefix: str | Path, fix: str) -> dict[str, np.ndarray]:
    """{name: array} of the numeric tensors in the checkpoint `prefix` (`PREFIX.index` + one data shard).

    `fix` completes error messages (how to get the right files)."""
    index, data = Path(f"{prefix}.index"), Path(f"{prefix}.data-00000-of-00001")
    for path in (index, data):
        if not path.is_file():
            raise CheckpointError(f"{path}: no such TensorFlow checkpoint file; {fix}")
    table, blob = index.read_bytes(), data.read_bytes()
    try:
        tensors = {}
        for key, entry in _index_entries(table):
            if key:  # the empty key holds the bundle's header
                tensor = _tensor(entry, blob)
                if tensor is not None:
                    tensors[key.decode("utf-8")] = tensor
    except (ValueError, IndexError, struct.error, UnicodeDecodeError) as err:
        raise CheckpointError(f"{index}: cannot read it as a TensorFlow checkpoint ({err}); {fix}") from None
    return tensors
