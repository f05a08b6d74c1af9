"""Admin with the ``biometrics`` permission: ``/api/faces`` (enrol with consent, list, erase, right-of-access export).

The same rules as ``trustcam faces``: each photo needs exactly one face, every refused photo is named with the
reason and nothing is stored unless all are usable. Uploaded photos are parsed from the request body in memory
(Starlette's form parser would spool large files to a temporary file on disk) and dropped after embedding.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from pydantic import Field

from trustcam.errors import UserError
from trustcam.security.roles import Role
from trustcam.web.auth import Principal, audit, require
from trustcam.web.models import ApiModel

if TYPE_CHECKING:
    import numpy as np

    from trustcam.storage.faces import FaceStore, Identity, Template
    from trustcam.vision.faces import FaceRecognizer

router = APIRouter(tags=["faces"])
MAX_BODY = 32 * 1024 * 1024  # a few phone photos; more is refused before it is held in memory
MAX_IMAGES = 20
_lock = threading.Lock()


def require_biometrics(principal: Annotated[Principal, Depends(require(Role.admin))]) -> Principal:
    """Admins only, and only with the per-user ``biometrics`` permission (no role implies it)."""
    if not principal.biometrics:
        raise HTTPException(403, "managing enrolled faces needs the 'biometrics' permission; an admin grants it "
                            "with PATCH /api/users/{username} {\"biometrics\": true}")
    return principal


Biometrics = Annotated[Principal, Depends(require_biometrics)]


class FaceOut(ApiModel):
    name: str
    enrolled_by: str
    enrolled_at: float
    consent: str = Field(description="The legal basis or consent stated at enrolment.")
    expires_at: float | None = Field(description="When the enrolment is shredded; null: no expiry.")
    templates: int = Field(description="How many templates are stored (the templates themselves never leave).")

    @classmethod
    def of(cls, identity: Identity) -> FaceOut:
        return cls(name=identity.name, enrolled_by=identity.created_by, enrolled_at=identity.created_at,
                   consent=identity.consent, expires_at=identity.expires_at, templates=identity.templates)


class Refusal(ApiModel):
    image: str
    reason: str


def _store(request: Request) -> FaceStore:
    """One store per app (its gallery cache is shared); made on first use."""
    extras = request.app.state.ctx.extras
    with _lock:
        if "face_store" not in extras:
            from trustcam.storage.faces import FaceStore
            from trustcam.storage.keys import Keyring

            settings = request.app.state.ctx.settings
            extras["face_store"] = FaceStore(request.app.state.ctx.engine, Keyring(settings.vault), settings.data_dir)
        return extras["face_store"]  # type: ignore[no-any-return]


def _recognizer(request: Request) -> FaceRecognizer:
    """Loaded on the first enrolment only (dlib's models take a second and ~100 MB)."""
    extras = request.app.state.ctx.extras
    with _lock:
        if "face_recognizer" not in extras:
            from trustcam.vision.faces import FaceRecognizer

            extras["face_recognizer"] = FaceRecognizer()
        return extras["face_recognizer"]  # type: ignore[no-any-return]


def _shred_expired(request: Request, store: FaceStore) -> None:
    """As every CLI face command does: no enrolment outlives its date by more than a request."""
    for erased in store.shred_expired():
        audit(request, None, "faces.expire", erased.name, templates=erased.templates,
              events_relabelled=erased.events_relabelled)


@contextmanager
def _user_errors() -> Iterator[None]:
    """A store refusal (bad name, already enrolled, past expiry, key file gone) is a 422 with its message."""
    try:
        yield
    except UserError as exc:
        raise HTTPException(422, str(exc)) from None


# --- multipart, in memory -----------------------------------------------------------------------------------------


async def _body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY:
        raise HTTPException(413, f"upload of {int(declared)} bytes is over {MAX_BODY // 2**20} MiB; send fewer or "
                            "smaller photos")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise HTTPException(413, f"upload over {MAX_BODY // 2**20} MiB; send fewer or smaller photos")
        chunks.append(chunk)
    return b"".join(chunks)


def _disposition(header: str) -> dict[str, str]:
    from email.message import Message

    message = Message()
    message["content-disposition"] = header
    params = message.get_params(header="content-disposition") or []
    return {str(k).lower(): str(v) for k, v in params[1:]}


def parse_multipart(content_type: str, body: bytes) -> tuple[dict[str, str], list[tuple[str, bytes]]]:
    """``multipart/form-data`` → (text fields, [(file name, bytes)] of the ``images`` parts), all in memory."""
    from email.message import Message

    header = Message()
    header["content-type"] = content_type
    boundary = header.get_param("boundary") if header.get_content_type() == "multipart/form-data" else None
    if not isinstance(boundary, str) or not boundary:
        raise HTTPException(422, "send the enrolment as multipart/form-data (fields name, consent, expires and "
                            "one or more files named images)")
    fields: dict[str, str] = {}
    files: list[tuple[str, bytes]] = []
    for part in (b"\r\n" + body).split(b"\r\n--" + boundary.encode())[1:]:
        if part.startswith(b"--"):
            break  # the closing delimiter
        head, sep, content = part.partition(b"\r\n\r\n")
        if not sep:
            raise HTTPException(422, "malformed multipart body (a part without headers); let the browser or "
                                "HTTP client build it")
        headers = dict(line.decode("utf-8", "replace").split(":", 1) for line in head.split(b"\r\n")[1:]
                       if b":" in line)
        params = _disposition(next((v for k, v in headers.items() if k.strip().lower() == "content-disposition"),
                                   "form-data"))
        name = params.get("name", "")
        if name == "images":
            files.append((params.get("filename") or f"image {len(files) + 1}", content))
        elif name:
            fields[name] = content.decode("utf-8", "replace")
    return fields, files


# --- routes -------------------------------------------------------------------------------------------------------

ENROL_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["name", "consent", "images"],
    "properties": {
        "name": {"type": "string", "maxLength": 64, "description": "As it will appear on events (sub_label)."},
        "consent": {"type": "string", "maxLength": 2000, "description": "The legal basis or consent given."},
        "expires": {"type": "string", "description": "Shred the enrolment on this date (YYYY-MM-DD)."},
        "images": {"type": "array", "items": {"type": "string", "format": "binary"},
                   "description": f"1-{MAX_IMAGES} photos of this person alone (one face each)."},
    }}}}}}


