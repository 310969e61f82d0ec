"""Errors of a deployment: each carries a one-line message meant for the person deploying."""

from __future__ import annotations


class DeployError(Exception):
    """A deployment step failed; the message says what and, where possible, what to do."""


class HostKeyError(DeployError):
    """The host key is unknown (and not to be trusted) or does not match the recorded one."""


class RequirementsNotMet(DeployError):
    """The host lacks something the proxy needs; the report lists it."""
