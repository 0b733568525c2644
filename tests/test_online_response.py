"""skewless.feast_ext.online_response: the cheaper to_dict must answer exactly what Feast's OnlineResponse answers."""

from __future__ import annotations

from feast.online_response import OnlineResponse
from feast.protos.feast.serving.ServingService_pb2 import FieldStatus, GetOnlineFeaturesResponse
from feast.protos.feast.types.Value_pb2 import Null, Value
from feast.value_type import ValueType

from skewless.feast_ext.online_response import PLAIN_FIELDS, ColumnarOnlineResponse

UUID = "6f1c2b3a-9d4e-4f5a-8b6c-7d8e9f0a1b2c"


def _values(uuid_column: bool = False) -> list[Value]:
    """One value of every kind a column can hold: plain scalars, nulls, and the kinds Feast converts (a UUID-typed
    column's strings are UUIDs: Feast raises on any other string there, and so does this module, by delegating)."""
    vs = [Value(bytes_val=b"\x00x"), Value(string_val=UUID if uuid_column else "owner/name"), Value(string_val=UUID), Value(int32_val=-3),
          Value(int64_val=2 ** 40), Value(double_val=1.5), Value(float_val=0.25), Value(bool_val=True),
          Value(bool_val=False), Value(int64_val=0), Value(double_val=float("inf")),
          Value(unix_timestamp_val=1_700_000_000), Value(null_val=Null.NULL), Value(json_val='{"a": [1, 2]}'),
          Value(uuid_val=UUID), Value(decimal_val="1.25"), Value()]
    lists = Value()
    lists.int64_list_val.val.extend([1, 2, 3])
    strings = Value()
    strings.string_set_val.val.extend(["a", "b"])
    doubles = Value()
    doubles.double_list_val.val.extend([0.5, -1.0])
    return vs + [lists, strings, doubles]


def _response(types: dict[str, ValueType]) -> GetOnlineFeaturesResponse:
    proto = GetOnlineFeaturesResponse()
    for i, (name, kind) in enumerate(types.items()):
        values = _values(uuid_column=kind in (ValueType.UUID, ValueType.TIME_UUID))
        proto.metadata.feature_names.val.append(name)
        vector = proto.results.add()
        column = values[i:] + values[:i]  # every column holds every kind, in a different order
        vector.values.extend(column)
        vector.statuses.extend([FieldStatus.PRESENT] * len(column))
        for k in range(len(column)):
            ts = vector.event_timestamps.add()
            ts.seconds = 1_700_000_000 + k
    return proto


def _typed(d: dict) -> dict:
    """Values with their types: 1 == 1.0 == True must not pass for equal."""
    return {k: [(type(v).__name__, repr(v)) for v in vs] for k, vs in d.items()}


def test_to_dict_equals_feasts_value_for_value_and_type_for_type():
    types = {"repo": ValueType.STRING, "n": ValueType.INT64, "x": ValueType.DOUBLE, "u": ValueType.UUID,
             "t": ValueType.TIME_UUID, "untyped": ValueType.UNKNOWN, "flag": ValueType.BOOL}
    proto = _response(types)
    for stamps in (False, True):
        ours = ColumnarOnlineResponse(proto, feature_types=types).to_dict(include_event_timestamps=stamps)
        feasts = OnlineResponse(proto, feature_types=types).to_dict(include_event_timestamps=stamps)
        assert _typed(ours) == _typed(feasts)
    # The UUID-typed columns are the ones where a plain string_val is converted: the test data must show it.
    feasts = OnlineResponse(proto, feature_types=types).to_dict()
    assert any(type(v).__name__ == "UUID" for v in feasts["u"]) and UUID in feasts["repo"]


def test_without_feature_types_and_to_df_to_arrow_agree():
    proto = _response({"a": ValueType.UNKNOWN, "b": ValueType.UNKNOWN})
    ours, feasts = ColumnarOnlineResponse(proto), OnlineResponse(proto)
    assert _typed(ours.to_dict()) == _typed(feasts.to_dict())
    plain = GetOnlineFeaturesResponse()
    plain.metadata.feature_names.val.extend(["n", "x"])
    for column in ([Value(int64_val=1), Value()], [Value(double_val=2.5), Value(double_val=-0.0)]):
        vector = plain.results.add()
        vector.values.extend(column)
        vector.event_timestamps.add().seconds = 5
        vector.event_timestamps.add().seconds = 0
    assert ColumnarOnlineResponse(plain).to_df(True).equals(OnlineResponse(plain).to_df(True))
    assert ColumnarOnlineResponse(plain).to_arrow().equals(OnlineResponse(plain).to_arrow())


def test_of_keeps_the_proto_and_the_types():
    proto = _response({"n": ValueType.INT64})
    feasts = OnlineResponse(proto, feature_types={"n": ValueType.INT64})
    ours = ColumnarOnlineResponse.of(feasts)
    assert ours.proto is proto and ours._feature_types == {"n": ValueType.INT64}
    assert ColumnarOnlineResponse.of(ours) is ours
    assert PLAIN_FIELDS <= {f.name for f in Value.DESCRIPTOR.oneofs_by_name["val"].fields}


# --- the Redis read: pre-encoded HMGET pipeline vs Feast's redis-py pipeline ------------------------------------------

REDIS_DB = 15  # this test's Redis database: checked empty, flushed after


def test_redis_hmget_pipeline_answers_what_feasts_read_answers():
    from types import SimpleNamespace

    import pytest
    import redis
    from feast.infra.online_stores.redis import RedisOnlineStore

    from skewless.feast_ext.ttl import TtlRedisOnlineStore, TtlRedisOnlineStoreConfig

    r = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    assert r.dbsize() == 0, f"Redis database {REDIS_DB} is not empty; this test writes and flushes it"
    try:
        r.hset(b"k1", mapping={b"a": b"1", b"b": b"\r\n*3\r\n$5\r\n", b"c": b""})
        r.hset(b"\x00k2\xff", mapping={b"a": b"x" * 100_000, "\u00e9": b"\x00"})
        r.set(b"plain", b"not a hash")
        config = SimpleNamespace(online_store=TtlRedisOnlineStoreConfig(
            connection_string=f"127.0.0.1:6379,db={REDIS_DB}"))
        ours, feasts = TtlRedisOnlineStore(), TtlRedisOnlineStore()
        fields = [b"a", b"b", b"c", "\u00e9", b"missing"]
        commands = [(b"k1", fields), (b"\x00k2\xff", fields), (b"absent", fields), (b"k1", [b"c", b"a"])]
        got = ours._read_hash_fields(config, commands)
        assert got == RedisOnlineStore._read_hash_fields(feasts, config, commands)
        assert got[0] == [b"1", b"\r\n*3\r\n$5\r\n", b"", None, None] and got[2] == [None] * 5
        assert ours._read_hash_fields(config, []) == []
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            ours._read_hash_fields(config, [(b"k1", [b"a"]), (b"plain", [b"a"])])
        assert ours._read_hash_fields(config, commands[:1]) == got[:1]  # the connection after an error: clean
    finally:
        r.flushdb()
