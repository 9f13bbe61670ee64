"""TSQ: Time Synchronization over QUIC (draft-mccollum-ntp-tsq-01) for field gateways."""

__version__ = "0.1.0"
