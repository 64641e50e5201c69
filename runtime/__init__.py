"""Sleipnir's runtime: executes a compiled plan. It takes the IR and never reads YAML.

Empty until the runtime lands; the package exists so that the layout and the wheel are final.
"""
