"""Feast's Redis online-store format, encoded column-wise from Arrow (no per-row Python objects).

Feast's ``RedisOnlineStore`` stores one hash per entity key (see Feast's ``docs/specs/online_store_format.md``):

* key: ``serialize_entity_key(entity_key, version=3) + project`` (``feast.infra.key_encoding_utils``);
* field ``mmh3("<feature view>:<feature>")`` (4 bytes): the serialized ``ValueProto`` of the feature
  (empty bytes for a null, and for a NaN float, as Feast writes them);
* field ``_ts:<feature view>``: the serialized ``google.protobuf.Timestamp`` of the row's event time.

Feast builds those bytes one protobuf message at a time. The functions here build the same bytes for a whole Arrow
column at once with numpy and Arrow compute, and :func:`hset_commands` lays out the Redis protocol (RESP) of a
whole pipeline in one buffer. ``tests/test_offline_store.py`` checks every encoder byte for byte against Feast's.
Types without a vectorised encoder fall back to Feast's own per-value conversion, so any view can be written.
"""

from __future__ import annotations

import struct
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from feast.value_type import ValueType

_MAX_VARINT = 10  # bytes of a 64-bit varint


def _binary(data: np.ndarray, lengths: np.ndarray) -> pa.BinaryArray:
    """A binary array from the concatenated bytes of its values and their lengths."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.BinaryArray.from_buffers(pa.binary(), len(lengths),
                                       [None, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(data))])


def _rows(matrix: np.ndarray, lengths: np.ndarray) -> pa.BinaryArray:
    """Row ``i`` of ``matrix`` cut to ``lengths[i]`` bytes, as a binary array."""
    keep = np.arange(matrix.shape[1]) < lengths[:, None]
    return _binary(matrix[keep], lengths)


def varints(values: np.ndarray, tag: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Protobuf varints of int64 values (two's complement, as protobuf encodes negative ints) as a byte matrix.

    Returns ``(matrix, lengths)``: row ``i`` holds the optional ``tag`` byte then the varint of ``values[i]``.
    """
    v = np.asarray(values).astype(np.int64, copy=False).view(np.uint64)
    n = len(v)
    nbytes = np.ones(n, dtype=np.int64)
    rest = v >> np.uint64(7)
    while rest.any():
        nbytes += rest > 0
        rest = rest >> np.uint64(7)
    start = 0 if tag is None else 1
    matrix = np.zeros((n, _MAX_VARINT + start), dtype=np.uint8)
    if tag is not None:
        matrix[:, 0] = tag
    for k in range(_MAX_VARINT):
        group = ((v >> np.uint64(7 * k)) & np.uint64(0x7F)).astype(np.uint8)
        more = (nbytes > k + 1).astype(np.uint8) << 7
        matrix[:, start + k] = group | more
    return matrix, nbytes + start


def _valid(column: pa.Array) -> np.ndarray:
    return ~np.asarray(column.is_null().to_numpy(zero_copy_only=False), dtype=bool)


def _varint_field(column: pa.Array, tag: int) -> pa.BinaryArray:
    valid = _valid(column)
    values = column.cast(pa.int64()).fill_null(0).to_numpy()
    matrix, lengths = varints(values, tag)
    return _rows(matrix, np.where(valid, lengths, 0))


def _fixed_field(column: pa.Array, tag: int, dtype: str) -> pa.BinaryArray:
    arrow_type = pa.float64() if dtype == "<f8" else pa.float32()
    values = column.cast(arrow_type).fill_null(0).to_numpy(zero_copy_only=False).astype(dtype)
    keep = _valid(column) & ~np.isnan(values)  # Feast writes NaN as an empty (null) value
    width = values.dtype.itemsize
    matrix = np.empty((len(values), width + 1), dtype=np.uint8)
    matrix[:, 0] = tag
    matrix[:, 1:] = values.view(np.uint8).reshape(-1, width)
    return _rows(matrix, np.where(keep, width + 1, 0))


def _length_delimited_field(column: pa.Array, tag: int) -> pa.BinaryArray:
    data = column.cast(pa.binary())
    lengths = pc.binary_length(data).fill_null(0).to_numpy(zero_copy_only=False)
    matrix, plen = varints(lengths, tag)
    prefix = _rows(matrix, plen)
    joined = pc.binary_join_element_wise(prefix, data, b"")
    return joined.fill_null(b"")


