"""The configuration error, apart from `config` so that every layer can raise it.

`config` reads the method registry (`idn_tf.methods`) for the methods' own fields,
and the methods check those fields; both raise `ConfigError` from here, so neither
has to import the other's module to do so.
"""


class ConfigError(ValueError):
    """A bad flag value or combination; the message is one line naming the flag."""


def check(condition, flag, message):
    """ConfigError "--<flag>: <message>" unless `condition`."""
    if not condition:
        raise ConfigError(f"--{flag}: {message}")
