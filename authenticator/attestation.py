"""Attestation: the per-installation batch chain, packed/none/self statements, enterprise.

A real security key carries a batch attestation key and certificate burned in at the factory,
shared by many devices of one model, chaining to the vendor's root CA. softkey makes the same
structure on first use and keeps it in the state's ``meta`` table:

    root CA (self-signed, CA:true)  ->  batch attestation certificate (CA:false, v3)
                                          subject C, O, OU="Authenticator Attestation", CN
                                          id-fido-gen-ce-aaguid 1.3.6.1.4.1.45724.1.1.4

The root is what an RP test trusts (``softkey attestation export-ca``, ``root_pem``). The
chain survives authenticatorReset, like a factory-installed key (store.wipe keeps it); only
deleting the state file makes a new one.

Modes (``Authenticator(attestation=...)``):
- ``"batch"`` (default): packed attestation signed by the batch key, ``x5c`` = [batch cert].
  U2F REGISTER uses the same key and certificate (fido-u2f format).
- ``"self"``: packed self attestation (signed by the credential key, no ``x5c``). U2F has no
  self attestation, so REGISTER then carries a self-signed certificate of the credential key.

The platform may ask for ``"none"`` with attestationFormatsPreference (makeCredential 0x0B);
enterprise attestation (makeCredential 0x0A) uses a device-unique certificate (it carries the
device's serial number) and sets ``epAtt`` (CTAP 2.1 §7.1, §6.1.2 steps 8 and 17).
"""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from . import cose
from .ctap import MAX_MSG_SIZE, CoseAlg, CtapError, MakeCredentialResponseKey, Status
from .profiles import CTAP2_1, Profile

if TYPE_CHECKING:
    from .store import Store

MODES = ("batch", "self")
DEFAULT_MODE = "batch"

# Formats this device can produce, in the order it prefers them when the platform has no say.
SUPPORTED_FORMATS = ("packed", "none")

OID_AAGUID = x509.ObjectIdentifier("1.3.6.1.4.1.45724.1.1.4")

# Meta names. The chain must outlive authenticatorReset (store.wipe keeps KEEP_ON_RESET);
# the enterprise switch and RP list must not (CTAP 2.1 §6.11: reset disables ep).
META_ROOT_KEY = "attestation_root_key"
META_ROOT_CERT = "attestation_root_cert"
META_BATCH_KEY = "attestation_key"
META_BATCH_CERT = "attestation_cert"
META_EP_KEY = "enterprise_attestation_key"
META_EP_CERT = "enterprise_attestation_cert"
META_EP_ENABLED = "enterprise_attestation"
META_EP_RP_IDS = "enterprise_attestation_rp_ids"
KEEP_ON_RESET = (
    META_ROOT_KEY,
    META_ROOT_CERT,
    META_BATCH_KEY,
    META_BATCH_CERT,
    META_EP_KEY,
    META_EP_CERT,
)

# An upper bound on a packed makeCredential response minus the credential's public key bytes
# and a self-attestation signature: status byte, fmt, CBOR framing, rpIdHash, flags, counter,
# AAGUID, the longest credential ID, every extension output at its longest, largeBlobKey.
# tests/authenticator/test_mldsa.py builds that worst case and checks the bound.
MAKE_CREDENTIAL_OVERHEAD = 512

# ISO 3166 "ZZ" is a user-assigned code: softkey is not incorporated anywhere, and the
# packed format only requires that C be present (WebAuthn §8.2.1).
COUNTRY = "ZZ"
ORGANIZATION = "softkey"
OU_ATTESTATION = "Authenticator Attestation"

# RFC 5280 §4.1.2.5: 99991231235959Z means "no well-defined expiration date".
_NOT_AFTER = datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.timezone.utc)


@dataclass(frozen=True)
class Signer:
    """An attestation private key and the DER certificate that goes into ``x5c``."""

    key: ec.EllipticCurvePrivateKey
    certificate: bytes

    def sign(self, message: bytes) -> bytes:
        return self.key.sign(message, ec.ECDSA(hashes.SHA256()))


