"""CTAP2 command bytes, status codes and CBOR map keys (CTAP 2.1 §6, §8).

Values are the spec's; tests cross-check them against python-fido2's own tables.
"""

from __future__ import annotations

from enum import IntEnum, unique


@unique
class Cmd(IntEnum):
    """authenticatorAPI command bytes (CTAP 2.1 §6)."""

    MAKE_CREDENTIAL = 0x01
    GET_ASSERTION = 0x02
    GET_INFO = 0x04
    CLIENT_PIN = 0x06
    RESET = 0x07
    GET_NEXT_ASSERTION = 0x08
    BIO_ENROLLMENT = 0x09
    CREDENTIAL_MANAGEMENT = 0x0A
    SELECTION = 0x0B
    LARGE_BLOBS = 0x0C
    CONFIG = 0x0D
    BIO_ENROLLMENT_PRE = 0x40
    CREDENTIAL_MANAGEMENT_PRE = 0x41


@unique
class Status(IntEnum):
    """CTAP status codes (CTAP 2.1 §8.2)."""

    SUCCESS = 0x00
    INVALID_COMMAND = 0x01
    INVALID_PARAMETER = 0x02
    INVALID_LENGTH = 0x03
    INVALID_SEQ = 0x04
    TIMEOUT = 0x05
    CHANNEL_BUSY = 0x06
    LOCK_REQUIRED = 0x0A
    INVALID_CHANNEL = 0x0B
    CBOR_UNEXPECTED_TYPE = 0x11
    INVALID_CBOR = 0x12
    MISSING_PARAMETER = 0x14
    LIMIT_EXCEEDED = 0x15
    FP_DATABASE_FULL = 0x17
    LARGE_BLOB_STORAGE_FULL = 0x18
    CREDENTIAL_EXCLUDED = 0x19
    PROCESSING = 0x21
    INVALID_CREDENTIAL = 0x22
    USER_ACTION_PENDING = 0x23
    OPERATION_PENDING = 0x24
    NO_OPERATIONS = 0x25
    UNSUPPORTED_ALGORITHM = 0x26
    OPERATION_DENIED = 0x27
    KEY_STORE_FULL = 0x28
    UNSUPPORTED_OPTION = 0x2B
    INVALID_OPTION = 0x2C
    KEEPALIVE_CANCEL = 0x2D
    NO_CREDENTIALS = 0x2E
    USER_ACTION_TIMEOUT = 0x2F
    NOT_ALLOWED = 0x30
    PIN_INVALID = 0x31
    PIN_BLOCKED = 0x32
    PIN_AUTH_INVALID = 0x33
    PIN_AUTH_BLOCKED = 0x34
    PIN_NOT_SET = 0x35
    PUAT_REQUIRED = 0x36
    PIN_POLICY_VIOLATION = 0x37
    REQUEST_TOO_LARGE = 0x39
    ACTION_TIMEOUT = 0x3A
    UP_REQUIRED = 0x3B
    UV_BLOCKED = 0x3C
    INTEGRITY_FAILURE = 0x3D
    INVALID_SUBCOMMAND = 0x3E
    UV_INVALID = 0x3F
    UNAUTHORIZED_PERMISSION = 0x40
    OTHER = 0x7F


class CtapError(Exception):
    """A command failed with a CTAP status; the device answers with that one byte."""

    def __init__(self, status: Status, reason: str = "") -> None:
        super().__init__(f"{status.name}{': ' + reason if reason else ''}")
        self.status = status
        # A human-readable hint for traces (never contains secrets).
        self.reason = reason


@unique
class MakeCredentialKey(IntEnum):
    CLIENT_DATA_HASH = 0x01
    RP = 0x02
    USER = 0x03
    PUB_KEY_CRED_PARAMS = 0x04
    EXCLUDE_LIST = 0x05
    EXTENSIONS = 0x06
    OPTIONS = 0x07
    PIN_UV_AUTH_PARAM = 0x08
    PIN_UV_AUTH_PROTOCOL = 0x09
    ENTERPRISE_ATTESTATION = 0x0A
    ATTESTATION_FORMATS_PREFERENCE = 0x0B


