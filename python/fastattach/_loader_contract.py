"""What the attach orchestrator and safe_attach_loader.py agree on, and nothing else.

Standard library only: the loader runs this file before the package is importable, and the
orchestrator runs in another process, often on another Python.
"""

LOADER_NAME = "safe_attach_loader.py"

# The settings the loader reads: each from the environment, overridden by the settings file.
SETTING_NAMES = (
    "PTVS_DEBUG_HOST", "PTVS_DEBUG_PORT", "PTVS_WAIT_FOR_CLIENT", "PTVS_DEBUG_BREAK", "PTVS_DEBUG_PORT_FILE",
    "PTVS_SAFE_ATTACH_LOADER_VERBOSE", "PTVS_DEBUG_LOG_FILE", "FASTATTACH_SECRET", "FASTATTACH_LOG_DIR",
    "FASTATTACH_ACTION", "FASTATTACH_PROBES",
)
# FASTATTACH_ACTION=stop: remove fastattach from the process instead of listening; the loader
# reports what it removed in the port file's STOPPED_SUFFIX file.
STOPPED_SUFFIX = ".stopped"
# FASTATTACH_PROBES=PATH: the process also watches this probe file (fastattach.probes.watch),
# reading it as its own user; the loader reports the first look at it in PROBES_SUFFIX's file.
# FASTATTACH_ACTION=probes: only that, with no listener and no debugpy.
PROBES_SUFFIX = ".probes"

# The names the loader finds in its globals, put there by the bootstrap code that runs it.
SETTINGS_GLOBAL = "_fa_settings"
MAIN_IDENT_GLOBAL = "_fa_main_ident"
SWITCH_INTERVAL_GLOBAL = "_fa_switch_interval"  # the target's own, before the bootstrap shortened it


def encode_fields(fields):
    """The settings and error files: NUL-separated names and values. (Not JSON: importing json
    costs the target about 1.4 MB of RSS, several times what the listener itself costs.)"""
    return "".join(f"{name}\0{value}\0" for name, value in fields.items())


def decode_fields(text):
    parts = text.split("\0")
    return dict(zip(parts[0:-1:2], parts[1:-1:2]))