def _key_der(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _load_key(der: bytes) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_der_private_key(der, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("attestation key in state is not an EC key")
    return key


def _not_before() -> datetime.datetime:
    # A day of slack so an RP whose clock lags ours still accepts a fresh chain.
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    return now - datetime.timedelta(days=1)


def _spki_hash(public: ec.EllipticCurvePublicKey) -> str:
    spki = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


def aaguid_extension(aaguid: bytes) -> x509.UnrecognizedExtension:
    """The FIDO AAGUID extension: extnValue is an OCTET STRING wrapping the 16 bytes."""
    if len(aaguid) != 16:
        raise ValueError("AAGUID must be 16 bytes")
    return x509.UnrecognizedExtension(OID_AAGUID, b"\x04\x10" + aaguid)


def _make_root() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key()
    # A per-installation tag in the CN lets a person tell two softkey roots apart.
    tag = _spki_hash(public)[:8]
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, COUNTRY),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, f"softkey Attestation Root CA {tag}"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(_not_before())
        .not_valid_after(_NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _make_leaf(
    root_key: ec.EllipticCurvePrivateKey,
    root_cert: x509.Certificate,
    aaguid: bytes,
    common_name: str,
    serial_number: str | None = None,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """An attestation certificate meeting WebAuthn §8.2.1 (packed certificate requirements)."""
    key = ec.generate_private_key(ec.SECP256R1())
    attributes = [
        x509.NameAttribute(NameOID.COUNTRY_NAME, COUNTRY),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, OU_ATTESTATION),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ]
    if serial_number is not None:
        attributes.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, serial_number))
    cert = (
        x509.CertificateBuilder()  # version 3 is cryptography's default and only choice
        .subject_name(x509.Name(attributes))
        .issuer_name(root_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_not_before())
        .not_valid_after(_NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()),
            critical=False,
        )
        # Must not be critical (WebAuthn §8.2.1).
        .add_extension(aaguid_extension(aaguid), critical=False)
        .sign(root_key, hashes.SHA256())
    )
    return key, cert


def _cert_aaguid(cert: x509.Certificate) -> bytes | None:
    try:
        ext = cert.extensions.get_extension_for_oid(OID_AAGUID)
    except x509.ExtensionNotFound:
        return None
    value = ext.value
    if isinstance(value, x509.UnrecognizedExtension) and value.value[:2] == b"\x04\x10":
        return value.value[2:]
    return None


