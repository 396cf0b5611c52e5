"""Jurisdictions of hash-bank sources: ISO 3166-1 alpha-2 country codes.

The two-jurisdiction rule (`tidings.safety.bank_model`) compares these codes, so a source must
name an officially assigned one: a typo or a made-up code ("UK", "XX") would otherwise count
as a jurisdiction of its own. The list is the 249 officially assigned ISO 3166-1 alpha-2 codes,
as the IANA time-zone database ships them (``iso3166.tab``); no installed library carries the
list (``pycountry`` would, as a new dependency for one frozenset), so it is data here, checked
against that file by the tests where the system has it.
"""

from __future__ import annotations

from tidings.errors import SafetyInputError

__all__ = ["ISO_3166_ALPHA2", "canonical_jurisdiction"]

_CODES = (
    "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ "
    "BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM "
    "DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS "
    "GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN "
    "KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ "
    "MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM "
    "PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV "
    "SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI "
    "VN VU WF WS YE YT ZA ZM ZW"
)
ISO_3166_ALPHA2: frozenset[str] = frozenset(_CODES.split(" "))


def canonical_jurisdiction(code: str) -> str:
    """``code`` as its canonical upper-case ISO 3166-1 alpha-2 form (surrounding spaces and
    case ignored).

    Raises:
        SafetyInputError: not an officially assigned alpha-2 code.
    """
    text = code.strip().upper() if isinstance(code, str) else ""
    if text not in ISO_3166_ALPHA2:
        raise SafetyInputError(
            "the jurisdiction must be an ISO 3166-1 alpha-2 country code (for example US, GB)"
        )
    return text
