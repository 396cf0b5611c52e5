"""Fuzz targets for the protobuf wire codec (`tidings.wire.codec.decode`), one per kind."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from tidings.wire import codec, encode, pb

TargetSpec = tuple[str, Callable[[bytes], object], list[bytes]]


def _seed(kind: type[codec.Message]) -> bytes:
    ratchet = pb.RatchetMessage(version=1, header=bytes(40), ciphertext=bytes(48))
    examples: dict[type[codec.Message], codec.Message] = {
        pb.PrekeyBundle: pb.PrekeyBundle(
            version=1,
            identity_key=bytes(65),
            device_id=1,
            signed_prekey=pb.SignedPrekey(id=1, public_key=bytes(32), signature=bytes(64)),
            one_time_prekey=pb.OneTimePrekey(id=3, public_key=bytes(32)),
            kem_prekey=pb.KemPrekey(id=2, public_key=bytes(1184), signature=bytes(64)),
        ),
        pb.RatchetMessage: ratchet,
        pb.PrekeyMessage: pb.PrekeyMessage(
            version=1,
            identity_key=bytes(65),
            base_key=bytes(32),
            kem_ciphertext=bytes(1088),
            one_time_prekey_id=4,
            message=ratchet,
        ),
        pb.SenderKeyMessage: pb.SenderKeyMessage(
            version=1, distribution_id=bytes(16), ciphertext=bytes(48), signature=bytes(64)
        ),
        pb.SenderKeyDistribution: pb.SenderKeyDistribution(
            version=1, distribution_id=bytes(16), chain_key=bytes(32), signing_key=bytes(32)
        ),
        pb.Content: pb.Content(
            version=1,
            conversation_id=bytes(32),
            data=pb.DataMessage(
                body="hi",
                attachments=[
                    pb.AttachmentPointer(id="a", key=bytes(32), digest=bytes(32), chunk_size=1)
                ],
                group=pb.GroupContext(group_id=bytes(16), members=["a", "b"]),
            ),
        ),
        pb.FrankedContent: pb.FrankedContent(
            version=1, franking_key=bytes(32), content=b"x", padding=bytes(8)
        ),
        pb.Envelope: pb.Envelope(
            version=1,
            type=pb.Envelope.RATCHET,
            sender="a",
            recipient="b",
            message_id=bytes(16),
            commitment=bytes(32),
            franking_tag=bytes(32),
            body=b"x",
        ),
    }
    return encode(examples[kind])


def wire_targets() -> Iterator[TargetSpec]:
    for kind in codec.DECODABLE:

        def target(data: bytes, kind: type[codec.Message] = kind) -> object:
            return codec.decode(kind, data)

        yield f"wire.{kind.DESCRIPTOR.name}", target, [_seed(kind)]


def detection_targets() -> Iterator[TargetSpec]:
    """The detection voucher's inner payload (`tidings.wire.detection`), which the server
    decodes from a recovered voucher."""
    from tidings.wire.detection import DetectionInnerPayload

    seed = DetectionInnerPayload(
        "A" * 43, bytes(32), bytes(32), 1000, "image/jpeg", bytes(32)
    ).encode()
    yield "wire.DetectionInnerPayload", DetectionInnerPayload.decode, [seed]
