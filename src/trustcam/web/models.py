"""The one base of every API request and response body: unknown fields are refused, never silently ignored."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ApiModel(BaseModel):
    """A request with a misspelt field answers 422 naming it, instead of quietly doing something else."""

    model_config = ConfigDict(extra="forbid")