@unique
class MakeCredentialResponseKey(IntEnum):
    FMT = 0x01
    AUTH_DATA = 0x02
    ATT_STMT = 0x03
    EP_ATT = 0x04
    LARGE_BLOB_KEY = 0x05


@unique
class GetAssertionKey(IntEnum):
    RP_ID = 0x01
    CLIENT_DATA_HASH = 0x02
    ALLOW_LIST = 0x03
    EXTENSIONS = 0x04
    OPTIONS = 0x05
    PIN_UV_AUTH_PARAM = 0x06
    PIN_UV_AUTH_PROTOCOL = 0x07


@unique
class GetAssertionResponseKey(IntEnum):
    CREDENTIAL = 0x01
    AUTH_DATA = 0x02
    SIGNATURE = 0x03
    USER = 0x04
    NUMBER_OF_CREDENTIALS = 0x05
    USER_SELECTED = 0x06
    LARGE_BLOB_KEY = 0x07


@unique
class InfoKey(IntEnum):
    VERSIONS = 0x01
    EXTENSIONS = 0x02
    AAGUID = 0x03
    OPTIONS = 0x04
    MAX_MSG_SIZE = 0x05
    PIN_UV_AUTH_PROTOCOLS = 0x06
    MAX_CREDENTIAL_COUNT_IN_LIST = 0x07
    MAX_CREDENTIAL_ID_LENGTH = 0x08
    TRANSPORTS = 0x09
    ALGORITHMS = 0x0A
    MAX_SERIALIZED_LARGE_BLOB_ARRAY = 0x0B
    FORCE_PIN_CHANGE = 0x0C
    MIN_PIN_LENGTH = 0x0D
    FIRMWARE_VERSION = 0x0E
    MAX_CRED_BLOB_LENGTH = 0x0F
    MAX_RPIDS_FOR_SET_MIN_PIN_LENGTH = 0x10
    PREFERRED_PLATFORM_UV_ATTEMPTS = 0x11
    UV_MODALITY = 0x12
    CERTIFICATIONS = 0x13
    REMAINING_DISCOVERABLE_CREDENTIALS = 0x14
    VENDOR_PROTOTYPE_CONFIG_COMMANDS = 0x15
    # CTAP 2.2 §6.4 (keys as in python-fido2's Info; tests/authenticator/test_ctap22.py).
    ATTESTATION_FORMATS = 0x16
    UV_COUNT_SINCE_LAST_PIN_ENTRY = 0x17
    LONG_TOUCH_FOR_RESET = 0x18
    ENC_IDENTIFIER = 0x19
    TRANSPORTS_FOR_RESET = 0x1A
    PIN_COMPLEXITY_POLICY = 0x1B
    PIN_COMPLEXITY_POLICY_URL = 0x1C
    MAX_PIN_LENGTH = 0x1D


@unique
class CoseAlg(IntEnum):
    """COSE algorithm identifiers this device may offer (IANA COSE registry)."""

    ES256 = -7
    EDDSA = -8
    ES384 = -35
    # ML-DSA (FIPS 204) in COSE (IANA COSE Algorithms; draft-ietf-cose-dilithium): key
    # type AKP (7), public key in parameter pub (-1). CTAP 2.1+ profiles only (profiles.py).
    MLDSA44 = -48
    MLDSA65 = -49
    MLDSA87 = -50


# authenticatorData flags (WebAuthn §6.1).
FLAG_UP = 0x01
FLAG_UV = 0x04
FLAG_BE = 0x08
FLAG_BS = 0x10
FLAG_AT = 0x40
FLAG_ED = 0x80

# Our maximum CTAP message (CTAPHID: 128 continuation packets of 59 bytes + 57 = 7609).
MAX_MSG_SIZE = 7609
