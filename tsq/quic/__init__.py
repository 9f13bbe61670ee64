"""TSQ over QUIC: client, server, trust and aioquic compatibility (docs/quic.md)."""

from tsq.quic._deferred_tls import import_aioquic_tls

import_aioquic_tls()   # before any other aioquic import: see tsq/quic/_deferred_tls.py
