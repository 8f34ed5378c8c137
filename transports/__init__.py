"""How the device is reached: CTAPHID framing, UHID, UDP, in-process."""
