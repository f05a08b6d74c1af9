"""Config over the API, safely: read it redacted, change only an allow-list of declared fields.

Anything that names a file, a device, a URL or a secret (camera sources, data_dir, vault and TLS paths,
password and secret files, the database URL, webhook URLs) can only be changed by editing the file on the
server: over the API it could make the server read ``/etc/shadow``, open a device, or send alerts elsewhere.
Every change is validated by the same schema as the file, written atomically with a backup, audited with
before and after, and applied at the next restart.
"""

from __future__ import annotations

import copy
import os
import shutil
import threading
from pathlib import Path
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Body, Depends, HTTPException, Request

from trustcam.config import ConfigError
from trustcam.config.loader import parse_settings
from trustcam.redaction import redact_url
from trustcam.security.roles import Role
from trustcam.web.auth import Principal, audit, require
from trustcam.web.context import AppContext, Ctx

router = APIRouter(tags=["config"])
Admin = Annotated[Principal, Depends(require(Role.admin))]
LEAF = None  # the value replaces the key as a whole (then validated by the schema)
_lock = threading.Lock()

Spec = dict[str, Any]
CAMERA: Spec = {
    "enabled": LEAF,
    "detect": {"fps": LEAF},
    "motion": {"threshold": LEAF, "min_area": LEAF, "global_change": LEAF, "mask": LEAF},
    "objects": {"track": LEAF, "filters": LEAF, "mask": LEAF},
    "zones": LEAF,
    "rules": LEAF,
    "privacy_masks": LEAF,
    "tamper": {"enabled": LEAF, "confirm_s": LEAF},
    "canary": {"enabled": LEAF, "every_s": LEAF, "deadline_s": LEAF},
    "drift": {"enabled": LEAF, "window_s": LEAF, "check_every_s": LEAF, "min_samples": LEAF},
}
ALLOWED: Spec = {"detector": {"score_threshold": LEAF}, "cameras": {"*": CAMERA}}

# Why these are refused, in words a user understands
_FORBIDDEN_WHY = {
    "source": "a camera source could make the server open any file, device or URL",
    "data_dir": "it is a path on the server", "database_url": "it names where all data is stored",
    "vault": "vault paths and keys protect the evidence", "tls_cert": "it is a path on the server",
    "tls_key": "it is a path on the server", "password_file": "it is a path to a secret",
    "secret_file": "it is a path to a secret", "secret_env": "it names a secret", "webhooks": "webhook URLs decide "
    "where alerts (and their snapshots) are sent", "server": "it controls access to this server",
    "alerts": "it decides where alerts are sent", "record": "it controls what evidence is kept",
}


def _allowed_paths(spec: Spec, prefix: str = "") -> list[str]:
    out = []
    for key, sub in spec.items():
        path = f"{prefix}{'<camera>' if key == '*' else key}"
        out += [path] if sub is LEAF else _allowed_paths(sub, path + ".")
    return out


class Refused(Exception):
    def __init__(self, status: int, detail: str, path: str) -> None:
        super().__init__(detail)
        self.status, self.detail, self.path = status, detail, path


