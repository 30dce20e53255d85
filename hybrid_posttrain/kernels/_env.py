"""The kernels' launch-setting knobs from the environment (HPT_GDN_CONFIG, HPT_CONV_CONFIG), read at import."""

from __future__ import annotations

import json
import os


class KernelEnvError(ValueError):
    """A kernel environment knob that cannot be used (the CLI prints it as one line, exit status 2)."""


def env_config(name: str, config: dict) -> dict:
    """`config` updated in place from the JSON object in environment variable `name`, if set. Not JSON, not
    an object, or a key `config` does not have: KernelEnvError naming the variable."""
    raw = os.environ.get(name)
    if not raw:
        return config
    try:
        over = json.loads(raw)
    except json.JSONDecodeError as e:
        raise KernelEnvError(f"{name} is not JSON: {e}") from None
    if not isinstance(over, dict) or set(over) - set(config):
        raise KernelEnvError(f"{name}: expected an object with keys among {', '.join(config)}")
    config.update(over)
    return config
