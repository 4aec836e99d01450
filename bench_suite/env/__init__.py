"""What the machine is and how it is doing: every reading of ``/proc``, sysfs and NVML.

``system`` reads the kernel's files, ``nvml`` the GPU driver, ``collect`` assembles a run's
environment record, ``device_state`` the state ``doctor`` judges. Imports only ``core``.
"""
