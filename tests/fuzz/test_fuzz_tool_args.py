"""PLACEHOLDER: property tests of tool-argument validation (vatel_edge/tools/args.py) go here.

Left empty on purpose: args.py is being written by the tools work; its property tests are added with it
(e.g. coerce_argument on arbitrary JSON values raises only ArgumentError/ToolError, and accepted values
satisfy their ArgSpec's type, range, choices, pattern and max_length).
"""
