"""The kernels' launch-setting knobs from the environment (HPT_GDN_CONFIG, HPT_CONV_CONFIG), read at import."""

from __future__ import annotations

import json
import os


class KernelEnvError(ValueError):
    """A kernel environment knob that cannot be used (the CLI prints it as one line, exit status 2)."""


def check_overrides(what: str, over, config: dict) -> dict:
    """`over` if it is a dict whose keys `config` has, each value of its default's type (a launch-setting
    override), else KernelEnvError naming `what`; a wrong type would otherwise fail later inside a kernel
    compile. A whole number where the default is a float (JSON `0` for `0.0`) is taken, as that float.
    Used for the environment knobs and for the benchmarks' override lists."""
    if not isinstance(over, dict) or set(over) - set(config):
        raise KernelEnvError(f"{what}: expected an object with keys among {', '.join(config)}")
    out = {}
    for key, val in over.items():
        if type(config[key]) is float and type(val) is int:
            val = float(val)
        if type(val) is not type(config[key]):  # exact: a bool is not taken for an int, nor an int for a bool
            raise KernelEnvError(f"{what}: {key}={json.dumps(val)}: expected {type(config[key]).__name__} "
                                 f"like the default {json.dumps(config[key])}")
        out[key] = val
    return out


def override_list(what: str, raw: str, config: dict) -> list[dict]:
    """The JSON list of overrides in `raw` (a benchmark's sweep argument), each checked by check_overrides."""
    try:
        overs = json.loads(raw)
    except json.JSONDecodeError:
        overs = None
    if not isinstance(overs, list):
        raise KernelEnvError(f"{what}: expected a JSON list of objects with keys among {', '.join(config)}")
    return [check_overrides(f"{what}: each item", over, config) for over in overs]


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
    config.update(check_overrides(name, over, config))
    return config
