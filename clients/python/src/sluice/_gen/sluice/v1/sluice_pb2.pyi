import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Reason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REASON_UNSPECIFIED: _ClassVar[Reason]
    GRANTED: _ClassVar[Reason]
    COOLDOWN: _ClassVar[Reason]
    LIMIT: _ClassVar[Reason]
    IN_FLIGHT: _ClassVar[Reason]

class Scope(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SHARED: _ClassVar[Scope]
    LOCAL: _ClassVar[Scope]
    FAIL_OPEN: _ClassVar[Scope]
REASON_UNSPECIFIED: Reason
GRANTED: Reason
COOLDOWN: Reason
LIMIT: Reason
IN_FLIGHT: Reason
SHARED: Scope
LOCAL: Scope
FAIL_OPEN: Scope

class ReloadConfigRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReloadConfigResponse(_message.Message):
    __slots__ = ("added", "removed", "changed", "unchanged", "needs_restart")
    ADDED_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    UNCHANGED_FIELD_NUMBER: _ClassVar[int]
    NEEDS_RESTART_FIELD_NUMBER: _ClassVar[int]
    added: _containers.RepeatedScalarFieldContainer[str]
    removed: _containers.RepeatedScalarFieldContainer[str]
    changed: _containers.RepeatedScalarFieldContainer[str]
    unchanged: _containers.RepeatedScalarFieldContainer[str]
    needs_restart: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, added: _Optional[_Iterable[str]] = ..., removed: _Optional[_Iterable[str]] = ..., changed: _Optional[_Iterable[str]] = ..., unchanged: _Optional[_Iterable[str]] = ..., needs_restart: _Optional[_Iterable[str]] = ...) -> None: ...

class ServiceRequest(_message.Message):
    __slots__ = ("service",)
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    service: str
    def __init__(self, service: _Optional[str] = ...) -> None: ...

