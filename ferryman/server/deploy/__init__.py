"""Deploying proxies over SSH: host analysis, offline install, service, upgrade and removal.

The server performs every deployment itself (it owns the wheelhouse and the join
tokens); `steps.Deployment` runs one and reports each step with its timing.
See docs/architecture.md ("Proxy deployment").
"""

from ferryman.server.deploy.errors import DeployError

__all__ = ["DeployError"]