def _check_tags(value: Any, path: str) -> None:
    """A YAML tag (``!!python/...``) in a key or string has no business in a config change; refuse it outright."""
    if isinstance(value, str) and value.lstrip().startswith("!"):
        raise Refused(422, f"{path}: YAML tags such as {value.split()[0][:40]!r} are not accepted", path)
    if isinstance(value, dict):
        for key, item in value.items():
            _check_tags(key, path)
            _check_tags(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_tags(item, f"{path}[{index}]")


def _apply(data: dict[str, Any], patch: Any, spec: Spec, path: str, changes: list[dict[str, Any]],
           cameras: set[str]) -> None:
    if not isinstance(patch, dict):
        raise Refused(422, f"{path or 'body'}: expected an object of keys, got {type(patch).__name__}", path)
    for key, value in patch.items():
        where = f"{path}.{key}" if path else str(key)
        sub_spec = spec.get("*") if "*" in spec else spec.get(key, "missing")
        if "*" in spec and key not in cameras:
            raise Refused(404, f"{where}: no camera '{key}' in the config; cameras are added in the config file "
                               "on the server", where)
        if sub_spec == "missing":
            why = _FORBIDDEN_WHY.get(str(key))
            if why:
                raise Refused(403, f"{where} cannot be changed over the API ({why}); edit the config file on the "
                                   "server", where)
            raise Refused(403, f"{where} is not changeable over the API; changeable: "
                               f"{', '.join(_allowed_paths(ALLOWED))}", where)
        if sub_spec is LEAF:
            before = copy.deepcopy(data.get(key))
            data[key] = copy.deepcopy(value)
            changes.append({"path": where, "before": before, "after": value})
        else:
            node = data.setdefault(key, {})
            if node is None:
                node = data[key] = {}
            _apply(node, value, sub_spec, where, changes, cameras)


def _write_atomic(path: Path, text: str) -> Path:
    backup = path.with_name(path.name + ".bak")
    shutil.copy2(path, backup)
    tmp = path.with_name(f".{path.name}.part")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(tmp, path.stat().st_mode & 0o777)
    os.replace(tmp, path)
    return backup


def _read_config(path: Path) -> dict[str, Any]:
    """The config file as plain data: ``safe_load`` never builds Python objects from tags, whoever wrote them."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise Refused(409, f"the config file on the server is not valid plain YAML ({type(exc).__name__}; YAML tags "
                           "such as !!python/... are not accepted); fix it on the server first", "config") from None
    if not isinstance(raw, dict):
        raise Refused(409, "the config file on the server is not a mapping of keys; fix it on the server first",
                      "config")
    return raw


def redacted(ctx: AppContext) -> dict[str, Any]:
    data = ctx.settings.model_dump(mode="json")
    data["data_dir"] = "<redacted>"
    data["database_url"] = "<redacted>" if data.get("database_url") else None
    for key in ("root", "mirror", "key_file", "signing_key_file"):
        if data["vault"].get(key) is not None:
            data["vault"][key] = "<redacted>"
    for key in ("tls_cert", "tls_key"):
        if data["server"].get(key) is not None:
            data["server"][key] = "<redacted>"
    mqtt = data["alerts"]["mqtt"]
    if mqtt.get("password_file") is not None:
        mqtt["password_file"] = "<redacted>"
    for hook in data["alerts"]["webhooks"]:
        hook["url"] = redact_url(hook["url"])
        if hook.get("secret_file") is not None:
            hook["secret_file"] = "<redacted>"
    for cam in data["cameras"].values():
        source = cam["source"]
        cam["source"] = redact_url(source) if "://" in source else "<redacted>"
    return data


def _pick(data: Any, spec: Spec) -> dict[str, Any]:
    """Only the allow-listed fields of ``data`` (a full config as a dict): nothing secret, no paths."""
    out: dict[str, Any] = {}
    for key, sub in spec.items():
        for name in (data if key == "*" else [key] if key in data else []):
            out[name] = data[name] if sub is LEAF else _pick(data[name], sub)
    return out


def _saved(ctx: AppContext) -> dict[str, Any] | None:
    """The changeable fields as the config file holds them now: after a PATCH they differ from the running config
    until the restart, and an editor must start from them, or a second save would undo the first."""
    if ctx.config_path is None:
        return None
    try:
        settings = parse_settings(_read_config(ctx.config_path), str(ctx.config_path))
    except (ConfigError, Refused, OSError):
        return None  # edited by hand into something invalid: the running config is all there is to show
    return _pick(settings.model_dump(mode="json"), ALLOWED)


@router.get("/api/config", summary="The running config, with paths and secrets redacted")
def get_config(ctx: Ctx, _principal: Admin) -> dict[str, Any]:
    """``saved``: the changeable fields as saved in the file (applied at the next restart when they differ)."""
    return {"config": redacted(ctx), "changeable": _allowed_paths(ALLOWED),
            "restart_pending": bool(ctx.extras.get("config_changed")), "saved": _saved(ctx)}


@router.patch("/api/config", summary="Change declared fields (applied at the next restart)")
def patch_config(request: Request, ctx: Ctx, principal: Admin,
                 patch: Annotated[dict[str, Any], Body(description="A partial config, e.g. "
                 '{"cameras": {"front": {"zones": {...}}}, "detector": {"score_threshold": 0.4}}')]) -> dict[str, Any]:
    if ctx.config_path is None:
        raise HTTPException(409, "this server was not started from a config file; edit the config on the server")
    with _lock:
        try:
            _check_tags(patch, "body")
            raw = _read_config(ctx.config_path)
            data = copy.deepcopy(raw)
            changes: list[dict[str, Any]] = []
            _apply(data, patch, ALLOWED, "", changes, set(raw.get("cameras") or {}))
            if not changes:
                raise Refused(422, "nothing to change: give at least one field", "")
            try:
                parse_settings(data, "change")
            except ConfigError as exc:
                raise Refused(422, str(exc).replace("\n  ", "; ").replace("\n", " "), changes[0]["path"]) from None
        except Refused as exc:
            audit(request, principal, "config_change_refused", exc.path or "config", outcome="refused",
                  reason=exc.detail)
            raise HTTPException(exc.status, exc.detail) from None
        backup = _write_atomic(ctx.config_path, yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    ctx.extras["config_changed"] = True
    audit(request, principal, "config_change", "config", changes=changes)
    return {"changed": [c["path"] for c in changes], "restart_required": True,
            "detail": f"saved (previous version kept as {backup.name}); restart trustcam to apply"}
