"""User-facing errors: a config mistake is reported as one line, never a stack trace."""


class ConfigError(ValueError):
    """A bad config value or a missing input the user can fix."""


def choose(kind: str, name: str, choices) -> None:
    """Raise a ConfigError naming the valid choices when `name` is not one of them."""
    choices = sorted(choices)
    if name not in choices:
        raise ConfigError(f"unknown {kind} '{name}'; valid choices: {', '.join(choices)}")
