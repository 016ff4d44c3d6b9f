"""`vatel-edge doctor`: the self-test a newcomer runs after install (devices, microphones, echo, key and API,
config, service), one line per check; see command.py."""

from vatel_edge.doctor.command import DoctorOptions, run_doctor

__all__ = ["DoctorOptions", "run_doctor"]
