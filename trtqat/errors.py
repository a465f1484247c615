"""One error hierarchy for everything a user can cause, converted once at the CLI edge.

Why: users of a deployment tool read the one line the tool prints, not a traceback. Library code raises
these; ``trtqat.cli`` turns them into ``Error: <message> <hint>`` with exit code 2 (usage/input) or 1
(a tool or verification failed). Anything else is a bug in trtqat and is allowed to traceback.
"""
from __future__ import annotations


class TrtqatError(Exception):
    """A problem the user can fix. ``message`` names the problem and the value, ``hint`` the fix."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        text = self.message.rstrip(".")
        if self.hint:
            return f"{text}. {self.hint.rstrip('.')}."
        return f"{text}."


class UsageError(TrtqatError):
    """Bad flags or flag combinations (exit 2)."""

    exit_code = 2


class InputError(TrtqatError):
    """A file or folder given by the user is missing, unreadable or of the wrong kind (exit 2)."""

    exit_code = 2


class BuildError(TrtqatError):
    """An external tool (trtexec) ran and failed (exit 1)."""

    exit_code = 1


class VerificationError(TrtqatError):
    """A numerical check (e.g. ONNX vs PyTorch) failed its tolerance (exit 1)."""

    exit_code = 1


class LintFailure(TrtqatError):
    """A gate such as ``lint --max-reformats`` was exceeded (exit 1)."""

    exit_code = 1
