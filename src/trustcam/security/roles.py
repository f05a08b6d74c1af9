"""The four roles. One enum, used by the config schema, the user store and the web dependency that enforces them."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    viewer = "viewer"  # live video and events of the cameras granted
    operator = "operator"  # + acknowledge, mark true/false positive, export clips
    admin = "admin"  # + config, users, keys
    auditor = "auditor"  # the audit log only (separation of duties: sees no video)


# Roles whose holders must use TOTP, whatever the policy says.
ALWAYS_MFA: frozenset[Role] = frozenset({Role.admin, Role.auditor})
