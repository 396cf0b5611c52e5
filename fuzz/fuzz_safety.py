"""Fuzz targets for the safety side's decoders of untrusted bytes: the hash-bank formats
(`tidings.safety.bank_formats.parse_bank_file`), one target per format, and the answers of
NCMEC's CyberTipline (`tidings.safety.cybertip_xml.parse_response`), and a lawful-request
package archive (`tidings.safety.lawful_package.read_package_zip` then `verify_files`)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

TargetSpec = tuple[str, Callable[[bytes], object], list[bytes]]

_PDQ = "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22"
_MD5 = "d41d8cd98f00b204e9800998ecf8427e"


def safety_targets() -> Iterator[TargetSpec]:
    from tidings.safety.bank_formats import parse_bank_file

    seeds = {
        "csv": [
            f"signal_type,signal_value,quality,tags\npdq,{_PDQ},90,a\nmd5,{_MD5},,\n".encode(),
            f"pdq,{_PDQ}\nvideo_md5,{_MD5}\n".encode(),
        ],
        "te": [f"pdq {_PDQ}\nvideo_md5 {_MD5} 'collab' {{}}\n# note\n".encode()],
        "jsonl": [
            (
                json.dumps({"signal_type": "pdq", "signal_value": _PDQ, "quality": 80})
                + "\n"
                + json.dumps({"signal_type": "photo_md5", "signal_str": _MD5})
                + "\n"
            ).encode()
        ],
    }
    for fmt, fmt_seeds in seeds.items():

        def target(data: bytes, fmt: str = fmt) -> object:
            return parse_bank_file(data, fmt)

        yield f"safety.bank_file_{fmt}", target, fmt_seeds


_CYBERTIP_SEEDS = [
    b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><reportResponse>'
    b"<responseCode>0</responseCode><responseDescription>Success</responseDescription>"
    b"<reportId>4564654</reportId><fileId>b0754af766b426f2928a02c651ed4b99</fileId>"
    b"<hash>fafa5efeaf3cbe3b23b2748d13e629a1</hash></reportResponse>",
    b"<reportDoneResponse><responseCode>0</responseCode><reportId>4564654</reportId>"
    b"<files><fileId>a1</fileId><fileId>b2</fileId></files></reportDoneResponse>",
    b"<reportResponse><responseCode>5102</responseCode>"
    b"<responseDescription>Report already finished</responseDescription></reportResponse>",
]


def cybertip_targets() -> Iterator[TargetSpec]:
    from tidings.safety.cybertip_xml import parse_response

    yield "safety.cybertip_response", parse_response, _CYBERTIP_SEEDS


def _package_seed() -> bytes:
    from tidings.safety.lawful_package import build_package, package_zip

    production = {"request": {"request_id": "lr_seed"}, "categories": [], "never_produced": []}
    return package_zip(build_package(production, signing_key=bytes(32), created_ms=0))


def lawful_package_targets() -> Iterator[TargetSpec]:
    from tidings.safety.lawful_package import read_package_zip, verify_files

    def target(data: bytes) -> object:
        return verify_files(read_package_zip(data))

    yield "safety.package_zip", target, [_package_seed()]
