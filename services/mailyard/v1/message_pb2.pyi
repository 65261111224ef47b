import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Origin(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ORIGIN_UNSPECIFIED: _ClassVar[Origin]
    ORIGIN_SMTP: _ClassVar[Origin]
    ORIGIN_DSN: _ClassVar[Origin]
    ORIGIN_TLSRPT: _ClassVar[Origin]

class EventKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_KIND_UNSPECIFIED: _ClassVar[EventKind]
    EVENT_KIND_DELIVERED: _ClassVar[EventKind]
    EVENT_KIND_DEFERRED: _ClassVar[EventKind]
    EVENT_KIND_FAILED: _ClassVar[EventKind]
    EVENT_KIND_EXPIRED: _ClassVar[EventKind]
    EVENT_KIND_BOUNCED: _ClassVar[EventKind]
    EVENT_KIND_COMPLAINED: _ClassVar[EventKind]
    EVENT_KIND_DELAYED: _ClassVar[EventKind]
    EVENT_KIND_RELAYED: _ClassVar[EventKind]
    EVENT_KIND_SUPPRESSED: _ClassVar[EventKind]
ORIGIN_UNSPECIFIED: Origin
ORIGIN_SMTP: Origin
ORIGIN_DSN: Origin
ORIGIN_TLSRPT: Origin
EVENT_KIND_UNSPECIFIED: EventKind
EVENT_KIND_DELIVERED: EventKind
EVENT_KIND_DEFERRED: EventKind
EVENT_KIND_FAILED: EventKind
EVENT_KIND_EXPIRED: EventKind
EVENT_KIND_BOUNCED: EventKind
EVENT_KIND_COMPLAINED: EventKind
EVENT_KIND_DELAYED: EventKind
EVENT_KIND_RELAYED: EventKind
EVENT_KIND_SUPPRESSED: EventKind

class AcceptedMessage(_message.Message):
    __slots__ = ("message_id", "mail_from", "recipients", "content", "received_at", "client", "origin", "options", "recipient_options", "mail_class")
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    MAIL_FROM_FIELD_NUMBER: _ClassVar[int]
    RECIPIENTS_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_AT_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    MAIL_CLASS_FIELD_NUMBER: _ClassVar[int]
    message_id: str
    mail_from: str
    recipients: _containers.RepeatedScalarFieldContainer[str]
    content: bytes
    received_at: _timestamp_pb2.Timestamp
    client: Client
    origin: Origin
    options: MessageOptions
    recipient_options: _containers.RepeatedCompositeFieldContainer[RecipientOptions]
    mail_class: str
    def __init__(self, message_id: _Optional[str] = ..., mail_from: _Optional[str] = ..., recipients: _Optional[_Iterable[str]] = ..., content: _Optional[bytes] = ..., received_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., client: _Optional[_Union[Client, _Mapping]] = ..., origin: _Optional[_Union[Origin, str]] = ..., options: _Optional[_Union[MessageOptions, _Mapping]] = ..., recipient_options: _Optional[_Iterable[_Union[RecipientOptions, _Mapping]]] = ..., mail_class: _Optional[str] = ...) -> None: ...

class MessageOptions(_message.Message):
    __slots__ = ("ret", "envid", "smtputf8", "eight_bit")
    RET_FIELD_NUMBER: _ClassVar[int]
    ENVID_FIELD_NUMBER: _ClassVar[int]
    SMTPUTF8_FIELD_NUMBER: _ClassVar[int]
    EIGHT_BIT_FIELD_NUMBER: _ClassVar[int]
    ret: str
    envid: str
    smtputf8: bool
    eight_bit: bool
    def __init__(self, ret: _Optional[str] = ..., envid: _Optional[str] = ..., smtputf8: _Optional[bool] = ..., eight_bit: _Optional[bool] = ...) -> None: ...

class RecipientOptions(_message.Message):
    __slots__ = ("notify", "orcpt")
    NOTIFY_FIELD_NUMBER: _ClassVar[int]
    ORCPT_FIELD_NUMBER: _ClassVar[int]
    notify: str
    orcpt: str
    def __init__(self, notify: _Optional[str] = ..., orcpt: _Optional[str] = ...) -> None: ...

class Client(_message.Message):
    __slots__ = ("address", "helo", "tls", "login")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    HELO_FIELD_NUMBER: _ClassVar[int]
    TLS_FIELD_NUMBER: _ClassVar[int]
    LOGIN_FIELD_NUMBER: _ClassVar[int]
    address: str
    helo: str
    tls: bool
    login: str
    def __init__(self, address: _Optional[str] = ..., helo: _Optional[str] = ..., tls: _Optional[bool] = ..., login: _Optional[str] = ...) -> None: ...

class AcceptedBatch(_message.Message):
    __slots__ = ("messages",)
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[AcceptedMessage]
    def __init__(self, messages: _Optional[_Iterable[_Union[AcceptedMessage, _Mapping]]] = ...) -> None: ...

class DeliveryJob(_message.Message):
    __slots__ = ("message_id", "queue_id", "domain", "mail_from", "recipients", "content", "received_at", "expires_at", "attempts", "last_results", "origin", "may_repeat", "not_before", "options", "recipient_options", "return_path", "delay_warned", "mail_class", "held")
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    QUEUE_ID_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    MAIL_FROM_FIELD_NUMBER: _ClassVar[int]
    RECIPIENTS_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    LAST_RESULTS_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    MAY_REPEAT_FIELD_NUMBER: _ClassVar[int]
    NOT_BEFORE_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    RETURN_PATH_FIELD_NUMBER: _ClassVar[int]
    DELAY_WARNED_FIELD_NUMBER: _ClassVar[int]
    MAIL_CLASS_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    message_id: str
    queue_id: str
    domain: str
    mail_from: str
    recipients: _containers.RepeatedScalarFieldContainer[str]
    content: bytes
    received_at: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    attempts: int
    last_results: _containers.RepeatedCompositeFieldContainer[RecipientResult]
    origin: Origin
    may_repeat: bool
    not_before: _timestamp_pb2.Timestamp
    options: MessageOptions
    recipient_options: _containers.RepeatedCompositeFieldContainer[RecipientOptions]
    return_path: str
    delay_warned: bool
    mail_class: str
    held: int
    def __init__(self, message_id: _Optional[str] = ..., queue_id: _Optional[str] = ..., domain: _Optional[str] = ..., mail_from: _Optional[str] = ..., recipients: _Optional[_Iterable[str]] = ..., content: _Optional[bytes] = ..., received_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., attempts: _Optional[int] = ..., last_results: _Optional[_Iterable[_Union[RecipientResult, _Mapping]]] = ..., origin: _Optional[_Union[Origin, str]] = ..., may_repeat: _Optional[bool] = ..., not_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., options: _Optional[_Union[MessageOptions, _Mapping]] = ..., recipient_options: _Optional[_Iterable[_Union[RecipientOptions, _Mapping]]] = ..., return_path: _Optional[str] = ..., delay_warned: _Optional[bool] = ..., mail_class: _Optional[str] = ..., held: _Optional[int] = ...) -> None: ...

class DeliveryBatch(_message.Message):
    __slots__ = ("domain", "jobs")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    JOBS_FIELD_NUMBER: _ClassVar[int]
    domain: str
    jobs: _containers.RepeatedCompositeFieldContainer[DeliveryJob]
    def __init__(self, domain: _Optional[str] = ..., jobs: _Optional[_Iterable[_Union[DeliveryJob, _Mapping]]] = ...) -> None: ...

class RecipientResult(_message.Message):
    __slots__ = ("recipient", "reply", "remote_mta", "elapsed_ms", "tls", "bounce_class", "next_hop_dsn")
    RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    REPLY_FIELD_NUMBER: _ClassVar[int]
    REMOTE_MTA_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_MS_FIELD_NUMBER: _ClassVar[int]
    TLS_FIELD_NUMBER: _ClassVar[int]
    BOUNCE_CLASS_FIELD_NUMBER: _ClassVar[int]
    NEXT_HOP_DSN_FIELD_NUMBER: _ClassVar[int]
    recipient: str
    reply: SmtpReply
    remote_mta: str
    elapsed_ms: int
    tls: TlsSession
    bounce_class: str
    next_hop_dsn: bool
    def __init__(self, recipient: _Optional[str] = ..., reply: _Optional[_Union[SmtpReply, _Mapping]] = ..., remote_mta: _Optional[str] = ..., elapsed_ms: _Optional[int] = ..., tls: _Optional[_Union[TlsSession, _Mapping]] = ..., bounce_class: _Optional[str] = ..., next_hop_dsn: _Optional[bool] = ...) -> None: ...

class TlsSession(_message.Message):
    __slots__ = ("policy", "version", "cipher", "verified")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CIPHER_FIELD_NUMBER: _ClassVar[int]
    VERIFIED_FIELD_NUMBER: _ClassVar[int]
    policy: str
    version: str
    cipher: str
    verified: bool
    def __init__(self, policy: _Optional[str] = ..., version: _Optional[str] = ..., cipher: _Optional[str] = ..., verified: _Optional[bool] = ...) -> None: ...

class SmtpReply(_message.Message):
    __slots__ = ("code", "status", "text")
    CODE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    code: int
    status: str
    text: str
    def __init__(self, code: _Optional[int] = ..., status: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class DeliveryEvent(_message.Message):
    __slots__ = ("kind", "message_id", "queue_id", "domain", "mail_from", "results", "received_at", "occurred_at", "attempts", "original_headers", "origin", "feedback_type", "verified", "reporter", "options", "recipient_options", "original_content", "expires_at", "mail_class")
    KIND_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    QUEUE_ID_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    MAIL_FROM_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_AT_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_HEADERS_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_TYPE_FIELD_NUMBER: _ClassVar[int]
    VERIFIED_FIELD_NUMBER: _ClassVar[int]
    REPORTER_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_CONTENT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    MAIL_CLASS_FIELD_NUMBER: _ClassVar[int]
    kind: EventKind
    message_id: str
    queue_id: str
    domain: str
    mail_from: str
    results: _containers.RepeatedCompositeFieldContainer[RecipientResult]
    received_at: _timestamp_pb2.Timestamp
    occurred_at: _timestamp_pb2.Timestamp
    attempts: int
    original_headers: bytes
    origin: Origin
    feedback_type: str
    verified: bool
    reporter: str
    options: MessageOptions
    recipient_options: _containers.RepeatedCompositeFieldContainer[RecipientOptions]
    original_content: bytes
    expires_at: _timestamp_pb2.Timestamp
    mail_class: str
    def __init__(self, kind: _Optional[_Union[EventKind, str]] = ..., message_id: _Optional[str] = ..., queue_id: _Optional[str] = ..., domain: _Optional[str] = ..., mail_from: _Optional[str] = ..., results: _Optional[_Iterable[_Union[RecipientResult, _Mapping]]] = ..., received_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., attempts: _Optional[int] = ..., original_headers: _Optional[bytes] = ..., origin: _Optional[_Union[Origin, str]] = ..., feedback_type: _Optional[str] = ..., verified: _Optional[bool] = ..., reporter: _Optional[str] = ..., options: _Optional[_Union[MessageOptions, _Mapping]] = ..., recipient_options: _Optional[_Iterable[_Union[RecipientOptions, _Mapping]]] = ..., original_content: _Optional[bytes] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., mail_class: _Optional[str] = ...) -> None: ...
