"""Tidings wire formats: protobuf schemas (`tidings_pb2`) and the checked codec (`codec`)."""

from tidings.wire import tidings_pb2 as pb
from tidings.wire.codec import decode, encode
from tidings.wire.limits import PROTOCOL_VERSION

__all__ = ["PROTOCOL_VERSION", "decode", "encode", "pb"]
