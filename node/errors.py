"""The node's own exception tree.

Errors from libraries (PyYAML, the Kubernetes client, Socket.IO, the file system) are translated
into these at the boundary of the module that calls the library, chained with ``from e``.
"""
from __future__ import annotations


class NodeError(Exception):
    """Base of every error the node raises on purpose."""


class ConfigError(NodeError):
    """The node configuration is unusable.

    Carries every problem found (``problems``: a list of ``(key, problem)``), so a user fixing a
    configuration file sees all of them at once; the message has one line per problem, each
    ``config: <key>: <problem>``. Secrets never appear in a problem text.
    """

    def __init__(self, key: str, problem: str, *more: tuple[str, str]) -> None:
        self.problems: list[tuple[str, str]] = [(key, problem), *more]
        super().__init__("\n".join(f"config: {k}: {p}" for k, p in self.problems))

    @classmethod
    def collect(cls, problems: list[tuple[str, str]]) -> "ConfigError":
        """One error for a non-empty list of ``(key, problem)`` pairs."""
        if not problems:
            raise ValueError("ConfigError.collect needs at least one problem")
        return cls(problems[0][0], problems[0][1], *problems[1:])


class PayloadError(NodeError):
    """A task payload from the server is refused.

    ``run_id`` is the payload's run id when it could be read (so the refusal can be reported as
    that run's result), else None. ``status`` is the vantage6 status to report: ``failed`` for a
    malformed payload, ``not allowed`` for a well-formed one that the node's policy refuses
    (image not on the allow-list, unknown database, resources or deadline above the limits).
    """

    def __init__(self, message: str, run_id: int | None = None, status: str = "failed") -> None:
        super().__init__(message)
        self.message = message
        self.run_id = run_id
        self.status = status


class RecoveryError(NodeError):
    """A Job found in the cluster lacks what the node needs to pick its run up again."""


class ClusterError(NodeError):
    """A Kubernetes API call failed and retrying will not help."""


class TransientClusterError(ClusterError):
    """A Kubernetes API call failed in a way that may pass (5xx, 429, connection problems)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class MissingPermissionsError(ClusterError):
    """The node's Kubernetes identity lacks permissions it needs (``missing``: one text each,
    e.g. ``watch jobs.batch in namespace v6-jobs``); the message names every one."""

    def __init__(self, missing: list[str]) -> None:
        self.missing = list(missing)
        super().__init__(
            "the node's Kubernetes identity lacks permissions it needs (RBAC):\n"
            + "\n".join(f"  - {m}" for m in self.missing)
            + "\ngrant them to the node's ServiceAccount (kubeconfs/base/rbac.yaml) and start "
              "the node again")


class ConflictError(ClusterError):
    """409 from the API: the object exists already or was changed meanwhile."""


class NotFoundError(ClusterError):
    """404 from the API: the object does not exist (any more)."""


class ServerLinkError(NodeError):
    """The connection to the central server failed or an emit was not acknowledged."""


class OutboxError(NodeError):
    """The durable outbox of results cannot be read or written."""
