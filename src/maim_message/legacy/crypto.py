"""Legacy TCP encryption (wire §2.4, §2.5): X25519 + HKDF-SHA256 + ChaCha20-Poly1305.

``CryptoSession`` is the sans-I/O state of one connection: key pair, derived cipher,
outgoing sequence counter and the replay guard for incoming sequence numbers.
``CryptoManager`` keeps the method names of 0.6.8's class for code that imported it.
"""

from __future__ import annotations

import os
import struct
from typing import Any, Dict, Optional, Tuple

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ..core.codec import dumps_compat, loads_compat
from ..errors import MaimMessageError
from .tcp_framing import (
    NONCE_SIZE,
    FrameError,
    FrameType,
    encode_frame,
    pack_data_payload,
    unpack_data_payload,
)

__all__ = ["HKDF_INFO", "CryptoManager", "CryptoSession", "FrameType", "ReplayError"]

HKDF_INFO = b"handshake data"
PUBLIC_KEY_SIZE = 32
_SEQ = struct.Struct("!Q")


class ReplayError(MaimMessageError, ValueError):
    """A data frame's sequence number is not above the last one accepted."""


def _derive(private_key: X25519PrivateKey, peer_public: bytes) -> ChaCha20Poly1305:
    if len(peer_public) != PUBLIC_KEY_SIZE:
        raise FrameError(f"peer public key must be 32 bytes, got {len(peer_public)}")
    shared = private_key.exchange(X25519PublicKey.from_public_bytes(peer_public))
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=HKDF_INFO).derive(shared)
    return ChaCha20Poly1305(key)


class CryptoSession:
    """Crypto state of one TCP connection.

    The incoming side enforces strictly increasing sequence numbers (0.6.8 did not check
    them). The first accepted number may be anything: a 0.6.8 client keeps one counter
    for its whole lifetime, so after a reconnect its registration frame is not ``0``.
    """

    __slots__ = ("_cipher", "_last_in", "_private", "next_out")

    def __init__(self, private_key: Optional[X25519PrivateKey] = None) -> None:
        self._private = private_key or X25519PrivateKey.generate()
        self._cipher: Optional[ChaCha20Poly1305] = None
        self._last_in = -1
        self.next_out = 0

    @property
    def public_bytes(self) -> bytes:
        return self._private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @property
    def established(self) -> bool:
        return self._cipher is not None

    def handshake_frame(self) -> bytes:
        """Type-1 frame with our public key (both directions use type 1, as 0.6.8 does)."""
        return encode_frame(FrameType.HANDSHAKE_REQUEST, self.public_bytes)

    def establish(self, peer_public: bytes) -> None:
        self._cipher = _derive(self._private, peer_public)
        self._last_in = -1

    def encrypt(self, obj: Any) -> bytes:
        """A complete data frame (type 3) carrying ``obj`` as JSON."""
        return self.encrypt_bytes(dumps_compat(obj))

    def encrypt_bytes(self, plaintext: bytes) -> bytes:
        if self._cipher is None:
            raise ValueError("encryption session not established")
        seq = self.next_out
        self.next_out = seq + 1
        nonce = os.urandom(NONCE_SIZE)
        ciphertext = self._cipher.encrypt(nonce, plaintext, _SEQ.pack(seq))
        return encode_frame(FrameType.DATA, pack_data_payload(nonce, seq, ciphertext))

    def decrypt_bytes(self, payload: bytes) -> bytes:
        """Plaintext of a data frame payload; raises ``InvalidTag``/``ReplayError``."""
        if self._cipher is None:
            raise ValueError("encryption session not established")
        nonce, seq, ciphertext = unpack_data_payload(payload)
        plaintext = self._cipher.decrypt(nonce, ciphertext, _SEQ.pack(seq))
        if seq <= self._last_in:
            raise ReplayError(f"sequence {seq} not above last accepted {self._last_in}")
        self._last_in = seq
        return plaintext

    def decrypt(self, payload: bytes) -> Any:
        return loads_compat(self.decrypt_bytes(payload))


class CryptoManager:
    """0.6.8-compatible helper (same method names); new code uses :class:`CryptoSession`."""

    def __init__(self) -> None:
        self.private_key = X25519PrivateKey.generate()
        self.public_key = self.private_key.public_key()
        self.shared_key: Optional[bytes] = None
        self.cipher: Optional[ChaCha20Poly1305] = None

    def get_public_bytes(self) -> bytes:
        return self.public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)

    def compute_shared_key(self, peer_public_key_bytes: bytes) -> None:
        shared = self.private_key.exchange(X25519PublicKey.from_public_bytes(peer_public_key_bytes))
        self.shared_key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=HKDF_INFO
        ).derive(shared)
        self.cipher = ChaCha20Poly1305(self.shared_key)

    def encrypt_message(self, data: Dict[str, Any], sequence: int) -> Tuple[bytes, bytes]:
        if self.cipher is None:
            raise ValueError("encryption session not established")
        iv = os.urandom(NONCE_SIZE)
        return iv, self.cipher.encrypt(iv, dumps_compat(data), _SEQ.pack(sequence))

    def decrypt_message(self, iv: bytes, encrypted_data: bytes, sequence: int) -> Any:
        if self.cipher is None:
            raise ValueError("encryption session not established")
        return loads_compat(self.cipher.decrypt(iv, encrypted_data, _SEQ.pack(sequence)))

    @staticmethod
    def create_frame(frame_type: int, payload: bytes) -> bytes:
        return encode_frame(frame_type, payload)

    @staticmethod
    def parse_frame(data: bytes) -> Tuple[FrameType, bytes]:
        length, ftype = struct.unpack("!IB", data[:5])
        return FrameType(ftype), data[5:length]

    @staticmethod
    def create_handshake_frame(public_key: bytes) -> bytes:
        return encode_frame(FrameType.HANDSHAKE_REQUEST, public_key)

    @staticmethod
    def create_data_frame(iv: bytes, encrypted_data: bytes, sequence: int) -> bytes:
        return encode_frame(FrameType.DATA, pack_data_payload(iv, sequence, encrypted_data))

    @staticmethod
    def parse_data_frame(payload: bytes) -> Tuple[bytes, bytes, int]:
        nonce, seq, ciphertext = unpack_data_payload(payload)
        return nonce, ciphertext, seq
