"""The one error type of the access-control core; the web layer maps ``status`` to the HTTP answer."""

from __future__ import annotations

from trustcam.errors import UserError


class SecurityError(UserError):
    """A refused or invalid request; ``str(exc)`` says what went wrong and what to do, never a secret."""

    def __init__(self, status: int, detail: str, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.retry_after = retry_after