def _feast_field(column: pa.Array, value_type: ValueType) -> pa.BinaryArray:
    """Feast's own conversion (one ValueProto per value): the exact fallback for every other type."""
    from feast.type_map import python_values_to_proto_values

    protos = python_values_to_proto_values(column.to_numpy(zero_copy_only=False), value_type)
    return pa.array([p.SerializeToString() for p in protos], pa.binary())


def value_protos(column: pa.Array, value_type: ValueType) -> pa.BinaryArray:
    """Serialized ``feast.types.Value`` protos of a feature column, as Feast writes them to Redis."""
    t = column.type
    if value_type == ValueType.INT64 and pa.types.is_integer(t):
        return _varint_field(column, 0x20)  # field 4 (int64_val), varint
    if value_type == ValueType.INT32 and pa.types.is_integer(t):
        return _varint_field(column, 0x18)  # field 3 (int32_val), varint (negative: sign-extended)
    if value_type == ValueType.DOUBLE and pa.types.is_floating(t):
        return _fixed_field(column, 0x29, "<f8")  # field 5 (double_val), fixed64
    if value_type == ValueType.FLOAT and pa.types.is_floating(t):
        return _fixed_field(column, 0x35, "<f4")  # field 6 (float_val), fixed32
    if value_type == ValueType.BOOL and pa.types.is_boolean(t):
        return _varint_field(column.cast(pa.int64()), 0x38)  # field 7 (bool_val)
    if value_type == ValueType.STRING and (pa.types.is_string(t) or pa.types.is_large_string(t)):
        return _length_delimited_field(column, 0x12)  # field 2 (string_val)
    if value_type == ValueType.BYTES and (pa.types.is_binary(t) or pa.types.is_large_binary(t)):
        return _length_delimited_field(column, 0x0A)  # field 1 (bytes_val)
    return _feast_field(column, value_type)


def timestamp_protos(column: pa.Array) -> pa.BinaryArray:
    """Serialized ``google.protobuf.Timestamp`` of event times (naive means UTC), as Feast's ``_ts:`` field."""
    if column.null_count:
        raise ValueError("event timestamps must not be null")
    us = column.cast(pa.timestamp("us", tz=column.type.tz)).cast(pa.int64()).to_numpy()
    seconds, micros = np.divmod(us, 1_000_000)
    s_matrix, s_len = varints(seconds, 0x08)  # field 1: seconds (omitted when 0)
    n_matrix, n_len = varints(micros * 1000, 0x10)  # field 2: nanos (omitted when 0)
    s_len = np.where(seconds != 0, s_len, 0)
    n_len = np.where(micros != 0, n_len, 0)
    return pc.binary_join_element_wise(_rows(s_matrix, s_len), _rows(n_matrix, n_len), b"")


def timestamp_nanos(serialized: bytes) -> int:
    """Nanoseconds since the epoch of a serialized ``google.protobuf.Timestamp`` (Feast's ``_ts:`` value)."""
    seconds = nanos = 0
    i, n = 0, len(serialized)
    while i < n:
        tag = serialized[i]
        i += 1
        value = shift = 0
        while True:
            b = serialized[i]
            i += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        if value >= 1 << 63:
            value -= 1 << 64
        if tag == 0x08:
            seconds = value
        elif tag == 0x10:
            nanos = value
    return seconds * 1_000_000_000 + nanos


_KEY_VALUE_TYPES = {ValueType.STRING, ValueType.INT64, ValueType.INT32, ValueType.BYTES}


def _key_value_bytes(column: pa.Array, value_type: ValueType) -> pa.BinaryArray:
    if value_type in (ValueType.STRING, ValueType.BYTES):
        return column.cast(pa.binary())
    dtype, width = ("<i8", 8) if value_type == ValueType.INT64 else ("<i4", 4)
    values = column.to_numpy(zero_copy_only=False).astype(dtype)
    return _binary(values.view(np.uint8), np.full(len(values), width))


def _u32(values: np.ndarray) -> pa.BinaryArray:
    data = np.asarray(values, dtype="<u4").view(np.uint8)
    return _binary(data, np.full(len(values), 4))


def supports_keys(join_keys: dict[str, ValueType], version: int) -> bool:
    """Whether :func:`entity_keys` encodes these join keys (else use Feast's ``_redis_key`` per row)."""
    return version >= 3 and all(t in _KEY_VALUE_TYPES for t in join_keys.values())


