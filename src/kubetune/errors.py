"""The exceptions kubetune raises, and what the CLI makes of them: the whole tree, drawn
here once (``tests/test_errors.py`` walks the real subclasses and fails when this drawing
misses one or hangs it under the wrong parent)::

    KubetuneError                   anything kubetune reports to a user
    ├── UserError                   the user can fix it by changing their input     → exit 2
    │   ├── SpecError               a job spec is malformed: issues, each with a path
    │   │   └── InputsError         what the runs read is wrong (preflight)
    │   └── ConfigError             a valid spec that cannot be used for what was asked
    │       └── NamespaceMissingError   the namespace does not exist (kube.errors)
    ├── WorldError                  something outside the input failed              → exit 1
    │   ├── RenderError             the Helm engine refused or failed to render the chart
    │   ├── ClusterError            the Kubernetes API refused or was not there (kube.errors)
    │   │   ├── UnreachableError    no answer from the API server
    │   │   ├── UnauthorizedError   credentials not accepted (401)
    │   │   ├── ForbiddenError      RBAC denied it (403)
    │   │   ├── QuotaExceededError  a ResourceQuota has no room (403)
    │   │   ├── NotFoundError       no such object (404)
    │   │   └── RejectedError       any other refusal
    │   ├── StoreError              the store could not be read or written (store.base)
    │   │   ├── NotFoundError       no such key
    │   │   ├── ForbiddenError      the store refused these credentials (403, EACCES)
    │   │   ├── ConflictError       a conditional write lost
    │   │   └── UnreadableError     a run's record is not what it should be (store.record)
    │   └── CheckpointError         a checkpoint could not be stored (store.checkpoints)
    │       └── WriterConflictError another trainer of the run stored one first
    └── Interrupted                 Ctrl-C stopped a command                        → exit 130

The CLI prints each as one red line per issue, ``Interrupted`` as one yellow line (no
traceback unless ``KUBETUNE_DEBUG=1``).
"""

from __future__ import annotations

from dataclasses import dataclass

#: Set (to anything) to see tracebacks, with their causes, instead of one-line errors.
DEBUG = "KUBETUNE_DEBUG"
#: Exit code for mistakes in the user's input. The chart's podFailurePolicy fails a Job
#: at once on this code, so a bad spec never burns retries.
EXIT_USER = 2
#: Exit code for failures of the world (network, cluster, engine).
EXIT_WORLD = 1
#: Exit code of a run stopped by SIGINT/SIGTERM after saving a checkpoint (128 + SIGINT).
EXIT_INTERRUPTED = 130


class KubetuneError(Exception):
    """Base of every error kubetune reports to a user."""

    exit_code = EXIT_WORLD

    def lines(self) -> list[str]:
        """The error as one or more one-line messages."""
        return [str(self)]


class UserError(KubetuneError):
    """The input is wrong; changing it fixes the problem."""

    exit_code = EXIT_USER


@dataclass(frozen=True)
class Issue:
    """One problem in a spec: where it is and what to change."""

    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class SpecError(UserError):
    """A job spec has one or more problems; all of them are reported at once."""

    def __init__(self, issues: list[Issue], source: str | None = None) -> None:
        self.issues = issues
        self.source = source
        super().__init__("; ".join(str(i) for i in issues))

    def lines(self) -> list[str]:
        out = []
        for issue in self.issues:
            prefix = self.source or ""
            if prefix and issue.line is not None:
                prefix = f"{prefix}:{issue.line}"
            line = f"{prefix}: {issue}" if prefix else str(issue)
            # One issue, one line, whatever a key or value held.
            out.append(line.replace("\r", "\\r").replace("\n", "\\n"))
        return out


class ConfigError(UserError):
    """A valid spec that cannot be used for the requested action."""


class WorldError(KubetuneError):
    """Something outside the user's input failed."""


class RenderError(WorldError):
    """The Helm engine failed to render the chart."""


class Interrupted(KubetuneError):  # noqa: N818 (a stop the user asked for, not an error)
    """Ctrl-C (SIGINT) stopped a command. ``state`` says what it left behind, where that
    matters ("3 of 8 runs created; submitting again creates the rest"); it may be empty."""

    exit_code = EXIT_INTERRUPTED

    def __init__(self, state: str = "") -> None:
        self.state = state
        super().__init__(f"interrupted: {state}" if state else "interrupted")
