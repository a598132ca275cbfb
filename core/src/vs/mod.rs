//! Datagram virtual-synchrony transport (in progress).
