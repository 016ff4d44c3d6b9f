"""Development and lab code: the simulator, the sandbox sound server, the demo, echo labs, doc generators.

Never imported by the daemon (tests/test_layout.py checks it); it may import the daemon.
"""
