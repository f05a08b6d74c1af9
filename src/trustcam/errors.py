"""The one base of expected failures: a message that names the problem and the fix, printed as one line.

Every area defines its own subclass (config, sources, models, database, vault, security, ...); the CLI catches
only this base, so it need not import every area to report their errors.
"""

from __future__ import annotations


class UserError(Exception):
    """An expected failure for the user to fix; ``exit_code`` 2 = bad usage/config, 1 = runtime failure."""

    exit_code = 1
