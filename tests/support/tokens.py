"""JWTs for tests, minted with PyJWT directly (not with the code under test)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

SECRET = "test-secret-of-at-least-32-bytes-0123456789"


def mint(
    key: Any = SECRET,
    sub: str = "alice",
    subscribe: list[str] | None = None,
    publish: list[str] | None = None,
    admin: bool = False,
    ttl: float = 300,
    algorithm: str = "HS256",
    **claims: Any,
) -> str:
    """A token; ``exp=None`` in ``claims`` leaves ``exp`` out."""
    body: dict[str, Any] = {"sub": sub, "exp": int(time.time() + ttl)}
    body["jobstream"] = {"subscribe": subscribe or [], "publish": publish or [], "admin": admin}
    body.update(claims)
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm=algorithm)


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_pem(private: Any) -> bytes:
    return private.public_key().public_bytes(  # type: ignore[no-any-return]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def write_public_key(private: Any, path: Path) -> str:
    path.write_bytes(public_pem(private))
    return str(path)
