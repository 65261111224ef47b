import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SuppressionSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SUPPRESSION_SOURCE_UNSPECIFIED: _ClassVar[SuppressionSource]
    SUPPRESSION_SOURCE_BOUNCE: _ClassVar[SuppressionSource]
    SUPPRESSION_SOURCE_COMPLAINT: _ClassVar[SuppressionSource]
    SUPPRESSION_SOURCE_UNSUBSCRIBE: _ClassVar[SuppressionSource]
    SUPPRESSION_SOURCE_MANUAL: _ClassVar[SuppressionSource]
SUPPRESSION_SOURCE_UNSPECIFIED: SuppressionSource
SUPPRESSION_SOURCE_BOUNCE: SuppressionSource
SUPPRESSION_SOURCE_COMPLAINT: SuppressionSource
SUPPRESSION_SOURCE_UNSUBSCRIBE: SuppressionSource
SUPPRESSION_SOURCE_MANUAL: SuppressionSource

class SuppressionEntry(_message.Message):
    __slots__ = ("address", "scope", "reason", "bounce_class", "source", "since", "expires")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    BOUNCE_CLASS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_FIELD_NUMBER: _ClassVar[int]
    address: str
    scope: str
    reason: str
    bounce_class: str
    source: SuppressionSource
    since: _timestamp_pb2.Timestamp
    expires: _timestamp_pb2.Timestamp
    def __init__(self, address: _Optional[str] = ..., scope: _Optional[str] = ..., reason: _Optional[str] = ..., bounce_class: _Optional[str] = ..., source: _Optional[_Union[SuppressionSource, str]] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SuppressionRemoval(_message.Message):
    __slots__ = ("address", "scope", "every_scope")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    EVERY_SCOPE_FIELD_NUMBER: _ClassVar[int]
    address: str
    scope: str
    every_scope: bool
    def __init__(self, address: _Optional[str] = ..., scope: _Optional[str] = ..., every_scope: _Optional[bool] = ...) -> None: ...

class SuppressionStrike(_message.Message):
    __slots__ = ("address", "key", "at")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    address: str
    key: str
    at: _timestamp_pb2.Timestamp
    def __init__(self, address: _Optional[str] = ..., key: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SuppressionSnapshot(_message.Message):
    __slots__ = ("id", "part", "parts", "covers", "entries", "strikes")
    ID_FIELD_NUMBER: _ClassVar[int]
    PART_FIELD_NUMBER: _ClassVar[int]
    PARTS_FIELD_NUMBER: _ClassVar[int]
    COVERS_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    STRIKES_FIELD_NUMBER: _ClassVar[int]
    id: str
    part: int
    parts: int
    covers: _timestamp_pb2.Timestamp
    entries: _containers.RepeatedCompositeFieldContainer[SuppressionEntry]
    strikes: _containers.RepeatedCompositeFieldContainer[SuppressionStrike]
    def __init__(self, id: _Optional[str] = ..., part: _Optional[int] = ..., parts: _Optional[int] = ..., covers: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., entries: _Optional[_Iterable[_Union[SuppressionEntry, _Mapping]]] = ..., strikes: _Optional[_Iterable[_Union[SuppressionStrike, _Mapping]]] = ...) -> None: ...

class SuppressionRecord(_message.Message):
    __slots__ = ("add", "remove", "strike", "snapshot")
    ADD_FIELD_NUMBER: _ClassVar[int]
    REMOVE_FIELD_NUMBER: _ClassVar[int]
    STRIKE_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    add: SuppressionEntry
    remove: SuppressionRemoval
    strike: SuppressionStrike
    snapshot: SuppressionSnapshot
    def __init__(self, add: _Optional[_Union[SuppressionEntry, _Mapping]] = ..., remove: _Optional[_Union[SuppressionRemoval, _Mapping]] = ..., strike: _Optional[_Union[SuppressionStrike, _Mapping]] = ..., snapshot: _Optional[_Union[SuppressionSnapshot, _Mapping]] = ...) -> None: ...
