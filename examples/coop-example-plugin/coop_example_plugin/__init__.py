"""An example third-party coopnets plugin (its own package, found through its `coop` entry point).

The hooks live in `coop_example_plugin.plugin`; see README.md and docs/plugins.md of coopnets.
"""
__version__ = "0.1.0"