class SetCooldownRequest(_message.Message):
    __slots__ = ("service", "duration", "reason")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    service: str
    duration: _duration_pb2.Duration
    reason: str
    def __init__(self, service: _Optional[str] = ..., duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class AdminResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: ServiceStatus
    def __init__(self, status: _Optional[_Union[ServiceStatus, _Mapping]] = ...) -> None: ...

class AcquireRequest(_message.Message):
    __slots__ = ("service", "tokens", "input_tokens", "output_tokens", "max_wait", "request_id", "client_id", "priority")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_WAIT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    service: str
    tokens: int
    input_tokens: int
    output_tokens: int
    max_wait: _duration_pb2.Duration
    request_id: str
    client_id: str
    priority: str
    def __init__(self, service: _Optional[str] = ..., tokens: _Optional[int] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., max_wait: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., request_id: _Optional[str] = ..., client_id: _Optional[str] = ..., priority: _Optional[str] = ...) -> None: ...

class AcquireResponse(_message.Message):
    __slots__ = ("granted", "lease_id", "wait", "retry_after", "reason", "limit", "slot_time", "scope", "shadow")
    GRANTED_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    SLOT_TIME_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    granted: bool
    lease_id: str
    wait: _duration_pb2.Duration
    retry_after: _duration_pb2.Duration
    reason: Reason
    limit: str
    slot_time: _timestamp_pb2.Timestamp
    scope: Scope
    shadow: ShadowDecision
    def __init__(self, granted: _Optional[bool] = ..., lease_id: _Optional[str] = ..., wait: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., retry_after: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., reason: _Optional[_Union[Reason, str]] = ..., limit: _Optional[str] = ..., slot_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., scope: _Optional[_Union[Scope, str]] = ..., shadow: _Optional[_Union[ShadowDecision, _Mapping]] = ...) -> None: ...

class ShadowDecision(_message.Message):
    __slots__ = ("granted", "wait", "retry_after", "reason", "limit")
    GRANTED_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    granted: bool
    wait: _duration_pb2.Duration
    retry_after: _duration_pb2.Duration
    reason: Reason
    limit: str
    def __init__(self, granted: _Optional[bool] = ..., wait: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., retry_after: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., reason: _Optional[_Union[Reason, str]] = ..., limit: _Optional[str] = ...) -> None: ...

class Header(_message.Message):
    __slots__ = ("name", "value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: str
    def __init__(self, name: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("input_tokens", "output_tokens", "total_tokens")
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    input_tokens: int
    output_tokens: int
    total_tokens: int
    def __init__(self, input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., total_tokens: _Optional[int] = ...) -> None: ...

class ReportResponseRequest(_message.Message):
    __slots__ = ("service", "lease_id", "status_code", "headers", "usage", "body")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_CODE_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    service: str
    lease_id: str
    status_code: int
    headers: _containers.RepeatedCompositeFieldContainer[Header]
    usage: Usage
    body: bytes
    def __init__(self, service: _Optional[str] = ..., lease_id: _Optional[str] = ..., status_code: _Optional[int] = ..., headers: _Optional[_Iterable[_Union[Header, _Mapping]]] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., body: _Optional[bytes] = ...) -> None: ...

class ReportResponseResponse(_message.Message):
    __slots__ = ("cooldown", "cooldown_set", "detail", "scope")
    COOLDOWN_FIELD_NUMBER: _ClassVar[int]
    COOLDOWN_SET_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    cooldown: _duration_pb2.Duration
    cooldown_set: bool
    detail: str
    scope: Scope
    def __init__(self, cooldown: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., cooldown_set: _Optional[bool] = ..., detail: _Optional[str] = ..., scope: _Optional[_Union[Scope, str]] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ("service",)
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    service: str
    def __init__(self, service: _Optional[str] = ...) -> None: ...

class GetStatusResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: ServiceStatus
    def __init__(self, status: _Optional[_Union[ServiceStatus, _Mapping]] = ...) -> None: ...

class ListServicesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListServicesResponse(_message.Message):
    __slots__ = ("services",)
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    services: _containers.RepeatedCompositeFieldContainer[ServiceStatus]
    def __init__(self, services: _Optional[_Iterable[_Union[ServiceStatus, _Mapping]]] = ...) -> None: ...

class LimitStatus(_message.Message):
    __slots__ = ("name", "dimension", "amount", "window", "algorithm", "burst", "used", "remaining", "reset_after", "learned_amount", "effective_amount", "effective_because")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    BURST_FIELD_NUMBER: _ClassVar[int]
    USED_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    RESET_AFTER_FIELD_NUMBER: _ClassVar[int]
    LEARNED_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_BECAUSE_FIELD_NUMBER: _ClassVar[int]
    name: str
    dimension: str
    amount: int
    window: _duration_pb2.Duration
    algorithm: str
    burst: int
    used: int
    remaining: int
    reset_after: _duration_pb2.Duration
    learned_amount: int
    effective_amount: int
    effective_because: str
    def __init__(self, name: _Optional[str] = ..., dimension: _Optional[str] = ..., amount: _Optional[int] = ..., window: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., algorithm: _Optional[str] = ..., burst: _Optional[int] = ..., used: _Optional[int] = ..., remaining: _Optional[int] = ..., reset_after: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., learned_amount: _Optional[int] = ..., effective_amount: _Optional[int] = ..., effective_because: _Optional[str] = ...) -> None: ...

class CooldownStatus(_message.Message):
    __slots__ = ("remaining", "cause", "status_code", "dimension")
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    CAUSE_FIELD_NUMBER: _ClassVar[int]
    STATUS_CODE_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    remaining: _duration_pb2.Duration
    cause: str
    status_code: int
    dimension: str
    def __init__(self, remaining: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., cause: _Optional[str] = ..., status_code: _Optional[int] = ..., dimension: _Optional[str] = ...) -> None: ...

class ProviderReport(_message.Message):
    __slots__ = ("status_code", "age", "headers")
    STATUS_CODE_FIELD_NUMBER: _ClassVar[int]
    AGE_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    status_code: int
    age: _duration_pb2.Duration
    headers: _containers.RepeatedCompositeFieldContainer[Header]
    def __init__(self, status_code: _Optional[int] = ..., age: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., headers: _Optional[_Iterable[_Union[Header, _Mapping]]] = ...) -> None: ...

class ServiceStatus(_message.Message):
    __slots__ = ("service", "profile", "limits", "cooldown", "queued", "last_report", "dimension_cooldowns", "scope", "adaptive_permille", "mode")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    COOLDOWN_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    LAST_REPORT_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_COOLDOWNS_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    ADAPTIVE_PERMILLE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    service: str
    profile: str
    limits: _containers.RepeatedCompositeFieldContainer[LimitStatus]
    cooldown: CooldownStatus
    queued: int
    last_report: ProviderReport
    dimension_cooldowns: _containers.RepeatedCompositeFieldContainer[CooldownStatus]
    scope: Scope
    adaptive_permille: int
    mode: str
    def __init__(self, service: _Optional[str] = ..., profile: _Optional[str] = ..., limits: _Optional[_Iterable[_Union[LimitStatus, _Mapping]]] = ..., cooldown: _Optional[_Union[CooldownStatus, _Mapping]] = ..., queued: _Optional[int] = ..., last_report: _Optional[_Union[ProviderReport, _Mapping]] = ..., dimension_cooldowns: _Optional[_Iterable[_Union[CooldownStatus, _Mapping]]] = ..., scope: _Optional[_Union[Scope, str]] = ..., adaptive_permille: _Optional[int] = ..., mode: _Optional[str] = ...) -> None: ...
