"""``python -m seg_plugins.model_zoo``: list the configs shipped with seg_plugins."""

from . import configs_dir, list_configs

print(f"# configs in {configs_dir()}")
for name in list_configs():
    print(name)
