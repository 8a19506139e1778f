"""The error a user can cause: bad input data, config or run directory."""

from __future__ import annotations


class InputError(Exception):
    """A problem with the user's input, reported as one line naming what and how to fix it.

    The CLI turns it into ``error: <message>`` on stderr and exit code 2.
    """
