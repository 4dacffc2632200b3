"""The sandbox: a small digital twin of an online gaming platform and one gaming hall.

Real server software on 127.0.0.1 (uvicorn, OpenSSH sshd, BIND 9 named, pseudo-terminals,
SQLite or PostgreSQL), with fault injection, for the demo, dry-runs and integration tests.
It does not import Prefect or the rest of Floorwatch beyond ``floorwatch.errors``.
"""