def entity_keys(batch: pa.RecordBatch, join_keys: dict[str, ValueType], project: str) -> pa.BinaryArray:
    """Redis keys of the rows: Feast's ``serialize_entity_key`` (version 3) followed by the project name."""
    names = sorted(join_keys)
    head = struct.pack("<I", len(names)) + b"".join(
        struct.pack("<I", ValueType.STRING.value) + struct.pack("<I", len(k.encode())) + k.encode() for k in names
    )
    parts: list[pa.Array | bytes] = [head]
    for name in names:
        column = batch.column(name)
        if column.null_count:
            raise ValueError(f"join key {name!r} has null values; Feast cannot store an entity without a key")
        value = _key_value_bytes(column, join_keys[name])
        parts += [struct.pack("<I", join_keys[name].value), _u32(pc.binary_length(value).to_numpy()), value]
    parts.append(project.encode())
    return _join(parts, batch.num_rows)


def _join(parts: Sequence[pa.Array | bytes], n: int) -> pa.BinaryArray:
    """Element-wise concatenation of binary arrays and constant byte strings (adjacent constants merged)."""
    merged: list[pa.Array | bytes] = []
    for p in parts:
        if isinstance(p, bytes) and merged and isinstance(merged[-1], bytes):
            merged[-1] += p
        else:
            merged.append(p)
    arrays = [p if not isinstance(p, bytes) else pa.scalar(p, pa.binary()) for p in merged]
    if not any(isinstance(a, pa.Array) for a in arrays):
        return pa.array([b"".join(merged)] * n, pa.binary())  # type: ignore[arg-type]
    return pc.binary_join_element_wise(*arrays, b"")


def _bulk(array: pa.BinaryArray) -> list[pa.Array | bytes]:
    """RESP bulk strings ``$<len>\\r\\n<bytes>\\r\\n`` of an array's values."""
    lengths = pc.cast(pc.binary_length(array), pa.string()).cast(pa.binary())
    return [b"$", lengths, b"\r\n", array, b"\r\n"]


def _const_bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


def hset_commands(keys: pa.BinaryArray, fields: Sequence[bytes], values: Sequence[pa.BinaryArray],
                  expire_seconds: int | None = None) -> bytes:
    """The RESP bytes of ``HSET key f1 v1 f2 v2 ...`` for every row (plus ``EXPIRE key ttl`` if given)."""
    n = len(keys)
    parts: list[pa.Array | bytes] = [b"*%d\r\n" % (2 + 2 * len(fields)) + _const_bulk(b"HSET")] + _bulk(keys)
    for f, v in zip(fields, values):
        parts.append(_const_bulk(f))
        parts += _bulk(v)
    if expire_seconds:
        parts.append(b"*3\r\n" + _const_bulk(b"EXPIRE"))
        parts += _bulk(keys)
        parts.append(_const_bulk(str(int(expire_seconds)).encode()))
    return _buffer(_join(parts, n))


def hget_commands(keys: pa.BinaryArray, field: bytes) -> bytes:
    """The RESP bytes of ``HGET key field`` for every key (a bulk-string reply each: cheaper to parse than HMGET's
    one-element arrays)."""
    parts: list[pa.Array | bytes] = [b"*3\r\n" + _const_bulk(b"HGET")] + _bulk(keys) + [_const_bulk(field)]
    return _buffer(_join(parts, len(keys)))


def hmget_commands(commands: Sequence[tuple[bytes, Sequence[str | bytes]]]) -> bytes:
    """The RESP bytes of ``HMGET key f1 f2 ...`` for every ``(key, fields)`` pair (online reads: a few keys, so plain
    Python; the fields of consecutive commands are usually the same list and encoded once)."""
    out: list[bytes] = []
    last, encoded = None, b""
    for key, fields in commands:
        if fields is not last:
            names = [f.encode() if isinstance(f, str) else f for f in fields]
            encoded = b"".join(_const_bulk(f) for f in names)
            head = b"*%d\r\n" % (2 + len(names)) + _const_bulk(b"HMGET")
            last = fields
        out.append(head + _const_bulk(key) + encoded)
    return b"".join(out)


def _buffer(array: pa.BinaryArray) -> bytes:
    """All values of a binary array, concatenated (a slice of its data buffer)."""
    if len(array) == 0:
        return b""
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int32, count=len(array) + 1, offset=array.offset * 4)
    return array.buffers()[2].to_pybytes()[offsets[0]:offsets[-1]]