def self_signed_u2f_certificate(alg: int, private_key: bytes) -> bytes:
    """A certificate of a U2F credential's own key, for REGISTER in self-attestation mode."""
    key = cose.load_private(alg, private_key)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("U2F credentials are P-256 keys")
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, "softkey U2F self attestation"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_not_before())
        .not_valid_after(_NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


class Attestation:
    """Attestation for one device: owns the chain in ``store`` and builds statements."""

    def __init__(self, store: Store, profile: Profile, mode: str = DEFAULT_MODE) -> None:
        if mode not in MODES:
            raise ValueError(
                f"unknown attestation mode {mode!r}; choose one of: {', '.join(MODES)}"
            )
        self.store = store
        self.profile = profile
        self.mode = mode
        self._cache: dict[str, Signer] = {}

    # -- the chain ------------------------------------------------------------------------

    def _root(self) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key_der = self.store.get_meta(META_ROOT_KEY)
        cert_der = self.store.get_meta(META_ROOT_CERT)
        if key_der is not None and cert_der is not None:
            return _load_key(key_der), x509.load_der_x509_certificate(cert_der)
        key, cert = _make_root()
        with self.store.transaction():
            self.store.set_meta(META_ROOT_KEY, _key_der(key))
            self.store.set_meta(META_ROOT_CERT, cert.public_bytes(serialization.Encoding.DER))
            # Leaves of an earlier root (if any) can no longer chain: drop them.
            for name in (META_BATCH_KEY, META_BATCH_CERT, META_EP_KEY, META_EP_CERT):
                self.store.delete_meta(name)
        self._cache.clear()
        return key, cert

    def _leaf(self, key_name: str, cert_name: str, common_name: str, serial: str | None) -> Signer:
        cached = self._cache.get(cert_name)
        if cached is not None:
            return cached
        root_key, root_cert = self._root()
        key_der = self.store.get_meta(key_name)
        cert_der = self.store.get_meta(cert_name)
        if key_der is not None and cert_der is not None:
            cert = x509.load_der_x509_certificate(cert_der)
            # Same root, same AAGUID: reuse. A state opened with a profile of another AAGUID
            # (a custom Profile object) gets a matching certificate from the same root.
            if cert.issuer == root_cert.subject and _cert_aaguid(cert) == self.profile.aaguid:
                signer = Signer(_load_key(key_der), cert_der)
                self._cache[cert_name] = signer
                return signer
        key, cert = _make_leaf(root_key, root_cert, self.profile.aaguid, common_name, serial)
        cert_der = cert.public_bytes(serialization.Encoding.DER)
        with self.store.transaction():
            self.store.set_meta(key_name, _key_der(key))
            self.store.set_meta(cert_name, cert_der)
        signer = Signer(key, cert_der)
        self._cache[cert_name] = signer
        return signer

    def batch(self) -> Signer:
        """The batch attestation key and certificate (created on first use)."""
        return self._leaf(
            META_BATCH_KEY, META_BATCH_CERT, f"softkey {self.profile.name} Batch Attestation", None
        )

    def enterprise(self) -> Signer:
        """The device-unique enterprise attestation key and certificate."""
        root_key, _ = self._root()
        # The serial identifies this installation (its root), which is the point of
        # enterprise attestation: tie a registration to one specific authenticator.
        serial = _spki_hash(root_key.public_key())[:16]
        return self._leaf(
            META_EP_KEY, META_EP_CERT, f"softkey {self.profile.name} Enterprise Attestation", serial
        )

    def root_certificate(self) -> x509.Certificate:
        return self._root()[1]

    def root_pem(self) -> bytes:
        """The root CA in PEM, for an RP to use as its trust anchor."""
        return self.root_certificate().public_bytes(serialization.Encoding.PEM)

    def root_der(self) -> bytes:
        return self.root_certificate().public_bytes(serialization.Encoding.DER)

    # -- enterprise attestation (CTAP 2.1 §7.1) ------------------------------------------------

    @property
    def enterprise_capable(self) -> bool:
        return self.profile.enterprise_attestation and self.profile.at_least(CTAP2_1)

    @property
    def enterprise_enabled(self) -> bool:
        return self.enterprise_capable and self.store.get_meta(META_EP_ENABLED) == b"1"

    def enable_enterprise(self) -> None:
        """authenticatorConfig enableEnterpriseAttestation (CTAP 2.1 §6.11.1)."""
        if not self.enterprise_capable:
            raise CtapError(
                Status.INVALID_PARAMETER, "this profile is not enterprise-attestation capable"
            )
        self.store.set_meta(META_EP_ENABLED, b"1")

    def enterprise_rp_ids(self) -> tuple[str, ...]:
        raw = self.store.get_meta(META_EP_RP_IDS)
        return tuple(raw.decode().split("\n")) if raw else ()

    def set_enterprise_rp_ids(self, rp_ids: list[str] | tuple[str, ...]) -> None:
        """The vendor-facilitated list (a real key has it burned in; tests set it here)."""
        if any("\n" in r or not r for r in rp_ids):
            raise ValueError("RP IDs must be non-empty and contain no newline")
        if rp_ids:
            self.store.set_meta(META_EP_RP_IDS, "\n".join(rp_ids).encode())
        else:
            self.store.delete_meta(META_EP_RP_IDS)

    def info_options(self) -> dict[str, bool]:
        # "ep" present only on capable keys: false until enabled (CTAP 2.1 §6.4).
        if not self.enterprise_capable:
            return {}
        return {"ep": self.enterprise_enabled}

    def check_enterprise_request(self, value: int | None, rp_id: str) -> bool:
        """makeCredential enterpriseAttestation: True if this request gets an enterprise one.

        CTAP 2.1 §6.1.2 step 8 (validation) and step 17 (which attestation to return).
        """
        if value is None:
            return False
        if not self.enterprise_enabled:
            raise CtapError(
                Status.INVALID_PARAMETER,
                "enterprise attestation was requested but is "
                + (
                    "disabled (enable it with authenticatorConfig)"
                    if self.enterprise_capable
                    else "not supported by this profile"
                ),
            )
        if value not in (1, 2):
            raise CtapError(Status.INVALID_OPTION, f"enterpriseAttestation {value} is not 1 or 2")
        if value == 1:
            # Vendor-facilitated: only for the pre-configured RP IDs; anyone else gets the
            # ordinary (batch) attestation, without an error.
            return rp_id in self.enterprise_rp_ids()
        return True  # platform-managed: the platform vouches for the RP

    # -- statements -----------------------------------------------------------------------

    def fits(self, alg: int) -> bool:
        """Whether every makeCredential response for ``alg`` fits maxMsgSize (CTAP 2.1 §6.4;
        CTAPHID carries at most 7609 bytes, §11.2.4). Batch and enterprise statements are
        ES256 with a certificate of well under 1 kB, and the largest credential public key
        (ML-DSA-87, 2592 bytes) leaves room for them (~3.7 kB in all). A self-attestation
        statement carries the credential's own signature: ML-DSA-87's key and 4627-byte
        signature leave 390 bytes, less than the rest of a worst-case response may take, so
        a self-attesting key does not offer it (docs/credential-id.md "ML-DSA")."""
        if self.mode != "self":
            return True
        size = MAKE_CREDENTIAL_OVERHEAD + cose.public_key_len(alg) + cose.max_signature_len(alg)
        return size <= MAX_MSG_SIZE

    @staticmethod
    def choose_format(preference: list[Any] | None) -> str:
        """attestationFormatsPreference: the first format we support, else our default."""
        for fmt in preference or ():
            if isinstance(fmt, str) and fmt in SUPPORTED_FORMATS:
                return fmt
        return SUPPORTED_FORMATS[0]

    def statement(
        self,
        auth_data: bytes,
        client_data_hash: bytes,
        alg: int,
        private_key: bytes | cose.PrivateKey,
        *,
        fmt: str = "packed",
        enterprise: bool = False,
    ) -> dict[int, Any]:
        """The makeCredential response members fmt, authData, attStmt and epAtt."""
        R = MakeCredentialResponseKey
        response: dict[int, Any] = {R.AUTH_DATA: auth_data}
        signed = auth_data + client_data_hash
        if fmt == "none":
            response[R.FMT] = "none"
            response[R.ATT_STMT] = {}
            return response
        response[R.FMT] = "packed"
        if enterprise:
            signer = self.enterprise()
            response[R.ATT_STMT] = {
                "alg": CoseAlg.ES256,
                "sig": signer.sign(signed),
                "x5c": [signer.certificate],
            }
            response[R.EP_ATT] = True
        elif self.mode == "self":
            response[R.ATT_STMT] = {"alg": alg, "sig": cose.sign(alg, private_key, signed)}
        else:
            signer = self.batch()
            response[R.ATT_STMT] = {
                "alg": CoseAlg.ES256,
                "sig": signer.sign(signed),
                "x5c": [signer.certificate],
            }
        return response

    def u2f(self, alg: int, private_key: bytes) -> tuple[bytes, Any]:
        """(certificate DER, sign function) for a U2F REGISTER response."""
        if self.mode == "self":
            cert = self_signed_u2f_certificate(alg, private_key)
            return cert, lambda message: cose.sign(alg, private_key, message)
        signer = self.batch()
        return signer.certificate, signer.sign
