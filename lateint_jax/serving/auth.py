"""Who may call the HTTP API: a bearer API key, and CORS when asked for.

With a key set, every data endpoint needs `Authorization: Bearer <key>`; write endpoints need it
always (a server without a key refuses writes unless started with `--insecure-writes`).
`read_access` and `write_access` are FastAPI dependencies: a router of write routes is mounted
with `app.include_router(router, dependencies=[Depends(write_access)])`.
Missing or malformed header: 401 with `WWW-Authenticate: Bearer`; wrong key: 403.
The key is never logged and never appears in a message or a repr.
"""

from __future__ import annotations

import hmac
import os
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, Request, Security
from fastapi.exception_handlers import http_exception_handler
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from starlette.exceptions import HTTPException as StarletteHTTPException

from lateint_jax.errors import InputError

API_KEY_ENV = "LATEINT_API_KEY"
MIN_KEY_CHARS = 16
REALM = "lateint-jax"
KEY_CHARS = frozenset(string.ascii_letters + string.digits + "-._~+/=")  # RFC 6750 b64token

# auto_error=False: a missing or non-bearer header gets our own 401 message, not FastAPI's.
bearer = HTTPBearer(
    auto_error=False,
    scheme_name="APIKey",
    description="`Authorization: Bearer <key>`: the key the server was started with "
    f"(--api-key-file or ${API_KEY_ENV}). Needed for every endpoint but /health and the pages "
    "when the server has a key, and always for writes.",
)


@dataclass(frozen=True)
class AccessPolicy:
    """`api_key` None: reads are open; writes are refused unless `insecure_writes`."""

    api_key: str | None = field(default=None, repr=False)
    insecure_writes: bool = False
    cors_origins: tuple[str, ...] = ()

    def __post_init__(self):
        if self.api_key is not None:
            check_key(self.api_key, "the API key")

    @property
    def has_key(self) -> bool:
        return self.api_key is not None


class AccessDenied(Exception):
    def __init__(self, status_code: int, message: str):
        super().__init__(message)
        self.status_code = status_code
        self.message = message


def check_key(key: str, source: str) -> str:
    """The key if usable as a bearer token, else an InputError naming `source` (not the key)."""
    if len(key) < MIN_KEY_CHARS:
        raise InputError(f"{source} is shorter than {MIN_KEY_CHARS} characters")
    if not set(key) <= KEY_CHARS:
        raise InputError(
            f"{source} may hold only letters, digits and - . _ ~ + / = (it goes in an HTTP header)"
        )
    return key


def check_origin(origin: str) -> str:
    """`*` or scheme://host[:port], as browsers send it in the Origin header."""
    if origin == "*" or re.fullmatch(r"https?://[^/\s?#]+", origin):
        return origin
    raise InputError(
        f"--cors-origin {origin!r} is not an origin: give scheme://host[:port] "
        "(no path, e.g. https://app.example.com) or *"
    )


def load_api_key(key_file: str | None, environ=os.environ) -> tuple[str | None, str | None]:
    """(key, where it came from) from `--api-key-file` (first) or $LATEINT_API_KEY; (None, None)
    when neither is set. Surrounding whitespace (a trailing newline) is not part of the key."""
    if key_file:
        path = Path(key_file)
        try:
            key = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise InputError(f"--api-key-file {path} does not exist") from None
        except (OSError, UnicodeDecodeError) as err:
            raise InputError(f"--api-key-file {path} cannot be read: {err}") from None
        source = f"--api-key-file {path}"
        if not key:
            raise InputError(f"{source} is empty")
        return check_key(key, source), source
    key = environ.get(API_KEY_ENV, "").strip()
    if key:
        return check_key(key, f"${API_KEY_ENV}"), f"${API_KEY_ENV}"
    return None, None


def startup_check(policy: AccessPolicy, writable: bool) -> None:
    """A writable server needs a key unless `--insecure-writes` says otherwise."""
    if writable and not policy.has_key and not policy.insecure_writes:
        raise InputError(
            "writes are enabled but no API key is set: give --api-key-file FILE or set "
            f"${API_KEY_ENV} (or pass --insecure-writes to let anyone who can reach the port "
            "change the index)"
        )


def _policy(request: Request) -> AccessPolicy:
    return getattr(request.app.state, "access", None) or AccessPolicy()


def _credentials(request: Request) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, else None."""
    scheme, token = get_authorization_scheme_param(request.headers.get("Authorization"))
    return token if scheme.lower() == "bearer" and token else None


def _check(request: Request, write: bool) -> None:
    policy = _policy(request)
    if not policy.has_key:
        if write and not policy.insecure_writes:
            raise AccessDenied(
                403,
                "writes are disabled: a server takes writes only when started with --writable "
                f"and an API key (--api-key-file FILE or ${API_KEY_ENV})",
            )
        return
    token = _credentials(request)
    if token is None:
        if request.headers.get("Authorization") is None:
            raise AccessDenied(
                401, "missing API key: send the header 'Authorization: Bearer <key>'"
            )
        raise AccessDenied(401, "malformed Authorization header: expected 'Bearer <key>'")
    if not hmac.compare_digest(token.encode("utf-8", "surrogateescape"), policy.api_key.encode()):
        raise AccessDenied(403, "invalid API key")


# The `credentials` parameters declare the bearer scheme in the OpenAPI schema (the docs'
# "Authorize" button); the check reads the header itself, the same way for both.
async def read_access(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]
) -> None:
    """Dependency of every data endpoint: open without a key, the key otherwise."""
    _check(request, write=False)


async def write_access(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]
) -> None:
    """Dependency of every endpoint that changes the index: the key, always (or, without
    one, a server started with `insecure_writes`)."""
    _check(request, write=True)


def _guards(dependant) -> set:
    found, stack = set(), [dependant]
    while stack:
        node = stack.pop()
        if node is None:
            continue
        if node.call in (read_access, write_access):
            found.add(node.call)
        stack.extend(node.dependencies)
    return found


def denial(request: Request) -> JSONResponse | None:
    """The 401/403 answer for a request its route's guard refuses, else None. FastAPI parses
    the body before it runs dependencies: the 400 and 422 handlers ask this first, so a caller
    without the key gets 401 and learns nothing about the request's shape."""
    guards = _guards(getattr(request.scope.get("route"), "dependant", None))
    try:
        for guard in guards:
            _check(request, write=guard is write_access)
    except AccessDenied as err:
        return _response(err)
    return None


def _response(err: AccessDenied) -> JSONResponse:
    headers = {"WWW-Authenticate": f'Bearer realm="{REALM}"'} if err.status_code == 401 else None
    return JSONResponse(
        status_code=err.status_code,
        content={
            "error": err.message,
            "detail": [{"field": "Authorization", "message": err.message}],
        },
        headers=headers,
    )


async def _denied(request: Request, err: AccessDenied) -> JSONResponse:
    return _response(err)


async def _http_error(request: Request, err: StarletteHTTPException):
    """FastAPI's own answer (e.g. 400 for a body it cannot parse), unless the caller has no
    right to the route at all."""
    return denial(request) or await http_exception_handler(request, err)


def install(app: FastAPI, policy: AccessPolicy) -> None:
    """Attach `policy` to `app`: the answers to denied requests and, if origins are given, CORS
    (off otherwise: browsers then let only same-origin pages call the API)."""
    app.state.access = policy
    app.add_exception_handler(AccessDenied, _denied)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    if policy.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(policy.cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
