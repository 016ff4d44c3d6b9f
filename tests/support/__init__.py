"""Helpers shared by the tests: plain functions and classes, one copy each (fixtures stay in conftest.py).

Material that the demo and the benchmarks share with the tests (lab daemon configs, shipped speech,
steady tones) lives in vatel_edge/devkit/fixtures.py, so that package code never imports tests.
"""
