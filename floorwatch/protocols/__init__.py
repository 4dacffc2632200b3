"""Pure codecs for the serial protocols of a gaming hall.

Both the sandbox's device simulators and Floorwatch's probes use them, so the simulators speak
the same frames a real device would:

- ``cctalk``  ccTalk frames and bill validator events (bill acceptors);
- ``escpos``  ESC/POS real-time status, ``DLE EOT n`` (receipt printers);
- ``console`` the terminals' line console with NMEA-style checksums.

No I/O here: functions take and return bytes, and raise ``ProtocolError`` on what they
cannot parse.
"""
