"""What an object store's error means, in one line: a missing bucket, refused credentials (the key
id masked, never the secret), access denied, the wrong region, an unreachable endpoint, or what the
store answered. obstore reports most failures as one error type with the store's XML answer in its
text, so the S3 error code and the HTTP status are read from there."""

from __future__ import annotations

import re
from dataclasses import dataclass

from obstore.exceptions import NotFoundError

_CODE = re.compile(r"<Code>([^<]+)</Code>")
_MESSAGE = re.compile(r"<Message>([^<]+)</Message>")
_STATUS = re.compile(r"status code: (\d{3})")
# What a store answers when the key id, the secret or the session token is wrong or expired.
REFUSED_CODES = frozenset({
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "TokenRefreshRequired",
    "InvalidClientTokenId", "UnrecognizedClientException",
})
REGION_CODES = frozenset({"PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException"})


def mask_key_id(key_id: str | None) -> str:
    """An access key id fit for a message: its first four and last three characters (``AKIA…XYZ``)."""
    if not key_id:
        return "none"
    return f"{key_id[:4]}…{key_id[-3:]}" if len(key_id) >= 10 else "…"

@dataclass(frozen=True)
class Failure:
    """What a store's error means: its ``kind`` (bucket, credentials, denied, region, unreachable,
    gone, other) and one line that says it."""

    kind: str
    line: str


def _connection_problem(text: str) -> str | None:
    """What kept a request from reaching the store, from obstore's error text, or None."""
    lowered = text.lower()
    for needle, said in (
        ("connection refused", "connection refused"),
        ("dns error", "the host name does not resolve"),
        ("failed to lookup address", "the host name does not resolve"),
        ("certificate", "its TLS certificate is not trusted"),
        ("timed out", "the connection timed out"),
        ("kind: connect", "the connection failed"),
        ("error sending request", "the request could not be sent"),
    ):
        if needle in lowered:
            return said
    return None


def describe_error(exc: BaseException, bucket: str, uri: str, endpoint: str, key_id: str | None) -> Failure:
    """The meaning of a store's error for ``bucket`` (``uri``: the source) at ``endpoint``, in one line (a key id masked)."""
    text = str(exc)
    code_match, status_match = _CODE.search(text), _STATUS.search(text)
    code = code_match.group(1) if code_match else ""
    status = int(status_match.group(1)) if status_match else None
    if code == "NoSuchBucket" or (status == 404 and not code and not isinstance(exc, (NotFoundError, FileNotFoundError))):
        return Failure("bucket", f"bucket {bucket!r} does not exist at {endpoint}")
    if code in REFUSED_CODES or (status == 401 and not code):
        return Failure(
            "credentials", f"the store at {endpoint} refused the credentials (key id {mask_key_id(key_id)} masked): {code or status}; "
            "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE",
        )
    if code == "AccessDenied" or status == 403:
        return Failure(
            "denied", f"the store at {endpoint} denied key id {mask_key_id(key_id)} (masked) access to bucket {bucket!r}: "
            f"{code or status}; it needs s3:ListBucket and s3:GetObject on {uri}",
        )
    if code in REGION_CODES or status == 301:
        return Failure("region", f"bucket {bucket!r} at {endpoint} is in another region ({code or status}); set CITADEL_S3_REGION")
    if isinstance(exc, (NotFoundError, FileNotFoundError)):
        return Failure("gone", f"not found at {endpoint}")
    problem = _connection_problem(text) if status is None else None
    if problem is not None:
        return Failure("unreachable", f"cannot reach the object store at {endpoint}: {problem}; check CITADEL_S3_ENDPOINT_URL")
    message = _MESSAGE.search(text)
    said = message.group(1) if message else text.splitlines()[0][:200] if text else type(exc).__name__
    return Failure("other", f"the object store at {endpoint} answered {status or ''} {code}: {said}".replace("  ", " "))