@router.get("/api/faces", response_model=list[FaceOut])
def list_faces(request: Request, principal: Biometrics) -> list[FaceOut]:
    store = _store(request)
    _shred_expired(request, store)
    return [FaceOut.of(identity) for identity in store.identities()]


def _templates(request: Request, files: list[tuple[str, bytes]]) -> tuple[list[Template], list[Refusal]]:
    """Embed every photo (decoded in memory, never written); the refusals name the photo and the reason."""
    import cv2
    import numpy as np

    from trustcam.storage.faces import Template
    from trustcam.vision.faces import FaceError, single_face

    recognizer = _recognizer(request)
    templates: list[Template] = []
    refusals: list[Refusal] = []
    for filename, data in files:
        image: np.ndarray | None = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
        if image is None:
            refusals.append(Refusal(image=filename, reason=f"{filename}: not a readable image (JPEG, PNG, …)"))
            continue
        try:
            face = single_face(recognizer, image, filename)
        except FaceError as exc:
            refusals.append(Refusal(image=filename, reason=str(exc)))
            continue
        templates.append(Template(recognizer.embed(image, face), hashlib.sha256(data).hexdigest(),
                                  face.quality.score))
    return templates, refusals


@router.post("/api/faces", status_code=201, response_model=FaceOut, openapi_extra=ENROL_BODY)
async def enroll_face(request: Request, principal: Biometrics) -> FaceOut | JSONResponse:
    from starlette.concurrency import run_in_threadpool

    fields, files = parse_multipart(request.headers.get("content-type", ""), await _body(request))
    name, consent, expires = (fields.get(k, "").strip() for k in ("name", "consent", "expires"))
    if not name or not consent:
        raise HTTPException(422, "give the person's name and the consent (legal basis) they gave")
    if not files or len(files) > MAX_IMAGES:
        raise HTTPException(422, f"give 1 to {MAX_IMAGES} photos (files named 'images'); got {len(files)}")
    with _user_errors():
        from trustcam.cli.face_commands import parse_expiry

        expires_at = parse_expiry(expires) if expires else None
    templates, refusals = await run_in_threadpool(_templates, request, files)
    del files
    if refusals:  # like the CLI: all or nothing, every refused photo named with its reason
        detail = (f"'{name}' not enrolled: {len(refusals)} of {len(refusals) + len(templates)} image(s) refused, "
                  f"nothing was stored: " + "; ".join(r.reason for r in refusals))
        return JSONResponse({"detail": detail, "refused": [r.model_dump() for r in refusals]}, status_code=422)
    store = _store(request)
    with _user_errors():
        _shred_expired(request, store)
        identity = store.enroll(name, templates, consent=consent, by=principal.username, expires_at=expires_at)
    audit(request, principal, "faces.enroll", identity.name, templates=identity.templates, expires_at=expires or None,
          consent_sha256=hashlib.sha256(identity.consent.encode()).hexdigest())
    return FaceOut.of(identity)


@router.delete("/api/faces/{name}", status_code=204, response_class=Response)
def erase_face(name: str, request: Request, principal: Biometrics) -> Response:
    store = _store(request)
    if store.get(name) is None:
        raise HTTPException(404, f"no enrolled identity named '{name}'")
    with _user_errors():
        erased = store.erase(name)
    audit(request, principal, "faces.erase", erased.name, templates=erased.templates,
          events_relabelled=erased.events_relabelled)
    return Response(status_code=204)


@router.get("/api/faces/{name}/export")
def export_face(name: str, request: Request, principal: Biometrics) -> dict[str, Any]:
    """Right of access: what is stored about the person, since when, on which events (never template bytes)."""
    store = _store(request)
    _shred_expired(request, store)
    if store.get(name) is None:
        raise HTTPException(404, f"no enrolled identity named '{name}'")
    with _user_errors():
        record = store.export(name)
    audit(request, principal, "faces.export", record["identity"], events=len(record["events"]))
    return record
