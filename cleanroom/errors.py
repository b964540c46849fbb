"""One exception hierarchy. Messages name rows and columns, never values."""


class CleanroomError(Exception):
    """Root of every error cleanroom raises on purpose."""


class InputError(CleanroomError):
    """The user's input file or arguments cannot be used."""


class SpecError(CleanroomError):
    """A match spec, mapping or policy is invalid."""


class VerificationError(CleanroomError):
    """A signature, digest, schema or consortium check failed."""


class KeyMaterialError(CleanroomError):
    """A key, identity or passphrase problem."""


class PolicyError(CleanroomError):
    """An operation was refused by privacy policy."""
