import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Heartbeat(_message.Message):
    __slots__ = ("member", "group", "sent_at", "leaving", "hostname", "destinations")
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_FIELD_NUMBER: _ClassVar[int]
    LEAVING_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    DESTINATIONS_FIELD_NUMBER: _ClassVar[int]
    member: str
    group: str
    sent_at: _timestamp_pb2.Timestamp
    leaving: bool
    hostname: str
    destinations: _containers.RepeatedCompositeFieldContainer[DestinationState]
    def __init__(self, member: _Optional[str] = ..., group: _Optional[str] = ..., sent_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., leaving: _Optional[bool] = ..., hostname: _Optional[str] = ..., destinations: _Optional[_Iterable[_Union[DestinationState, _Mapping]]] = ...) -> None: ...

class DestinationState(_message.Message):
    __slots__ = ("key", "max_connections", "max_messages_per_second", "connections_share", "messages_per_second_share", "backoff_factor", "paused_for", "sessions", "waiting")
    KEY_FIELD_NUMBER: _ClassVar[int]
    MAX_CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    CONNECTIONS_SHARE_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_PER_SECOND_SHARE_FIELD_NUMBER: _ClassVar[int]
    BACKOFF_FACTOR_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FOR_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    WAITING_FIELD_NUMBER: _ClassVar[int]
    key: str
    max_connections: int
    max_messages_per_second: float
    connections_share: int
    messages_per_second_share: float
    backoff_factor: float
    paused_for: float
    sessions: int
    waiting: int
    def __init__(self, key: _Optional[str] = ..., max_connections: _Optional[int] = ..., max_messages_per_second: _Optional[float] = ..., connections_share: _Optional[int] = ..., messages_per_second_share: _Optional[float] = ..., backoff_factor: _Optional[float] = ..., paused_for: _Optional[float] = ..., sessions: _Optional[int] = ..., waiting: _Optional[int] = ...) -> None: ...
