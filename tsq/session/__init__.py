"""The TSQ protocol sessions, sans-IO: client and server state, stream framing, the scheduler."""
